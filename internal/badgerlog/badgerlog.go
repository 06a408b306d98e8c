// Package badgerlog routes Badger's log lines to log/slog. Badger's info
// chatter goes to Debug; its warnings and errors keep their level.
package badgerlog

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// Logger adapts a *slog.Logger to badger.Logger.
type Logger struct{ L *slog.Logger }

func (l Logger) log(level slog.Level, format string, args ...any) {
	if !l.L.Enabled(context.Background(), level) {
		return
	}
	l.L.Log(context.Background(), level, strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
}

// Errorf logs at Error.
func (l Logger) Errorf(format string, args ...any) { l.log(slog.LevelError, format, args...) }

// Warningf logs at Warn.
func (l Logger) Warningf(format string, args ...any) { l.log(slog.LevelWarn, format, args...) }

// Infof logs at Debug: Badger's info lines are routine.
func (l Logger) Infof(format string, args ...any) { l.log(slog.LevelDebug, format, args...) }

// Debugf logs at Debug.
func (l Logger) Debugf(format string, args ...any) { l.log(slog.LevelDebug-4, format, args...) }

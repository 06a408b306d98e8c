package testwait

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	var calls atomic.Int32
	if !Until(time.Minute, func() bool { return calls.Add(1) == 3 }) {
		t.Fatal("Until gave up on a condition that holds at the third call")
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("cond called %d times, want 3", n)
	}
	start := time.Now()
	if Until(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("Until reported a condition that never holds as met")
	}
	if waited := time.Since(start); waited < 20*time.Millisecond {
		t.Fatalf("Until gave up after %v, before its timeout", waited)
	}
}

// fatalTB records Fatalf instead of ending the goroutine.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper()                           {}
func (f *fatalTB) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }

func TestForNamesWhatItWaitedFor(t *testing.T) {
	f := &fatalTB{TB: t}
	For(f, 10*time.Millisecond, "the kettle to boil", func() bool { return false })
	if !strings.Contains(f.msg, "the kettle to boil") || !strings.Contains(f.msg, "10ms") {
		t.Fatalf("failure message %q does not say what was waited for and how long", f.msg)
	}
	f = &fatalTB{TB: t}
	For(f, time.Minute, "a condition that holds", func() bool { return true })
	if f.msg != "" {
		t.Fatalf("For failed on a condition that holds: %s", f.msg)
	}
}

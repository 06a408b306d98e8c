// Command streamd runs a streamd journal as a daemon.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/streamd/streamd/journal"
)

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "streamd:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:  "streamd",
		Usage: "a brokerless event streaming daemon: a durable local journal served over gRPC",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Value: "./data", EnvVars: []string{"STREAMD_DATA_DIR"}, Usage: "journal directory"},
			&cli.StringFlag{Name: "durability", Value: "sync", EnvVars: []string{"STREAMD_DURABILITY"}, Usage: "sync: fsync before ack; async: ack before fsync"},
			&cli.DurationFlag{Name: "retention-max-age", EnvVars: []string{"STREAMD_RETENTION_MAX_AGE"}, Usage: "delete events older than this (0 = keep)"},
			&cli.Int64Flag{Name: "retention-max-bytes", EnvVars: []string{"STREAMD_RETENTION_MAX_BYTES"}, Usage: "delete the oldest events beyond this size (0 = no limit)"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"STREAMD_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		},
		Action: func(c *cli.Context) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			durability, err := journal.ParseDurability(c.String("durability"))
			if err != nil {
				return fmt.Errorf("--durability: %w", err)
			}
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return run(ctx, log, c.String("data-dir"), journal.Options{
				Durability:        durability,
				RetentionMaxAge:   c.Duration("retention-max-age"),
				RetentionMaxBytes: c.Int64("retention-max-bytes"),
				Logger:            log,
			})
		},
	}
}

func run(ctx context.Context, log *slog.Logger, dir string, opts journal.Options) error {
	j, err := journal.Open(dir, opts)
	if err != nil {
		return err
	}
	info := j.Info()
	log.Info("journal open", "dir", dir, "journal_id", fmt.Sprintf("%x", info.JournalID),
		"first_offset", info.FirstOffset, "last_offset", info.LastOffset, "durability", j.Durability())
	<-ctx.Done()
	log.Info("shutting down")
	return j.Close()
}

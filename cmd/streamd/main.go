// Command streamd runs a streamd journal as a daemon.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
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
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7070", EnvVars: []string{"STREAMD_LISTEN"}, Usage: "gRPC address (stream, publish, health, reflection)"},
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
			return run(ctx, log, config{
				dataDir: c.String("data-dir"),
				listen:  c.String("listen"),
				producer: producer.Options{
					Journal: journal.Options{
						Durability:        durability,
						RetentionMaxAge:   c.Duration("retention-max-age"),
						RetentionMaxBytes: c.Int64("retention-max-bytes"),
						Logger:            log,
					},
					Server: producer.ServerOptions{Logger: log},
				},
			})
		},
	}
}

type config struct {
	dataDir  string
	listen   string
	producer producer.Options
}

// run serves until ctx is done, then shuts down in order: stop accepting,
// end streams with Unavailable (consumers resume from their positions),
// finish in-flight calls, close the journal after its in-flight commits.
func run(ctx context.Context, log *slog.Logger, cfg config) error {
	p, err := producer.Open(cfg.dataDir, cfg.producer)
	if err != nil {
		return err
	}
	defer p.Close()
	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", cfg.listen, err)
	}
	g := grpc.NewServer(producer.Interceptors(log)...)
	streamdv1.RegisterEventStreamServiceServer(g, p.Server())
	health := health.NewServer()
	healthpb.RegisterHealthServer(g, health)
	reflection.Register(g)
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()

	info := p.Journal().Info()
	log.Info("streamd serving", "grpc", lis.Addr().String(), "data_dir", cfg.dataDir,
		"journal_id", fmt.Sprintf("%x", info.JournalID), "first_offset", info.FirstOffset,
		"last_offset", info.LastOffset, "durability", p.Journal().Durability())
	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("grpc server: %w", err)
	}
	log.Info("shutting down")
	health.Shutdown()
	p.Server().Shutdown()
	g.GracefulStop()
	return p.Close()
}

// Command service is a Go service that consumes a streamd stream and can be
// steered like streamd itself: it mounts the admin API on its own gRPC
// server with one call (admin.Mount), so that
//
//	streamctl --addr <service> consumers list
//	streamctl --addr <service> offsets list|set|reset --consumer <name>
//	streamctl --addr <service> filters list|add|remove --consumer <name>
//
// work against it while it runs, and the producer it reads from shows it in
// its own `streamctl consumers list`, with its lag. It uses public packages
// only. The handler counts the events of each entity type and logs every
// 1,000th; a real service would do its work there.
//
//	go run ./examples/service --producer 127.0.0.1:7070 --listen 127.0.0.1:7080 --store /tmp/service-offsets
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"google.golang.org/grpc"

	"github.com/streamd/streamd/admin"
	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "service:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run serves until ctx is done.
func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("service", flag.ContinueOnError)
	fs.SetOutput(stderr)
	producerAddr := fs.String("producer", "127.0.0.1:7070", "the streamd (or producing service) to consume from")
	listen := fs.String("listen", "127.0.0.1:7080", "gRPC address of this service (its admin API)")
	storeDir := fs.String("store", "./service-offsets", "offsets store directory")
	name := fs.String("name", "billing", "consumer name")
	readyFile := fs.String("ready-file", "", "once listening, write the gRPC address to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: service takes only flags", fs.Arg(0))
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))

	store, err := offsets.Open(*storeDir, offsets.Options{Logger: log})
	if err != nil {
		return err
	}
	defer store.Close()
	var (
		mu     sync.Mutex
		counts = map[string]int{}
	)
	c, err := consumer.New(consumer.Options{
		Producers: []string{*producerAddr},
		Name:      *name,
		Store:     store,
		Logger:    log,
		Handler: func(_ context.Context, e *streamdv1.Event) error {
			mu.Lock()
			defer mu.Unlock()
			counts[e.GetEntityType()]++
			if n := counts[e.GetEntityType()]; n%1000 == 0 {
				log.Info("handled", "entity_type", e.GetEntityType(), "events", n)
			}
			return nil
		},
	})
	if err != nil {
		return err
	}

	srv := grpc.NewServer()
	reg, err := admin.Mount(srv, admin.Options{Consumers: []*consumer.Consumer{c}, Logger: log})
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	log.Info("service serving", "grpc", lis.Addr().String(), "producer", *producerAddr, "consumer", *name)
	if *readyFile != "" {
		if err := os.WriteFile(*readyFile, []byte(lis.Addr().String()), 0o644); err != nil {
			srv.Stop()
			return err
		}
	}

	ranErr := reg.Run(ctx) // the consumer, until SIGTERM; it saves its offset
	srv.GracefulStop()
	if err := <-served; err != nil {
		return err
	}
	return ranErr
}

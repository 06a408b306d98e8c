package main

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"google.golang.org/grpc"

	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// region is one region's journal and producer, served over gRPC on an
// ephemeral 127.0.0.1 port, and the offsets store of the consumers the
// region runs.
type region struct {
	name   string
	prod   *producer.Producer
	store  *offsets.Store
	grpc   *grpc.Server
	addr   string
	served chan error
}

// openRegion opens (or reopens) the region's journal and store under o.dir
// and makes its gRPC server. Register more services on r.grpc, then serve.
func openRegion(name string, o options, server producer.ServerOptions) (*region, error) {
	jopts, sopts := journal.Options{Logger: o.log}, offsets.Options{Logger: o.log}
	if o.async {
		jopts.Durability, sopts.Durability = journal.DurabilityAsync, offsets.DurabilityAsync
	}
	p, err := producer.Open(filepath.Join(o.dir, name, "journal"), producer.Options{Journal: jopts, Server: server})
	if err != nil {
		return nil, fmt.Errorf("telemetry: region %s: %w", name, err)
	}
	store, err := offsets.Open(filepath.Join(o.dir, name, "offsets"), sopts)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("telemetry: region %s: %w", name, err)
	}
	g := grpc.NewServer(producer.Interceptors(o.log)...)
	streamdv1.RegisterEventStreamServiceServer(g, p.Server())
	return &region{name: name, prod: p, store: store, grpc: g, served: make(chan error, 1)}, nil
}

// serve starts the gRPC server on 127.0.0.1:0.
func (r *region) serve() error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("telemetry: region %s: %w", r.name, err)
	}
	r.addr = lis.Addr().String()
	go func() { r.served <- r.grpc.Serve(lis) }()
	return nil
}

// close ends the region's streams, stops its server and closes its store
// and journal. Stop the region's consumers first.
func (r *region) close() error {
	r.prod.Server().Shutdown()
	r.grpc.Stop()
	if r.addr != "" {
		if err := <-r.served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("telemetry: region %s: grpc server: %w", r.name, err)
		}
	}
	return errors.Join(r.store.Close(), r.prod.Close())
}

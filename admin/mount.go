package admin

import (
	"log/slog"

	"google.golang.org/grpc"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/producer"
)

// Options says what Mount serves.
type Options struct {
	// Consumers are the consumers of the service, run by the Registry.
	Consumers []*consumer.Consumer
	// Producer, if the service serves its own journal, is its stream
	// server: ListConsumers then also shows the consumers reading from it.
	Producer *producer.Server
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Mount serves the AdminService over opts on s, the service's own gRPC
// server, and returns the Registry, to Run until the service stops:
//
//	reg, err := admin.Mount(srv, admin.Options{Consumers: []*consumer.Consumer{c}})
//	go reg.Run(ctx)
func Mount(s *grpc.Server, opts Options) (*Registry, error) {
	r := NewRegistry(opts.Logger)
	for _, c := range opts.Consumers {
		if err := r.Add(c); err != nil {
			return nil, err
		}
	}
	if opts.Producer != nil {
		r.ServeReaders(opts.Producer)
	}
	r.Register(s)
	return r, nil
}

// Readers is where ListConsumers finds the consumers reading from the
// process: a *producer.Server.
type Readers interface {
	Readers() []producer.Reader
}

// ServeReaders makes ListConsumers show the consumers reading from src.
// Call it before Register.
func (r *Registry) ServeReaders(src Readers) {
	r.mu.Lock()
	r.readers = src
	r.mu.Unlock()
}

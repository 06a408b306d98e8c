package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Options configure a producer. Zero values are sensible defaults.
type Options struct {
	Journal journal.Options
	Server  ServerOptions
}

// ServerOptions configure the EventStreamService.
type ServerOptions struct {
	// Streams are the named streams offered; none means one stream, "all",
	// offering the whole journal.
	Streams []StreamDef
	// BatchEvents and BatchBytes bound one EventBatch; defaults 1000 events
	// and 1 MiB.
	BatchEvents int
	BatchBytes  int
	// ProgressInterval is how often an idle or filtered stream reports its
	// watermark at most; default 200ms.
	ProgressInterval time.Duration
	// MaxReplays is how many entity replays one stream runs at once; more
	// wait their turn. Default 4.
	MaxReplays int
	// PublishInFlight bounds concurrent appends of one PublishStream; default 256.
	PublishInFlight int
	FilterLimits    filters.Limits
	Logger          *slog.Logger
	// Observer receives per-stream activity, for metrics; may be nil.
	Observer StreamObserver
	// Now is the clock used for filter expiry; default time.Now.
	Now func() time.Time
	// Reserved are entity types that Publish and PublishStream refuse
	// (FailedPrecondition), each with what writes it instead: the
	// single-writer types of a primary.Primary (topology/primary), whose
	// events need a version and the entity's ownership.
	Reserved map[string]string
	// The consumers reading from the producer (Server.Readers) are kept
	// per consumer name and slice range, saved in the journal at most every
	// ReaderSaveInterval (default 30s) and at Shutdown, so that the view
	// survives restarts (a crash loses at most the last interval's changes).
	// At most MaxReaders (default 1000) are kept, each last seen within
	// ReaderMaxAge (default 7 days); beyond, those seen longest ago are
	// dropped first.
	MaxReaders         int
	ReaderMaxAge       time.Duration
	ReaderSaveInterval time.Duration
	// Router writes the events it routes (Router.Routes) instead of an
	// append to this journal: in a multi-region project the events of
	// pinned, request-region and replicated entity types (a
	// primary.Primary); in a group of pods sharing the entities, those of
	// slices another pod writes (cmd/streamd). Nil: every event is appended here, and events that
	// carry crdt_ops are refused.
	Router Router
}

// Router writes published events that are not plain appends to the local
// journal. Its errors are gRPC statuses.
type Router interface {
	// Routes reports whether Publish writes e; an error refuses e.
	Routes(e *streamdv1.Event) (bool, error)
	// Publish writes the events of one entity and says where each landed.
	Publish(ctx context.Context, events []*streamdv1.Event) ([]*streamdv1.Appended, error)
}

// StreamObserver receives stream activity. Methods must not block.
type StreamObserver interface {
	StreamOpened(stream, consumer string)
	StreamClosed(stream, consumer string)
	// Sent reports a batch sent: events, their encoded bytes, and events
	// read but filtered away.
	Sent(stream, consumer string, events, bytes, filtered int)
	// Progressed reports the highest offset sent to a stream's consumer or
	// covered by a Progress message (its lag is the journal's last offset
	// minus this).
	Progressed(stream, consumer string, offset uint64)
}

// ErrInvalidOptions is wrapped by every error of ServerOptions.Validate.
var ErrInvalidOptions = errors.New("producer: invalid options")

// Validate reports every nonsensical field, the errors joined; each wraps
// ErrInvalidOptions.
func (o ServerOptions) Validate() error {
	var errs []error
	if o.BatchEvents < 0 {
		errs = append(errs, fmt.Errorf("%w: ServerOptions.BatchEvents %d is negative", ErrInvalidOptions, o.BatchEvents))
	}
	if o.BatchBytes < 0 {
		errs = append(errs, fmt.Errorf("%w: ServerOptions.BatchBytes %d is negative", ErrInvalidOptions, o.BatchBytes))
	}
	if o.ProgressInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: ServerOptions.ProgressInterval %v is negative", ErrInvalidOptions, o.ProgressInterval))
	}
	if o.MaxReplays < 0 {
		errs = append(errs, fmt.Errorf("%w: ServerOptions.MaxReplays %d is negative", ErrInvalidOptions, o.MaxReplays))
	}
	if o.PublishInFlight < 0 {
		errs = append(errs, fmt.Errorf("%w: ServerOptions.PublishInFlight %d is negative", ErrInvalidOptions, o.PublishInFlight))
	}
	if o.MaxReaders < 0 {
		errs = append(errs, fmt.Errorf("%w: ServerOptions.MaxReaders %d is negative", ErrInvalidOptions, o.MaxReaders))
	}
	if o.ReaderMaxAge < 0 {
		errs = append(errs, fmt.Errorf("%w: ServerOptions.ReaderMaxAge %v is negative", ErrInvalidOptions, o.ReaderMaxAge))
	}
	if o.ReaderSaveInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: ServerOptions.ReaderSaveInterval %v is negative", ErrInvalidOptions, o.ReaderSaveInterval))
	}
	return errors.Join(errs...)
}

func (o ServerOptions) withDefaults() ServerOptions {
	if o.BatchEvents == 0 {
		o.BatchEvents = 1000
	}
	if o.BatchBytes == 0 {
		o.BatchBytes = 1 << 20
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = 200 * time.Millisecond
	}
	if o.MaxReplays == 0 {
		o.MaxReplays = 4
	}
	if o.PublishInFlight == 0 {
		o.PublishInFlight = 256
	}
	if o.MaxReaders == 0 {
		o.MaxReaders = 1000
	}
	if o.ReaderMaxAge == 0 {
		o.ReaderMaxAge = 7 * 24 * time.Hour
	}
	if o.ReaderSaveInterval == 0 {
		o.ReaderSaveInterval = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Producer is a journal with its stream server: what a Go service embeds.
type Producer struct {
	j   *journal.Journal
	srv *Server
}

// Open opens (or creates) the journal in dir and its server.
func Open(dir string, opts Options) (*Producer, error) {
	if err := opts.Server.Validate(); err != nil {
		return nil, err
	}
	j, err := journal.Open(dir, opts.Journal)
	if err != nil {
		return nil, err
	}
	srv, err := NewServer(j, opts.Server)
	if err != nil {
		j.Close()
		return nil, err
	}
	return &Producer{j: j, srv: srv}, nil
}

// Publish durably appends events and returns where they landed. See
// journal.Journal.Append for ownership and expected seqNrs.
func (p *Producer) Publish(ctx context.Context, events ...*streamdv1.Event) ([]journal.Appended, error) {
	return p.j.Append(ctx, events...)
}

// Journal is the producer's journal.
func (p *Producer) Journal() *journal.Journal { return p.j }

// Server is the gRPC EventStreamService over the journal; register it with
// streamdv1.RegisterEventStreamServiceServer.
func (p *Producer) Server() *Server { return p.srv }

// Close ends the open streams (with Unavailable, so consumers resume
// elsewhere or later), then closes the journal after in-flight appends.
func (p *Producer) Close() error {
	p.srv.Shutdown()
	return p.j.Close()
}

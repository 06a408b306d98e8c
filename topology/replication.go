package topology

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Region is a region by name and the addresses of its streamd (or
// producer) endpoints.
type Region struct {
	Name  string
	Addrs []string
}

// ReplicationOptions configure NewReplication.
type ReplicationOptions struct {
	// From is the region whose stream is copied. Required.
	From Region
	// Stream is the source's stream ("" = its default stream).
	Stream string
	// Filter narrows what is copied (for example includes of the entities
	// this region has interest in). The replication adds an exclude of the
	// local region's own events, unless Member is set.
	Filter []*streamdv1.FilterCriterion
	// Name of the consumer in Store and to the source; default
	// "replicate-<from>-<stream>".
	Name string
	// Streams copies the source over this many parallel streams (default
	// 1, at most journal.Slices), each over a contiguous part of the
	// source's 1,024 slices (consumer.Options.Streams) with its own offset,
	// committed with the events it covers. Events of one entity keep their
	// order; those of different parts are appended in no set order. A
	// changed number is a re-split: each new part resumes from the offsets
	// of the parts it overlaps, and what one of them copied already is
	// dropped, so nothing is skipped and nothing applied twice.
	Streams int
	// Slices is the part of the source's 1,024 slices copied (zero: all
	// of them); Streams splits it further. The pods of a StatefulSet
	// share the copying of one source this way, each over the range it
	// owns in a consumer/group whose Runner runs the replication
	// (group.Options.Runner): each pod copies into its own journal, so
	// a pod that gains slices starts them from its own offset for them,
	// stored when it last copied them, or from the source's earliest
	// event, and its journal holds the whole history of each entity of
	// its slices.
	Slices offsets.SliceRange
	// Journal is the local journal; its Region must be set and differ from
	// From.Name, unless Member is set. Required.
	Journal *journal.Journal
	// Member: From is another pod of this region (a member of the same
	// consumer/group), whose journal has the same Region; From.Name must
	// be that region. The events of this region are copied too, keeping
	// their origin and origin seqNr, so the local journal continues each
	// entity's sequence where the other pod left it. Without Member, the
	// events of this region are never copied (they were written here).
	Member bool
	// Store keeps the offset in the source journal, in the local
	// journal's Badger DB so that each batch of copied events commits in
	// one transaction with the offset after it (journal.AppendWith).
	// Default: offsets.Wrap(Journal); a Store given must be over that
	// DB.
	Store *offsets.Store
	// DialOptions reach the source (TLS, tokens).
	DialOptions []grpc.DialOption
	// MinBackoff and MaxBackoff bound reconnect delays (consumer defaults).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
}

// Validate reports every nonsensical field, joined; each error wraps
// ErrInvalidOptions.
func (o ReplicationOptions) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...))
	}
	if o.From.Name == "" {
		bad("ReplicationOptions.From.Name is empty")
	}
	if len(o.From.Addrs) == 0 {
		bad("ReplicationOptions.From.Addrs: region %q has no addresses", o.From.Name)
	}
	part := offsets.AllSlices
	if o.Slices != (offsets.SliceRange{}) {
		part = o.Slices
		if err := o.Slices.Validate(); err != nil {
			bad("ReplicationOptions.Slices: %v", err)
		}
	}
	if o.Streams < 0 || o.Streams > part.Len() {
		bad("ReplicationOptions.Streams %d is not in 1-%d (0 means 1; at most one stream per slice of %s)", o.Streams, part.Len(), part)
	}
	switch {
	case o.Journal == nil:
		bad("ReplicationOptions.Journal is nil")
	case o.Journal.Region() == "":
		bad("ReplicationOptions.Journal has no region (journal.Options.Region): replicated events could not be told from local ones")
	case o.Journal.Region() == o.From.Name && !o.Member:
		bad("ReplicationOptions.From.Name: replication from region %q into itself (set ReplicationOptions.Member to copy from another pod of this region)", o.From.Name)
	case o.Member && o.Journal.Region() != o.From.Name:
		bad("ReplicationOptions.Member: From.Name %q is not this journal's region %q (a member is a pod of the same region)", o.From.Name, o.Journal.Region())
	case o.Store != nil && o.Store.DB() != o.Journal.DB():
		bad("ReplicationOptions.Store is not over the local journal's DB: copied events and the offset could not commit together (leave Store nil)")
	}
	return errors.Join(errs...)
}

// maxAppendEvents and maxAppendBytes bound one Append of copied events,
// inside the journal's default limits.
const (
	maxAppendEvents = 1000
	maxAppendBytes  = 2 << 20
)

// NewReplication returns the consumer that copies opts.From's stream into
// opts.Journal; run it with Run (or through an admin.Registry).
func NewReplication(opts ReplicationOptions) (*consumer.Consumer, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	c, _, err := newReplication(opts)
	return c, err
}

// newReplication is NewReplication over valid opts, with the handler, for
// CopyHistory to watch its commits.
func newReplication(opts ReplicationOptions) (*consumer.Consumer, *replication, error) {
	if opts.Store == nil {
		var err error
		if opts.Store, err = offsets.Wrap(opts.Journal, offsets.Options{Logger: opts.Logger}); err != nil {
			return nil, nil, fmt.Errorf("topology: offsets in the local journal: %w", err)
		}
	}
	local := opts.Journal.Region()
	if opts.Name == "" {
		stream := opts.Stream
		if stream == "" {
			stream = "all"
		}
		opts.Name = "replicate-" + opts.From.Name + "-" + stream
	}
	var filter []*streamdv1.FilterCriterion
	if !opts.Member { // a member copies this region's events too
		filter = append(filter, &streamdv1.FilterCriterion{
			Action: streamdv1.FilterAction_FILTER_ACTION_EXCLUDE,
			Field:  streamdv1.FilterField_FILTER_FIELD_ORIGIN,
			Value:  local,
		})
	}
	filter = append(filter, opts.Filter...)
	r := &replication{from: opts.From.Name, local: local, member: opts.Member, j: opts.Journal, log: opts.Logger, replays: map[gapKey]time.Time{}}
	if r.log == nil {
		r.log = slog.Default()
	}
	c, err := consumer.New(consumer.Options{
		Producers:     opts.From.Addrs,
		DialOptions:   opts.DialOptions,
		Stream:        opts.Stream,
		Name:          opts.Name,
		Streams:       opts.Streams,
		Slices:        opts.Slices,
		Store:         opts.Store,
		Filter:        filter,
		CommitHandler: r.apply,
		NoDedupe:      true, // the journal applies each origin seqNr once
		MinBackoff:    opts.MinBackoff,
		MaxBackoff:    opts.MaxBackoff,
		Logger:        opts.Logger,
	})
	r.c = c
	return c, r, err
}

// gapKey is an entity of an origin whose events arrived with a gap.
type gapKey struct{ origin, entityType, entityID string }

// replayAgainAfter is how long a requested replay may take before a gap in
// the same entity asks for it again (the request may have been lost with
// its stream).
const replayAgainAfter = 10 * time.Second

type replication struct {
	from, local string
	member      bool // copies the events of local too (ReplicationOptions.Member)
	j           *journal.Journal
	c           *consumer.Consumer
	log         *slog.Logger
	// Set by CopyHistory before Run: committed runs after each commit
	// of offset records, and gap, if set, answers an origin gap instead
	// of a replay.
	committed func()
	gap       func(*journal.OriginGapError) error

	mu      sync.Mutex
	replays map[gapKey]time.Time // replays requested, when
}

// apply appends a batch of the source's events to the local journal, in
// chunks within the journal's limits; the last chunk carries the offset
// after the batch. (Should a batch need more than one chunk and the process
// stop between them, the batch comes again and the journal drops the
// events it holds by their origin seqNr.)
func (r *replication) apply(ctx context.Context, events []*streamdv1.Event, offsetWrites []offsets.Write) error {
	writes := make([]journal.Write, len(offsetWrites))
	for i, w := range offsetWrites {
		writes[i] = journal.Write(w)
	}
	chunk := make([]*streamdv1.Event, 0, min(len(events), maxAppendEvents))
	size := 0
	for _, e := range events {
		if e.GetOrigin() == r.local && !r.member {
			continue // already here: it was written here
		}
		n := proto.Size(e)
		if len(chunk) == maxAppendEvents || (len(chunk) > 0 && size+n > maxAppendBytes) {
			if err := r.append(ctx, chunk, nil); err != nil {
				return err
			}
			chunk, size = nil, 0 // the journal owns the events it took
		}
		size += n
		chunk = append(chunk, r.copyOf(e))
	}
	if err := r.append(ctx, chunk, writes); err != nil {
		return err
	}
	if r.committed != nil && len(writes) > 0 {
		r.committed()
	}
	return nil
}

// copyOf is e as the local journal takes it: the origin kept (or set to the
// source), the source's offset, seqNr, slice and timestamp cleared.
func (r *replication) copyOf(e *streamdv1.Event) *streamdv1.Event {
	if e.GetOrigin() == "" {
		e.Origin, e.OriginSeqNr, e.OriginTimestampUnixNano = r.from, e.GetSeqNr(), e.GetTimestampUnixNano()
	}
	e.Offset, e.SeqNr, e.Slice, e.TimestampUnixNano = 0, 0, 0, 0
	return e
}

// append appends events with writes in one transaction; events of an
// entity whose origin sequence has a gap are held back and the entity's
// history is asked again from the source (the journal drops what it holds
// already), so that its events are applied in order once they arrive.
func (r *replication) append(ctx context.Context, events []*streamdv1.Event, writes []journal.Write) error {
	for len(events) > 0 || len(writes) > 0 {
		_, err := r.j.AppendWith(ctx, writes, events...)
		var gap *journal.OriginGapError
		if !errors.As(err, &gap) {
			if err != nil {
				return fmt.Errorf("topology: replication from %s: %w", r.from, err)
			}
			return nil
		}
		if r.gap != nil {
			return r.gap(gap)
		}
		k := gapKey{gap.Origin, gap.EntityType, gap.EntityID}
		events = slices.DeleteFunc(events, func(e *streamdv1.Event) bool {
			return e.GetOrigin() == k.origin && e.GetEntityType() == k.entityType && e.GetEntityId() == k.entityID
		})
		r.replay(ctx, k, gap)
	}
	return nil
}

// replay asks the source for the entity's whole history, unless it was
// asked recently. Which source seqNr holds the missing origin seqNrs is
// unknown (other origins' events interleave), so the replay starts at 1.
func (r *replication) replay(ctx context.Context, k gapKey, gap *journal.OriginGapError) {
	r.mu.Lock()
	now := time.Now()
	if at, ok := r.replays[k]; ok && now.Sub(at) < replayAgainAfter {
		r.mu.Unlock()
		return
	}
	if len(r.replays) > 1024 {
		for old, at := range r.replays {
			if now.Sub(at) >= replayAgainAfter {
				delete(r.replays, old)
			}
		}
	}
	r.replays[k] = now
	r.mu.Unlock()
	r.log.Warn("replication: gap in an origin's events; asking the source for the entity's history",
		"from", r.from, "err", gap)
	if err := r.c.Replay(ctx, k.entityType, k.entityID, 1); err != nil {
		r.log.Warn("replication: replay request not sent; the next event of the entity asks again", "from", r.from, "err", err)
	}
}

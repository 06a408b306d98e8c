package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/grpc"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Mode is the delivery guarantee of a Consumer, chosen by the handler set
// in its Options (see Options.Mode).
type Mode uint8

const (
	// AtLeastOnce, with Options.Handler or BatchHandler: the handler runs
	// first, then the offset and applied seqNrs are saved, in batches:
	// after a crash the events handled since the last save are delivered
	// again.
	AtLeastOnce Mode = iota
	// ExactlyOnce, with Options.TxHandler or CommitHandler: the handler's
	// writes, the applied seqNrs and the offset commit in one durable
	// transaction.
	ExactlyOnce
)

func (m Mode) String() string {
	switch m {
	case AtLeastOnce:
		return "AtLeastOnce"
	case ExactlyOnce:
		return "ExactlyOnce"
	}
	return fmt.Sprintf("Mode(%d)", uint8(m))
}

// JournalChangePolicy says what a Consumer does when a producer it has an
// offset for now serves another journal (the journal was replaced).
type JournalChangePolicy uint8

const (
	// FailOnJournalChange, the default: Run returns a *JournalChangedError
	// (matching ErrJournalChanged). Offsets are never silently dropped.
	FailOnJournalChange JournalChangePolicy = iota
	// RestartFromEarliest starts that producer's new journal from its
	// earliest offset; the offsets of the old journal stay in the store.
	RestartFromEarliest
)

func (p JournalChangePolicy) String() string {
	switch p {
	case FailOnJournalChange:
		return "FailOnJournalChange"
	case RestartFromEarliest:
		return "RestartFromEarliest"
	}
	return fmt.Sprintf("JournalChangePolicy(%d)", uint8(p))
}

// Handler handles one event, delivered at least once. An error stops Run (the
// event is not recorded as applied, so it is delivered again after a
// restart). ctx is cancelled when the stream ends.
type Handler func(ctx context.Context, e *streamdv1.Event) error

// BatchHandler handles the events of one batch from a producer, delivered
// at least once, in order, already checked against the applied seqNrs
// (duplicates removed). It is for handlers that gain from writing many
// events at once, such as a replicator appending them to a journal. An
// error stops Run; the batch is delivered again after a restart.
type BatchHandler func(ctx context.Context, events []*streamdv1.Event) error

// TxHandler handles one event exactly once, writing its effects with
// txn, a transaction of Options.Store.DB(). It must have no effect outside
// txn: if the commit conflicts with a concurrent transaction the batch is run
// again in a fresh transaction. Its keys must not begin with the bytes 0x00
// 'o' (the offsets store's) nor with "consumer/journal/" (where stores
// written by earlier builds keep the journal id last seen). An error
// discards the whole batch and stops Run.
type TxHandler func(ctx context.Context, txn *badger.Txn, e *streamdv1.Event) error

// CommitHandler handles the events of one batch exactly once and
// commits them itself, in one atomic write together with offsetWrites: the
// records of the consumer's offset after the batch and of the applied
// seqNrs (offsets.Store.OffsetWrites), which must land in Options.Store's
// DB. A replication, for one, appends the events to a journal with
// journal.AppendWith, over a Store made by offsets.Wrap on the journal.
// If it returns an error nothing of the batch may be committed; Run stops.
// events is empty when the offset alone moves (Progress over events the
// producer filtered away, or the save at the end of a stream); ctx is then
// not the stream's, which may be over.
type CommitHandler func(ctx context.Context, events []*streamdv1.Event, offsetWrites []offsets.Write) error

// Defaults for zero Options fields.
const (
	DefaultSaveInterval = time.Second
	DefaultSaveEvery    = 1000
	// DefaultReportInterval is how often at most a consumer tells a
	// producer the offset it stored (OffsetReport).
	DefaultReportInterval = time.Second
	DefaultMinBackoff     = 100 * time.Millisecond
	DefaultMaxBackoff     = 10 * time.Second
	DefaultHelloTimeout   = 30 * time.Second
)

// Options configures New. Zero values mean the documented defaults.
type Options struct {
	// Producers are the producers to follow. An entry is either the address
	// of one producer (host:port, or any gRPC target), or "dns:///name:port":
	// every address the name resolves to (A and AAAA records, such as the
	// pods of a headless Kubernetes Service), found again every
	// ResolveInterval, so that instances that come are followed and those
	// gone for RemoveAfter are not. Each instance gets its own stream,
	// journal id and offset.
	Producers []string
	// Resolver resolves the names of "dns:///" entries (default
	// net.DefaultResolver).
	Resolver Resolver
	// ResolveInterval is how often "dns:///" names are resolved again
	// (default 10s). A failed stream to a discovered instance brings the
	// next resolution forward, to 1s (at most ResolveInterval) after the
	// previous one.
	ResolveInterval time.Duration
	// RemoveAfter is how long a discovered instance may be missing from the
	// answers before it is no longer followed (default 1m). Until then its
	// stream goes on (a terminating pod's last events) or is retried, so a
	// flapping answer does not stop and restart it.
	RemoveAfter time.Duration
	// DialOptions are applied after a default of insecure transport
	// credentials: pass grpc.WithTransportCredentials for TLS.
	DialOptions []grpc.DialOption

	// Stream is the name of the producers' stream ("" = the default stream).
	Stream string
	// Slices this instance owns. The zero value means all slices (0-1023);
	// the single slice 0 cannot be asked for.
	Slices offsets.SliceRange
	// Streams splits Slices over this many parallel streams to each
	// producer (default 1), each over a contiguous part of Slices (the
	// parts differ by at most one slice) with its own stored offset, so
	// that a busy producer is read and handled in parallel. Events of one
	// entity keep their order (an entity lives in one slice); events of
	// different streams have no order between them. Changing Streams is a
	// re-split of the stored offsets (see the package doc): nothing is
	// skipped. At most Slices.Len().
	Streams int
	// Name identifies the consumer in the store and to the producers.
	// Required.
	Name string
	// Store keeps offsets, applied seqNrs, filters and the journal id last
	// seen per producer. Required. The Consumer does not close it.
	Store *offsets.Store
	// Filter is the initial filter, used while the store holds none for
	// (Name, Stream). A stored filter (written by UpdateFilter) wins, so
	// filters survive restarts.
	Filter []*streamdv1.FilterCriterion

	// Exactly one handler is required; it chooses the delivery mode:
	// Handler or BatchHandler for AtLeastOnce, TxHandler or CommitHandler
	// for ExactlyOnce.
	Handler       Handler
	BatchHandler  BatchHandler
	TxHandler     TxHandler
	CommitHandler CommitHandler
	// NoDedupe hands the BatchHandler or CommitHandler every event, also
	// those whose seqNr was applied before (a replay, a re-delivery after a
	// restart), and stores no applied seqNrs: for handlers that are
	// idempotent by themselves, such as a replication (the journal applies
	// each origin seqNr once).
	NoDedupe bool
	// DedupeOrigin (with a TxHandler) also applies each replicated event
	// once per (origin region, entity, origin seqNr), whichever producer
	// delivered it: for a consumer of several journals that hold copies of
	// the same events, such as the pods of a region sharing a replication
	// (ARCHITECTURE §8). The check and the record (offsets.OriginSeqNr,
	// SetOriginSeqNrs) are in the handler's transaction, so two producers'
	// copies committing at once conflict and the later one is skipped.
	// Events without an origin are deduped per journal, as always.
	DedupeOrigin bool

	// StartPolicy applies when there is no stored offset for a producer's
	// journal: START_POLICY_EARLIEST (default), _LATEST or _AT_TIME.
	StartPolicy streamdv1.StartPolicy
	// StartTime goes with START_POLICY_AT_TIME.
	StartTime time.Time
	// OnJournalChange is FailOnJournalChange (default) or
	// RestartFromEarliest.
	OnJournalChange JournalChangePolicy

	// SaveInterval and SaveEvery batch the saves of AtLeastOnce offsets:
	// a save happens every SaveInterval (default 1s), after SaveEvery
	// handled events (default 1000), on Progress and when a stream ends.
	// All but the last run in the background, beside the handler; while
	// one is in flight, the next waits for it and takes everything handled
	// meanwhile, up to 100×SaveEvery events, where the handler waits too.
	SaveInterval time.Duration
	SaveEvery    int
	// ReportInterval is how often at most the consumer tells each producer
	// the offset it stored, after a save (default 1s): the producer shows
	// it to operators (`streamctl consumers list` at the producer).
	ReportInterval time.Duration

	// MinBackoff and MaxBackoff bound the delay before a reconnect, doubled
	// per failed attempt with full jitter (defaults 100ms and 10s).
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// HelloTimeout bounds the wait for a producer's Hello after Init; a
	// producer that stays silent is treated as unavailable and retried
	// (default 30s).
	HelloTimeout time.Duration

	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// withDefaults returns o with zero fields set to their defaults.
func (o Options) withDefaults() Options {
	if o.Slices == (offsets.SliceRange{}) {
		o.Slices = offsets.AllSlices
	}
	if o.Streams == 0 {
		o.Streams = 1
	}
	if o.StartPolicy == streamdv1.StartPolicy_START_POLICY_UNSPECIFIED {
		o.StartPolicy = streamdv1.StartPolicy_START_POLICY_EARLIEST
	}
	if o.SaveInterval == 0 {
		o.SaveInterval = DefaultSaveInterval
	}
	if o.SaveEvery == 0 {
		o.SaveEvery = DefaultSaveEvery
	}
	if o.ReportInterval == 0 {
		o.ReportInterval = DefaultReportInterval
	}
	if o.MinBackoff == 0 {
		o.MinBackoff = DefaultMinBackoff
	}
	if o.HelloTimeout == 0 {
		o.HelloTimeout = DefaultHelloTimeout
	}
	if o.MaxBackoff == 0 {
		o.MaxBackoff = max(DefaultMaxBackoff, o.MinBackoff)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.ResolveInterval == 0 {
		o.ResolveInterval = DefaultResolveInterval
	}
	if o.RemoveAfter == 0 {
		o.RemoveAfter = DefaultRemoveAfter
	}
	return o
}

// Validate reports every unusable field of o (zero values are fine: they
// mean the defaults), joined. Each error names the field and wraps
// ErrInvalidOptions (and so matches ErrInvalid).
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, optionsErrorf(format, args...)) }
	if len(o.Producers) == 0 {
		bad("Options.Producers is empty (give at least one producer address, or dns:///name:port)")
	}
	seen := make(map[string]bool, len(o.Producers))
	for i, addr := range o.Producers {
		switch {
		case addr == "":
			bad("Options.Producers[%d] is empty", i)
		case seen[addr]:
			bad("Options.Producers[%d] %q is listed twice", i, addr)
		}
		seen[addr] = true
		if _, _, err := parseProducer(i, addr); err != nil {
			errs = append(errs, err)
		}
	}
	for i, d := range o.DialOptions {
		if d == nil {
			bad("Options.DialOptions[%d] is nil", i)
		}
	}
	if len(o.Stream) > offsets.MaxNameLen {
		bad("Options.Stream is %d bytes, above %d", len(o.Stream), offsets.MaxNameLen)
	}
	if err := o.Slices.Validate(); err != nil {
		bad("Options.Slices: %v", err)
	} else if o.Streams < 1 || o.Streams > o.Slices.Len() {
		bad("Options.Streams %d is not in 1-%d (one stream per slice of Options.Slices %s at most)", o.Streams, o.Slices.Len(), o.Slices)
	}
	switch {
	case o.Name == "":
		bad("Options.Name is empty (name the consumer: offsets and filters are stored under it)")
	case len(o.Name) > offsets.MaxNameLen:
		bad("Options.Name is %d bytes, above %d", len(o.Name), offsets.MaxNameLen)
	}
	if o.Store == nil {
		bad("Options.Store is nil (open one with offsets.Open)")
	}
	if _, err := filters.Compile(o.Filter, filters.Limits{}); err != nil {
		bad("Options.Filter: %v", err)
	}
	switch set := o.handlersSet(); len(set) {
	case 0:
		bad("Options.Handler, BatchHandler, TxHandler and CommitHandler are all nil: set one (Handler or BatchHandler for at-least-once delivery, TxHandler or CommitHandler for exactly-once)")
	case 1:
	default:
		bad("Options.%s are set together: set one handler only (it chooses the delivery mode)", strings.Join(set, ", Options."))
	}
	if o.NoDedupe && o.BatchHandler == nil && o.CommitHandler == nil {
		bad("Options.NoDedupe goes with BatchHandler or CommitHandler")
	}
	if o.DedupeOrigin && o.TxHandler == nil {
		bad("Options.DedupeOrigin goes with TxHandler: the origin seqNrs are checked and stored in its transaction")
	}
	switch o.StartPolicy {
	case streamdv1.StartPolicy_START_POLICY_EARLIEST, streamdv1.StartPolicy_START_POLICY_LATEST:
		if !o.StartTime.IsZero() {
			bad("Options.StartTime is set with Options.StartPolicy %s (only START_POLICY_AT_TIME takes a time)", o.StartPolicy)
		}
	case streamdv1.StartPolicy_START_POLICY_AT_TIME:
		if o.StartTime.IsZero() {
			bad("Options.StartTime is zero with Options.StartPolicy START_POLICY_AT_TIME")
		}
	default:
		bad("Options.StartPolicy %d is unknown (EARLIEST, LATEST or AT_TIME)", int32(o.StartPolicy))
	}
	if o.OnJournalChange > RestartFromEarliest {
		bad("Options.OnJournalChange %d is unknown (FailOnJournalChange or RestartFromEarliest)", uint8(o.OnJournalChange))
	}
	if o.SaveInterval < 0 {
		bad("Options.SaveInterval %s is negative", o.SaveInterval)
	}
	if o.ReportInterval < 0 {
		bad("Options.ReportInterval %v is negative", o.ReportInterval)
	}
	if o.SaveEvery < 0 {
		bad("Options.SaveEvery %d is negative", o.SaveEvery)
	}
	if o.MinBackoff < 0 {
		bad("Options.MinBackoff %s is negative", o.MinBackoff)
	}
	if o.HelloTimeout < 0 {
		bad("Options.HelloTimeout %s is negative", o.HelloTimeout)
	}
	if o.ResolveInterval < 0 {
		bad("Options.ResolveInterval %s is negative", o.ResolveInterval)
	}
	if o.RemoveAfter < 0 {
		bad("Options.RemoveAfter %s is negative", o.RemoveAfter)
	}
	if o.MaxBackoff < o.MinBackoff {
		bad("Options.MaxBackoff %s is below Options.MinBackoff %s", o.MaxBackoff, o.MinBackoff)
	}
	return errors.Join(errs...)
}

// handlersSet names the handler fields of o that are set.
func (o Options) handlersSet() []string {
	var set []string
	for _, h := range []struct {
		name string
		set  bool
	}{
		{"Handler", o.Handler != nil},
		{"BatchHandler", o.BatchHandler != nil},
		{"TxHandler", o.TxHandler != nil},
		{"CommitHandler", o.CommitHandler != nil},
	} {
		if h.set {
			set = append(set, h.name)
		}
	}
	return set
}

// Mode is the delivery guarantee chosen by the handler that is set:
// ExactlyOnce with TxHandler or CommitHandler, AtLeastOnce otherwise.
func (o Options) Mode() Mode {
	if o.TxHandler != nil || o.CommitHandler != nil {
		return ExactlyOnce
	}
	return AtLeastOnce
}

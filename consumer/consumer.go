package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Consumer follows the streams of one or more producers. Its methods are
// safe for concurrent use.
type Consumer struct {
	opts      Options
	log       *slog.Logger
	dial      []grpc.DialOption
	static    []*follower  // Options.Streams per address in Options.Producers
	discovery []*discovery // one per "dns:///" entry

	fmu       sync.Mutex
	followers []*follower              // static and discovered, in Status order
	claims    map[string]*journalClaim // by journal id and slices (claimKey)

	running atomic.Bool
	nextID  atomic.Uint64 // FilterUpdate ids

	// resplitMu serialises the saves of followers in a re-split (whose
	// keys cut stored ranges; see follower.parts): a CommitHandler's
	// offset records are computed before they commit, so two such saves
	// at once could each write back a part of a range the other took.
	resplitMu sync.Mutex

	// filterSem serialises UpdateFilter with itself and with the step of a
	// connect that reads the stored filter and sends Init, so that no stream
	// opens with a filter an update in flight is about to change.
	filterSem chan struct{}

	mu     sync.Mutex
	filter []*streamdv1.FilterCriterion // the stored filter, or Options.Filter
}

// WindowDialOptions are the HTTP/2 flow-control windows a consumer opens
// its connections with: 4 MiB per stream, 16 MiB per connection (the
// streams to one producer share it). A producer sends a stream's batches
// only as far as the window lets it. gRPC's default, 64 KiB grown by its
// estimate of the link's bandwidth-delay product, stays small where the
// link is fast and both ends are busy, and holds a catch-up back
// (BENCHMARKS.md, *Catch-up*). A slow handler leaves at most a window of
// events buffered per stream. Options.DialOptions come after these and
// win.
func WindowDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithInitialWindowSize(4 << 20), grpc.WithInitialConnWindowSize(16 << 20)}
}

// New checks opts and returns a Consumer; nothing is started before Run.
// It reads the filter stored for (Name, Stream).
func New(opts Options) (*Consumer, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	opts.Producers = append([]string(nil), opts.Producers...)
	opts.Filter = cloneCriteria(opts.Filter)
	c := &Consumer{
		opts: opts,
		log:  opts.Logger.With("consumer", opts.Name),
		dial: append([]grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// The connection redials on the consumer's backoff, not gRPC's
			// default (1s growing to 120s), so a link that comes back is used
			// within MaxBackoff.
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
				BaseDelay: opts.MinBackoff, Multiplier: 2, Jitter: 0.2, MaxDelay: opts.MaxBackoff,
			}, MinConnectTimeout: 20 * time.Second}),
		}, append(WindowDialOptions(), opts.DialOptions...)...),
		filterSem: make(chan struct{}, 1),
	}
	stored, found, err := c.storedFilter()
	if err != nil {
		return nil, err
	}
	if found && len(opts.Filter) > 0 {
		c.log.Info("consumer: the stored filter wins over Options.Filter", "stream", opts.Stream, "stored", len(stored))
	}
	c.filter = stored
	c.claims = map[string]*journalClaim{}
	for i, entry := range opts.Producers {
		if t, ok, _ := parseProducer(i, entry); ok {
			c.discovery = append(c.discovery, newDiscovery(c, t))
			continue
		}
		for _, r := range streamSlices(opts.Slices, opts.Streams) {
			f := newFollower(c, entry, r)
			f.index = i
			c.static = append(c.static, f)
		}
	}
	c.followers = slices.Clone(c.static)
	return c, nil
}

// Run follows every producer until ctx is done (then it saves what was
// handled and returns nil) or until an error that retrying cannot cure:
// a handler error, a journal change (with FailOnJournalChange), an offset
// below retention, an unknown stream, a refused Init, a store failure. Then
// it stops every stream and returns the error(s). Transport errors and
// Unavailable are retried with backoff, resuming from the offset. Run
// returns only after everything it started has stopped. It may be called
// again after it returned, but not concurrently (ErrRunning).
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
		cancel() // one failure stops every stream
	}
	for _, f := range c.static {
		wg.Go(func() {
			if err := f.run(ctx); err != nil {
				fail(err)
			}
		})
	}
	for _, d := range c.discovery {
		wg.Go(func() { d.run(ctx, fail) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ProducerStatus describes the stream of one producer, for metrics.
type ProducerStatus struct {
	// Addr is the producer's address: the entry of Options.Producers, or
	// the "ip:port" of an instance found through a "dns:///" entry.
	Addr string
	// Target is the entry of Options.Producers that Addr comes from.
	Target string
	// JournalID is the producer's journal id, nil until first known.
	JournalID []byte
	// Offset is the last offset processed (handled, dropped or covered by
	// Progress); it may be ahead of the stored offset by what was handled
	// since the last save completed.
	Offset uint64
	// Connected: a stream is open and its Hello was received.
	Connected bool
	// LastError ended the last stream or connection attempt (nil if none).
	LastError error
	// Lag is the producer's last known offset (from Hello, Progress and
	// events) minus Offset.
	Lag uint64
}

// Status returns one entry per producer in the order of Options.Producers,
// with the instances of a "dns:///" entry, sorted by address, in its place
// while Run follows them. With Options.Streams > 1 an entry sums up the
// producer's streams: the lowest Offset, the highest Lag, Connected when
// every stream is, the LastError of the first stream that has one.
func (c *Consumer) Status() []ProducerStatus {
	var out []ProducerStatus
	for _, f := range c.following() {
		st := f.status()
		n := len(out)
		if n == 0 || out[n-1].Addr != st.Addr || out[n-1].Target != st.Target {
			out = append(out, st)
			continue
		}
		sum := &out[n-1]
		sum.Offset, sum.Lag, sum.Connected = min(sum.Offset, st.Offset), max(sum.Lag, st.Lag), sum.Connected && st.Connected
		if sum.JournalID == nil {
			sum.JournalID = st.JournalID
		}
		if sum.LastError == nil {
			sum.LastError = st.LastError
		}
	}
	return out
}

// Filter returns a copy of the consumer's current filter: the one stored for
// (Name, Stream), or Options.Filter while none is stored.
func (c *Consumer) Filter() []*streamdv1.FilterCriterion {
	c.mu.Lock()
	defer c.mu.Unlock()
	return cloneCriteria(c.filter)
}

// FilterOption adjusts UpdateFilter.
type FilterOption func(*filterConfig)

type filterConfig struct {
	replayType string
	replay     bool
}

// ReplayFromLastApplied makes UpdateFilter ask, for every include of an
// exact entity id in add whose replay_from_seq_nr is 0, a replay from the
// seqNr after the last one this consumer applied of (entityType, id) — per
// producer, since each journal has its own seqNrs (1 if none was applied).
// The criterion is stored with replay_from_seq_nr 1 (the whole history), so
// that a replay cut short by a disconnect is asked again at the next Init;
// the duplicates this re-delivers are dropped.
func ReplayFromLastApplied(entityType string) FilterOption {
	return func(fc *filterConfig) { fc.replay, fc.replayType = true, entityType }
}

// UpdateFilter adds and removes criteria (identity: action, field, value;
// see filters.Apply). It validates the result, stores it for (Name, Stream)
// first — so it survives restarts and every stream opened later carries it
// in Init — then sends a FilterUpdate on every open stream and waits for
// each answer. If a producer refuses (a *FilterRefusedError), the previous
// filter is stored again and the streams that had accepted the update are
// reopened, so that every stream runs the stored filter. A stream that ends
// before it answers gets the stored filter when it reconnects. If ctx ends
// first, the new filter stays stored, the streams that have not answered are
// reopened with it, and ctx's error is returned.
//
// Do not call it from a Handler of the same Consumer: it waits for answers
// that arrive behind the events the handler is holding up.
func (c *Consumer) UpdateFilter(ctx context.Context, add, remove []*streamdv1.FilterCriterion, opts ...FilterOption) error {
	var fc filterConfig
	for _, o := range opts {
		o(&fc)
	}
	for i, a := range add {
		if err := filters.Validate(a, filters.Limits{}); err != nil {
			return invalidf("UpdateFilter: add[%d]: %v", i, err)
		}
	}
	for i, r := range remove {
		if r == nil {
			return invalidf("UpdateFilter: remove[%d] is nil", i)
		}
	}
	add, remove = cloneCriteria(add), cloneCriteria(remove)
	stored := add
	if fc.replay {
		// Open streams replay from last applied + 1 now; the stored filter
		// asks for the whole history, so that a replay cut short by a
		// disconnect is asked again at the next Init (duplicates are dropped).
		stored = cloneCriteria(add)
		for _, a := range stored {
			if a.GetAction() == streamdv1.FilterAction_FILTER_ACTION_INCLUDE &&
				a.GetField() == streamdv1.FilterField_FILTER_FIELD_ENTITY_ID && a.GetReplayFromSeqNr() == 0 {
				a.ReplayFromSeqNr = 1
			}
		}
	}
	if err := c.lockFilter(ctx); err != nil {
		return err
	}
	defer c.unlockFilter()

	old, wasStored, err := c.storedFilter()
	if err != nil {
		return err
	}
	next := cloneCriteria(filters.Apply(old, stored, remove))
	if _, err := filters.Compile(next, filters.Limits{}); err != nil {
		return invalidf("UpdateFilter: %v", err)
	}
	if err := c.opts.Store.SetFilters(c.opts.Name, c.opts.Stream, next); err != nil {
		return fmt.Errorf("consumer: store filter: %w", err)
	}
	c.setFilter(next)

	id := c.nextID.Add(1)
	type pending struct {
		s      *session
		answer chan *streamdv1.FilterUpdateResult
	}
	var waits []pending
	for _, f := range c.following() {
		s := f.openSession()
		if s == nil {
			continue // it sends the stored filter in its next Init
		}
		u := &streamdv1.FilterUpdate{Id: id, Add: add, Remove: remove}
		if fc.replay {
			u.Add = s.replayFromLastApplied(add, fc.replayType)
		}
		answer := s.expect(id)
		if err := s.send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_FilterUpdate{FilterUpdate: u}}); err != nil {
			s.forget(id)
			continue // the stream is ending; it reconnects with the stored filter
		}
		waits = append(waits, pending{s, answer})
	}

	var refused []error
	var accepted, refusing []*session
	for i, w := range waits {
		select {
		case r := <-w.answer:
			if r.GetCode() == 0 {
				accepted = append(accepted, w.s)
			} else {
				refusing = append(refusing, w.s)
				refused = append(refused, &FilterRefusedError{Addr: w.s.f.addr, Code: codeOf(r.GetCode()), Message: r.GetMessage()})
			}
		case <-w.s.done:
			// Ended before answering: it reconnects with the stored filter.
		case <-ctx.Done():
			for _, rest := range waits[i:] {
				rest.s.forget(id)
				rest.s.restart("filter update not answered before the caller gave up")
			}
			for _, s := range refusing {
				s.restart("filter update refused; the caller gave up before the previous filter was restored")
			}
			return fmt.Errorf("consumer: UpdateFilter: %w (the new filter is stored; streams that had not accepted it reconnect with it)", ctx.Err())
		}
	}
	if len(refused) == 0 {
		return nil
	}
	if wasStored {
		err = c.opts.Store.SetFilters(c.opts.Name, c.opts.Stream, old)
	} else {
		err = c.opts.Store.DeleteFilters(c.opts.Name, c.opts.Stream)
	}
	if err != nil {
		refused = append(refused, fmt.Errorf("consumer: restore the previous filter: %w", err))
	} else {
		c.setFilter(old)
	}
	for _, s := range accepted {
		s.restart("another producer refused the filter update")
	}
	return errors.Join(refused...)
}

// Replay asks every open stream for the history of (entityType, entityID)
// from fromSeqNr (1 = all). The events arrive in replay batches, which do
// not move the offset, and go through the seqNr dedupe like any other:
// only seqNrs above the last applied one reach the handler. A producer
// without an open stream gets nothing; its error matches ErrNotConnected.
func (c *Consumer) Replay(ctx context.Context, entityType, entityID string, fromSeqNr uint64) error {
	switch {
	case entityType == "":
		return invalidf("Replay: entity type is empty")
	case entityID == "":
		return invalidf("Replay: entity id is empty")
	}
	req := &streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Replay{Replay: &streamdv1.Replay{
		EntityType: entityType, EntityId: entityID, FromSeqNr: fromSeqNr,
	}}}
	var errs []error
	for _, f := range c.following() {
		if err := ctx.Err(); err != nil {
			return err
		}
		s := f.openSession()
		if s == nil {
			errs = append(errs, fmt.Errorf("%w to producer %s: Replay of %s/%s not sent", ErrNotConnected, f.addr, entityType, entityID))
			continue
		}
		if err := s.send(req); err != nil {
			errs = append(errs, fmt.Errorf("%w to producer %s: Replay of %s/%s not sent: %v", ErrNotConnected, f.addr, entityType, entityID, err))
		}
	}
	return errors.Join(errs...)
}

// storedFilter returns the filter stored for (Name, Stream), or
// Options.Filter and false if none is stored.
func (c *Consumer) storedFilter() ([]*streamdv1.FilterCriterion, bool, error) {
	criteria, err := c.opts.Store.Filters(c.opts.Name, c.opts.Stream)
	switch {
	case errors.Is(err, offsets.ErrNotFound):
		return cloneCriteria(c.opts.Filter), false, nil
	case err != nil:
		return nil, false, storeErrorf("consumer: read the stored filter: %w", err)
	}
	return criteria, true, nil
}

func (c *Consumer) setFilter(criteria []*streamdv1.FilterCriterion) {
	c.mu.Lock()
	c.filter = cloneCriteria(criteria)
	c.mu.Unlock()
}

func (c *Consumer) lockFilter(ctx context.Context) error {
	select {
	case c.filterSem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Consumer) unlockFilter() { <-c.filterSem }

func cloneCriteria(in []*streamdv1.FilterCriterion) []*streamdv1.FilterCriterion {
	if in == nil {
		return nil
	}
	out := make([]*streamdv1.FilterCriterion, len(in))
	for i, c := range in {
		out[i] = proto.CloneOf(c)
	}
	return out
}

// Options returns the options the consumer runs with, defaults filled in.
// The slices in it are copies; Store is the consumer's own.
func (c *Consumer) Options() Options {
	o := c.opts
	o.Producers = append([]string(nil), o.Producers...)
	o.DialOptions = append([]grpc.DialOption(nil), o.DialOptions...)
	o.Filter = cloneCriteria(o.Filter)
	return o
}

package consumer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// maxCachedEntities bounds the in-memory seqNr cache of a producer; past it
// the cache is emptied after a save (everything in it is then in the store).
const maxCachedEntities = 1 << 17

// infoTimeout bounds the JournalInfo call that explains a refused Init.
const infoTimeout = 5 * time.Second

type entityKey struct{ typ, id string }

// follower follows one producer: it connects, resumes, dedupes, calls the
// handler and saves the position, reconnecting with backoff.
type follower struct {
	c    *Consumer
	addr string
	log  *slog.Logger
	// index is the entry of Options.Producers the follower comes from;
	// discovered: through "dns:///", so the address may serve another
	// instance's journal tomorrow (the journal, not the address, is the
	// instance). failed, if set, is told of every failed stream.
	index      int
	discovered bool
	failed     func()
	claimed    []byte // the journal claimed (Consumer.claim), guarded by c.fmu

	// Owned by the goroutine of run.
	client        streamdv1.EventStreamServiceClient
	journalID     []byte // journal of the last Hello (nil: none yet)
	recorded      []byte // journal id in the journal record
	known         bool   // offset is a position in journalID
	offset        uint64 // last offset processed
	dirty         bool   // offset moved since the last save
	pending       map[entityKey]uint64
	sinceSave     int
	cache         map[entityKey]uint64 // last applied seqNr, saved or pending
	lastKnown     uint64               // the producer's last offset, as far as we know
	forceEarliest bool                 // after a journal change with RestartFromEarliest
	// parts, after a re-split, are the pieces of Options.Slices that were
	// stored apart (each with the offset it had reached, 0 for one never
	// consumed), while the position is below some of them: events at or
	// below their piece's offset were applied already, and the position is
	// saved per piece so that this survives a restart (see savedKeys).
	parts []offsets.Entry

	mu   sync.Mutex // guards st and sess
	st   ProducerStatus
	sess *session // the open stream (Init sent), nil between streams
}

func newFollower(c *Consumer, addr string) *follower {
	return &follower{
		c:       c,
		addr:    addr,
		log:     c.log.With("producer", addr),
		pending: map[entityKey]uint64{},
		cache:   map[entityKey]uint64{},
		st:      ProducerStatus{Addr: addr, Target: addr},
	}
}

// restartError ends a stream that must be reopened at once (not a failure).
type restartError struct{ reason string }

func (e *restartError) Error() string { return "consumer: stream reopened: " + e.reason }

// run follows the producer until ctx is done (nil) or a fatal error.
func (f *follower) run(ctx context.Context) error {
	conn, err := grpc.NewClient(f.addr, f.c.dial...)
	if err != nil {
		return fmt.Errorf("consumer: producer %s: %w", f.addr, err)
	}
	defer conn.Close()
	f.client = streamdv1.NewEventStreamServiceClient(conn)

	for attempt := 0; ; {
		connected, err := f.stream(ctx)
		f.setDisconnected(ctx, err)
		var (
			serr    *storeError
			restart *restartError
			changed *JournalChangedError
		)
		switch {
		case errors.As(err, &serr):
			return err // a failed save is never a clean stop
		case ctx.Err() != nil:
			return nil
		case errors.As(err, &restart):
			f.log.Info("consumer: reopening stream", "reason", restart.reason)
			attempt = 0
			continue
		case errors.As(err, &changed) && f.c.opts.OnJournalChange == RestartFromEarliest:
			f.log.Warn("consumer: producer journal changed, restarting from its earliest offset",
				"stored_journal", fmt.Sprintf("%x", changed.Stored), "error", err)
			f.forgetJournal(true)
			attempt = 0
			continue
		case errors.As(err, &changed) && f.discovered:
			// Another instance has the address now (an IP reused by another
			// pod): follow whatever journal it serves, from its own position.
			f.log.Info("consumer: the address serves another producer instance now", "error", err)
			f.forgetJournal(false)
			attempt = 0
			continue
		case !retryable(err):
			return err
		}
		if connected {
			attempt = 0
		}
		if f.failed != nil {
			f.failed()
		}
		delay := f.c.backoff(attempt)
		attempt++
		level := slog.LevelWarn
		if errors.Is(err, errJournalFollowed) {
			level = slog.LevelDebug // the usual lot of a pod's second address
		}
		f.log.Log(ctx, level, "consumer: stream ended, reconnecting", "error", err, "delay", delay, "attempt", attempt)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil
		}
	}
}

func retryable(err error) bool {
	var he *HandlerError
	if errors.As(err, &he) || errors.Is(err, ErrProtocol) || errors.Is(err, ErrJournalChanged) ||
		errors.Is(err, ErrOutOfRange) || errors.Is(err, ErrInvalid) {
		return false
	}
	st, ok := status.FromError(err)
	if !ok {
		return true // transport and io errors
	}
	switch st.Code() {
	case codes.FailedPrecondition, codes.NotFound, codes.InvalidArgument, codes.OutOfRange,
		codes.Unauthenticated, codes.PermissionDenied, codes.Unimplemented:
		return false
	}
	return true
}

// backoff is the delay before reconnect attempt n (0-based): full jitter
// over MinBackoff·2ⁿ capped at MaxBackoff.
func (c *Consumer) backoff(n int) time.Duration {
	ceiling := c.opts.MaxBackoff
	if n < 62 {
		if b := c.opts.MinBackoff << n; b > 0 && b>>n == c.opts.MinBackoff && b < ceiling {
			ceiling = b
		}
	}
	if ceiling <= 0 {
		return 0
	}
	return rand.N(ceiling + 1)
}

// start is where a stream starts.
type start struct {
	journalID []byte              // the journal the consumer believes the producer has (nil: unknown)
	position  *streamdv1.Position // sent in Init; nil: a start policy is sent
	stored    uint64              // the stored offset, when position is set
	policy    streamdv1.StartPolicy
	startTime time.Time
	// expect is the journal whose offsets the consumer holds: Hello must
	// name it, or the journal changed.
	expect []byte
	// reset: the policy is an operator's pending reset.
	reset bool
}

func (f *follower) key(journalID []byte) offsets.Key {
	return offsets.Key{Consumer: f.c.opts.Name, JournalID: journalID, Slices: f.c.opts.Slices}
}

// resolveStart decides where the next stream starts from what is in memory
// and in the store.
func (f *follower) resolveStart() (start, error) {
	o := f.c.opts
	st := start{policy: o.StartPolicy, startTime: o.StartTime}
	if f.forceEarliest {
		st.policy, st.startTime = streamdv1.StartPolicy_START_POLICY_EARLIEST, time.Time{}
		return st, nil
	}
	jid := f.journalID
	if jid == nil && !f.discovered { // an address found by DNS says nothing of its journal
		rec, err := f.loadJournalRecord()
		if err != nil {
			return start{}, err
		}
		f.recorded, jid = rec, rec
	}
	if jid == nil {
		return st, nil // first contact: Hello tells the journal id
	}
	st.journalID = jid
	r, err := o.Store.Resolve(f.key(jid))
	if err != nil {
		return start{}, storeErrorf("consumer: producer %s: read the position: %w", f.addr, err)
	}
	f.parts = nil
	if r.Found && !r.Exact && !r.Position.Pending() {
		f.parts = pieces(o.Slices, r)
	}
	switch {
	case !r.Found:
		return st, nil
	case r.Position.Pending():
		st.policy, st.startTime, st.reset = r.Position.Start, r.Position.StartTime, true
		return st, nil
	case len(r.Uncovered) > 0 && o.StartPolicy == streamdv1.StartPolicy_START_POLICY_EARLIEST:
		// Slices never consumed before: start them (and, duplicates aside,
		// the others) from the earliest offset.
		f.log.Info("consumer: part of the slice range has no position, starting from the earliest offset",
			"uncovered", fmt.Sprint(r.Uncovered))
		st.policy, st.expect = streamdv1.StartPolicy_START_POLICY_EARLIEST, jid
		return st, nil
	}
	off := r.Position.Offset
	if f.known && bytes.Equal(f.journalID, jid) && f.offset > off {
		off = f.offset // handled in memory, the save failed or is pending
	}
	st.position = &streamdv1.Position{JournalId: jid, Offset: off}
	st.stored, st.expect = r.Position.Offset, jid
	return st, nil
}

// stream runs one stream: Init, Hello, then events until it ends. It saves
// what was handled before returning.
func (f *follower) stream(ctx context.Context) (connected bool, err error) {
	st, err := f.resolveStart()
	if err != nil {
		return false, err
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stream, err := f.client.Subscribe(sctx)
	if err != nil {
		return false, f.translate(sctx, err, st)
	}
	s := &session{
		f: f, stream: stream, cancel: cancel, done: make(chan struct{}),
		journalID: st.journalID, waiters: map[uint64]chan *streamdv1.FilterUpdateResult{},
	}
	if err := f.sendInit(sctx, s, st); err != nil {
		return false, err
	}
	msgs := make(chan *streamdv1.SubscribeResponse, 16)
	var wg sync.WaitGroup
	wg.Go(func() { s.receive(sctx, msgs) })
	defer func() {
		f.unregister(s)
		cancel(errors.New("stream over"))
		wg.Wait()
		close(s.done)
	}()

	connected, err = f.serve(sctx, s, msgs, st)
	if ferr := f.flush(); ferr != nil {
		err = errors.Join(err, ferr)
	}
	f.c.release(f)
	return connected, err
}

// sendInit sends Init with the stored filter and registers s as open, both
// under the filter lock (see Consumer.filterSem).
func (f *follower) sendInit(ctx context.Context, s *session, st start) error {
	o := f.c.opts
	if err := f.c.lockFilter(ctx); err != nil {
		return context.Cause(ctx)
	}
	defer f.c.unlockFilter()
	criteria, _, err := f.c.storedFilter()
	if err != nil {
		return err
	}
	f.c.setFilter(criteria)
	init := &streamdv1.Init{
		Stream:       o.Stream,
		SliceRange:   o.Slices.Proto(),
		Position:     st.position,
		Filter:       criteria,
		ConsumerName: o.Name,
	}
	if st.position == nil {
		init.StartPolicy = st.policy
		if st.policy == streamdv1.StartPolicy_START_POLICY_AT_TIME {
			init.StartTimeUnixNano = st.startTime.UnixNano()
		}
	}
	if err := s.stream.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: init}}); err != nil {
		if errors.Is(err, io.EOF) {
			_, err = s.stream.Recv() // the stream's real error
		}
		return f.translate(ctx, err, st)
	}
	f.mu.Lock()
	f.sess = s
	f.mu.Unlock()
	return nil
}

func (f *follower) unregister(s *session) {
	f.mu.Lock()
	if f.sess == s {
		f.sess = nil
	}
	f.mu.Unlock()
}

func (f *follower) openSession() *session {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sess
}

// serve reads Hello, then events and progress until the stream ends.
func (f *follower) serve(ctx context.Context, s *session, msgs <-chan *streamdv1.SubscribeResponse, st start) (bool, error) {
	var first *streamdv1.SubscribeResponse
	helloTimer := time.NewTimer(f.c.opts.HelloTimeout)
	defer helloTimer.Stop()
	select {
	case first = <-msgs:
	case <-ctx.Done():
		return false, context.Cause(ctx)
	case <-helloTimer.C:
		return false, status.Errorf(codes.Unavailable, "consumer: producer %s sent no Hello within %v", f.addr, f.c.opts.HelloTimeout)
	}
	if first == nil {
		if ctx.Err() != nil {
			return false, context.Cause(ctx)
		}
		return false, f.translate(ctx, s.recvErr, st)
	}
	h := first.GetHello()
	if h == nil {
		return false, protocolf(f.addr, "the first response is not Hello")
	}
	if err := f.hello(h, st, s); err != nil {
		return false, err
	}
	f.mu.Lock()
	f.st.Connected = true
	f.mu.Unlock()
	f.updateStatus()
	f.log.Info("consumer: stream open", "journal", fmt.Sprintf("%x", f.journalID), "offset", f.offset,
		"producer_first", h.GetFirstOffset(), "producer_last", h.GetLastOffset())

	ticker := time.NewTicker(f.c.opts.SaveInterval)
	defer ticker.Stop()
	for {
		select {
		case m := <-msgs:
			if m == nil {
				if ctx.Err() != nil {
					return true, context.Cause(ctx)
				}
				return true, f.translate(ctx, s.recvErr, st)
			}
			var next *streamdv1.SubscribeResponse
			if f.c.opts.BatchHandler != nil || f.c.opts.CommitHandler != nil {
				m, next = coalesce(m, msgs)
			}
			if err := f.handle(ctx, m); err != nil {
				return true, err
			}
			if next != nil {
				if err := f.handle(ctx, next); err != nil {
					return true, err
				}
			}
		case <-ticker.C:
			if err := f.flush(); err != nil {
				return true, err
			}
		case <-ctx.Done():
			return true, context.Cause(ctx)
		}
	}
}

// coalesceEvents and coalesceBytes bound the batches coalesce makes.
const (
	coalesceEvents = 1000
	coalesceBytes  = 1 << 20
)

// coalesce merges into m, a live event batch, the live batches already
// queued behind it, so that a BatchHandler or CommitHandler writes them at
// once (one append, one fsync, for a replication). It stops at the first other message, which
// it returns as next (nil if none), to be handled after the merged batch.
func coalesce(m *streamdv1.SubscribeResponse, msgs <-chan *streamdv1.SubscribeResponse) (merged, next *streamdv1.SubscribeResponse) {
	b := m.GetEvents()
	if b == nil || b.GetReplay() {
		return m, nil
	}
	var events []*streamdv1.Event
	size := proto.Size(b)
	for len(b.GetEvents())+len(events) < coalesceEvents && size < coalesceBytes {
		var more *streamdv1.SubscribeResponse
		select {
		case more = <-msgs:
		default:
		}
		if more == nil {
			break // nothing queued, or the stream ended (the channel closed)
		}
		mb := more.GetEvents()
		if mb == nil || mb.GetReplay() {
			next = more
			break
		}
		if events == nil {
			events = append(events, b.GetEvents()...)
		}
		events = append(events, mb.GetEvents()...)
		size += proto.Size(mb)
	}
	if events == nil {
		return m, next
	}
	return &streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Events{Events: &streamdv1.EventBatch{Events: events}}}, next
}

// hello checks the journal id and settles the position the stream starts
// from.
func (f *follower) hello(h *streamdv1.Hello, st start, s *session) error {
	jid := bytes.Clone(h.GetJournalId())
	if len(jid) != offsets.JournalIDLen {
		return protocolf(f.addr, "Hello has a journal id of %d bytes, want %d", len(jid), offsets.JournalIDLen)
	}
	if st.expect != nil && !bytes.Equal(jid, st.expect) {
		return &JournalChangedError{Addr: f.addr, Stored: st.expect, Current: jid}
	}
	takeover, err := f.c.claim(f, jid)
	if err != nil {
		return err
	}
	if takeover { // another follower moved jid on meanwhile
		f.known = false
		clear(f.cache)
		if st.position != nil {
			return &restartError{reason: fmt.Sprintf("journal %x was followed through another address meanwhile", jid)}
		}
	}
	forced := f.forceEarliest
	if !bytes.Equal(jid, f.journalID) {
		f.journalID, f.known, f.dirty, f.sinceSave = jid, false, false, 0
		clear(f.cache)
		clear(f.pending)
	}
	if !f.discovered && !bytes.Equal(jid, f.recorded) {
		if err := f.saveJournalRecord(jid); err != nil {
			return err
		}
		f.recorded = jid
	}
	s.setJournalID(jid)
	f.lastKnown = max(f.lastKnown, h.GetLastOffset())
	if st.position != nil {
		f.offset, f.known = st.position.Offset, true
		f.dirty = st.position.Offset > st.stored
		return nil
	}
	if !forced && !st.reset && !bytes.Equal(jid, st.journalID) {
		// We did not know this journal; a position may still be stored for it
		// (set by an operator, or the journal record was lost): use it.
		r, err := f.c.opts.Store.Resolve(f.key(jid))
		if err != nil {
			return storeErrorf("consumer: producer %s: read the position: %w", f.addr, err)
		}
		if r.Found {
			return &restartError{reason: fmt.Sprintf("a position is stored for journal %x", jid)}
		}
	}
	// Started from a policy: the position is just before the start offset.
	// Set (not Save) so that a reset or a re-split is settled exactly.
	off := h.GetStartOffset()
	if off > 0 {
		off--
	}
	for _, k := range f.startKeys(jid, off) {
		if err := f.c.opts.Store.Set(k, off); err != nil {
			return storeErrorf("consumer: producer %s: store the start position: %w", f.addr, err)
		}
	}
	f.offset, f.known, f.dirty, f.forceEarliest = off, true, false, false
	return nil
}

// translate turns a stream error into what the caller branches on.
func (f *follower) translate(ctx context.Context, err error, st start) error {
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("consumer: producer %s ended the stream", f.addr) // retried
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	s, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("consumer: producer %s: %w", f.addr, err)
	}
	switch s.Code() {
	case codes.FailedPrecondition:
		if st.position != nil {
			e := &JournalChangedError{Addr: f.addr, Stored: st.position.JournalId, Message: s.Message()}
			if info := f.journalInfo(ctx); info != nil && len(info.GetJournalId()) > 0 {
				e.Current = info.GetJournalId()
			}
			return e
		}
	case codes.OutOfRange:
		e := &OutOfRangeError{Addr: f.addr, JournalID: f.journalID, Offset: f.offset, Message: s.Message()}
		if st.position != nil && !f.known {
			e.JournalID, e.Offset = st.position.JournalId, st.position.Offset
		}
		if info := f.journalInfo(ctx); info != nil {
			e.FirstAvailable = info.GetFirstOffset()
		}
		if e.FirstAvailable == 0 {
			e.FirstAvailable = firstAvailableIn(s.Message())
		}
		return e
	}
	return fmt.Errorf("consumer: producer %s: %w", f.addr, err)
}

// journalInfo asks the producer about its journal, best effort.
func (f *follower) journalInfo(ctx context.Context) *streamdv1.JournalInfoResponse {
	ctx, cancel := context.WithTimeout(ctx, infoTimeout)
	defer cancel()
	info, err := f.client.JournalInfo(ctx, &streamdv1.JournalInfoRequest{})
	if err != nil {
		f.log.Debug("consumer: JournalInfo failed", "error", err)
		return nil
	}
	return info
}

var firstAvailableRE = regexp.MustCompile(`first available offset is (\d+)`)

func firstAvailableIn(msg string) uint64 {
	m := firstAvailableRE.FindStringSubmatch(msg)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

func (f *follower) handle(ctx context.Context, m *streamdv1.SubscribeResponse) error {
	switch r := m.GetResponse().(type) {
	case *streamdv1.SubscribeResponse_Events:
		var err error
		if f.c.opts.Mode == ExactlyOnce {
			err = f.batchExactlyOnce(ctx, r.Events)
		} else {
			err = f.batchAtLeastOnce(ctx, r.Events)
		}
		f.updateStatus()
		return err
	case *streamdv1.SubscribeResponse_Progress:
		p := r.Progress.GetOffset()
		f.lastKnown = max(f.lastKnown, p)
		if p > f.offset {
			f.offset, f.dirty = p, true
		}
		err := f.flush()
		f.updateStatus()
		return err
	case *streamdv1.SubscribeResponse_Hello:
		return protocolf(f.addr, "a second Hello")
	default:
		f.log.Debug("consumer: ignoring an unknown response", "type", fmt.Sprintf("%T", r))
		return nil
	}
}

func (f *follower) checkEvent(e *streamdv1.Event) error {
	switch {
	case e == nil:
		return protocolf(f.addr, "a nil event")
	case e.GetEntityId() == "":
		return protocolf(f.addr, "event at offset %d has no entity id", e.GetOffset())
	case e.GetSeqNr() == 0:
		return protocolf(f.addr, "event at offset %d (%s/%s) has seqNr 0", e.GetOffset(), e.GetEntityType(), e.GetEntityId())
	}
	return nil
}

// lastApplied is the last applied seqNr of k: the cache, else the store.
func (f *follower) lastApplied(k entityKey) (uint64, error) {
	if v, ok := f.cache[k]; ok {
		return v, nil
	}
	v, err := f.c.opts.Store.AppliedSeqNr(nil, f.c.opts.Name, f.journalID, k.typ, k.id)
	if err != nil {
		return 0, storeErrorf("consumer: producer %s: read applied seqNr of %s/%s: %w", f.addr, k.typ, k.id, err)
	}
	f.cache[k] = v
	return v, nil
}

func (f *follower) handlerError(ctx context.Context, e *streamdv1.Event, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx) // the stream is ending; the event comes again
	}
	return &HandlerError{Addr: f.addr, Offset: e.GetOffset(), EntityType: e.GetEntityType(), EntityID: e.GetEntityId(), SeqNr: e.GetSeqNr(), Err: err}
}

func (f *follower) batchAtLeastOnce(ctx context.Context, b *streamdv1.EventBatch) error {
	o := f.c.opts
	if o.BatchHandler != nil {
		return f.wholeBatchAtLeastOnce(ctx, b)
	}
	for _, e := range b.GetEvents() {
		if err := f.checkEvent(e); err != nil {
			return err
		}
		if !b.GetReplay() {
			f.lastKnown = max(f.lastKnown, e.GetOffset())
		}
		if f.mine(e) {
			k := entityKey{e.GetEntityType(), e.GetEntityId()}
			last, err := f.lastApplied(k)
			if err != nil {
				return err
			}
			if e.GetSeqNr() > last {
				if err := o.Handler(ctx, e); err != nil {
					return f.handlerError(ctx, e, err)
				}
				f.cache[k], f.pending[k] = e.GetSeqNr(), e.GetSeqNr()
				f.sinceSave++
			}
		}
		if !b.GetReplay() && e.GetOffset() > f.offset {
			f.offset, f.dirty = e.GetOffset(), true
		}
		if f.sinceSave >= o.SaveEvery {
			if err := f.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// admit checks an event of batch b, notes its offset (live batches move
// *end, the position after the batch) and reports whether it is in this
// consumer's slices.
func (f *follower) admit(b *streamdv1.EventBatch, e *streamdv1.Event, end *uint64) (mine bool, err error) {
	if err := f.checkEvent(e); err != nil {
		return false, err
	}
	if !b.GetReplay() {
		f.lastKnown = max(f.lastKnown, e.GetOffset())
		*end = max(*end, e.GetOffset())
	}
	return f.mine(e), nil
}

// mine reports whether e is in this consumer's slices and not applied
// before a re-split (at or below the offset of its slice's piece).
func (f *follower) mine(e *streamdv1.Event) bool {
	if !f.c.opts.Slices.Contains(e.GetSlice()) {
		return false
	}
	for _, p := range f.parts {
		if p.Slices.Contains(e.GetSlice()) {
			return e.GetOffset() > p.Offset
		}
	}
	return true
}

// pieces splits own, after a re-split, into the stored entries that cover
// it (clipped to own) and the parts none covers (offset 0).
func pieces(own offsets.SliceRange, r offsets.Resolution) []offsets.Entry {
	var out []offsets.Entry
	for _, e := range r.Sources {
		e.Slices = offsets.SliceRange{First: max(e.Slices.First, own.First), Last: min(e.Slices.Last, own.Last)}
		out = append(out, e)
	}
	for _, u := range r.Uncovered {
		out = append(out, offsets.Entry{Key: offsets.Key{Slices: u}})
	}
	return out
}

// savedKeys are the keys under which the position pos is saved: the
// consumer's own range, or its pieces while pos is below one of them (the
// store keeps the higher of pos and a piece's offset). Once pos passes
// them all, the own range is saved (the store merges the pieces into it)
// and the pieces are forgotten.
func (f *follower) savedKeys(pos uint64) []offsets.Key {
	var keys []offsets.Key
	for _, p := range f.parts {
		if p.Offset > pos {
			keys = make([]offsets.Key, len(f.parts))
			for i, p := range f.parts {
				keys[i] = f.key(f.journalID)
				keys[i].Slices = p.Slices
			}
			return keys
		}
	}
	return []offsets.Key{f.key(f.journalID)}
}

// saved notes that the position was saved under keys.
func (f *follower) saved(keys []offsets.Key) {
	if len(keys) == 1 && keys[0].Slices == f.c.opts.Slices {
		f.parts = nil
	}
}

// startKeys are the keys under which a stream started from a policy stores
// its start off: the own range, or, after a re-split, the pieces no entry
// covered (the others keep their offsets, which are above off).
func (f *follower) startKeys(jid []byte, off uint64) []offsets.Key {
	if f.parts == nil {
		return []offsets.Key{f.key(jid)}
	}
	var keys []offsets.Key
	for i, p := range f.parts {
		if p.Offset == 0 {
			k := f.key(jid)
			k.Slices = p.Slices
			keys = append(keys, k)
			f.parts[i].Offset = off
		}
	}
	return keys
}

// wholeBatchAtLeastOnce hands the new events of b to the BatchHandler at
// once, then records them as applied.
func (f *follower) wholeBatchAtLeastOnce(ctx context.Context, b *streamdv1.EventBatch) error {
	o := f.c.opts
	end := f.offset
	var todo []*streamdv1.Event
	next := make(map[entityKey]uint64) // applied seqNrs after this batch
	for _, e := range b.GetEvents() {
		if mine, err := f.admit(b, e, &end); err != nil || !mine {
			if err != nil {
				return err
			}
			continue
		}
		if o.NoDedupe {
			todo = append(todo, e)
			continue
		}
		k := entityKey{e.GetEntityType(), e.GetEntityId()}
		last, ok := next[k]
		if !ok {
			var err error
			if last, err = f.lastApplied(k); err != nil {
				return err
			}
		}
		if e.GetSeqNr() > last {
			todo = append(todo, e)
			next[k] = e.GetSeqNr()
		}
	}
	if len(todo) > 0 {
		// The handler may take the events over; errors name the first as sent.
		first := &streamdv1.Event{Offset: todo[0].GetOffset(), EntityType: todo[0].GetEntityType(), EntityId: todo[0].GetEntityId(), SeqNr: todo[0].GetSeqNr()}
		if err := o.BatchHandler(ctx, todo); err != nil {
			return f.handlerError(ctx, first, err)
		}
	}
	for k, seq := range next {
		f.cache[k], f.pending[k] = seq, seq
	}
	f.sinceSave += len(todo)
	if end > f.offset {
		f.offset, f.dirty = end, true
	}
	if f.sinceSave >= o.SaveEvery {
		return f.flush()
	}
	return nil
}

func (f *follower) batchExactlyOnce(ctx context.Context, b *streamdv1.EventBatch) error {
	end := f.offset // the position after the batch
	var todo []*streamdv1.Event
	for _, e := range b.GetEvents() {
		if mine, err := f.admit(b, e, &end); err != nil || !mine {
			if err != nil {
				return err
			}
			continue
		}
		// Cached seqNrs are committed, so a hit is surely a duplicate; the
		// rest is checked inside the transaction.
		if last, ok := f.cache[entityKey{e.GetEntityType(), e.GetEntityId()}]; ok && e.GetSeqNr() <= last {
			continue
		}
		todo = append(todo, e)
	}
	if len(todo) == 0 {
		if end > f.offset {
			f.offset, f.dirty = end, true // nothing to apply: saved with the next save
		}
		return nil
	}
	if f.c.opts.CommitHandler != nil {
		return f.handOver(ctx, todo, end)
	}
	err := f.commit(ctx, todo, end)
	if errors.Is(err, badger.ErrTxnTooBig) && len(todo) > 1 {
		f.log.Debug("consumer: batch too big for one transaction, committing event by event", "events", len(todo))
		for i, e := range todo {
			pos := f.offset
			if !b.GetReplay() {
				pos = max(pos, e.GetOffset())
			}
			if i == len(todo)-1 {
				pos = end
			}
			if err := f.commit(ctx, todo[i:i+1], pos); err != nil {
				return err
			}
		}
		return nil
	}
	return err
}

// commit runs the TxHandler on events in one transaction that also stores
// their seqNrs and the position pos.
func (f *follower) commit(ctx context.Context, events []*streamdv1.Event, pos uint64) error {
	o := f.c.opts
	keys := f.savedKeys(pos)
	var last, applied map[entityKey]uint64 // last: read or applied in txn; applied: to store
	err := o.Store.Update(func(txn *badger.Txn) error {
		last = make(map[entityKey]uint64, len(events))
		applied = make(map[entityKey]uint64, len(events))
		for _, e := range events {
			ek := entityKey{e.GetEntityType(), e.GetEntityId()}
			seq, ok := last[ek]
			if !ok {
				var err error
				seq, err = o.Store.AppliedSeqNr(txn, o.Name, f.journalID, ek.typ, ek.id)
				if err != nil {
					return storeErrorf("consumer: producer %s: read applied seqNr of %s/%s: %w", f.addr, ek.typ, ek.id, err)
				}
				last[ek] = seq
			}
			if e.GetSeqNr() <= seq {
				continue
			}
			if err := o.TxHandler(ctx, txn, e); err != nil {
				return f.handlerError(ctx, e, err)
			}
			last[ek], applied[ek] = e.GetSeqNr(), e.GetSeqNr()
		}
		list := make([]offsets.Applied, 0, len(applied))
		for ek, seq := range applied {
			list = append(list, offsets.Applied{EntityType: ek.typ, EntityID: ek.id, SeqNr: seq})
		}
		for _, k := range keys {
			if err := o.Store.SaveTxn(txn, k, pos, list); err != nil {
				return storeErrorf("consumer: producer %s: stage the position: %w", f.addr, err)
			}
			list = nil
		}
		return nil
	})
	if err != nil {
		var he *HandlerError
		var se *storeError
		if errors.As(err, &he) || errors.As(err, &se) || errors.Is(err, badger.ErrTxnTooBig) || ctx.Err() != nil {
			return err
		}
		return storeErrorf("consumer: producer %s: commit: %w", f.addr, err)
	}
	if len(f.cache) > maxCachedEntities {
		clear(f.cache)
	}
	for ek, seq := range last {
		f.cache[ek] = seq
	}
	f.saved(keys)
	if pos >= f.offset {
		f.offset, f.dirty = pos, false
	}
	return nil
}

// handOver gives the CommitHandler the events not applied yet (all of them
// with NoDedupe) and the position records to commit with them.
func (f *follower) handOver(ctx context.Context, events []*streamdv1.Event, pos uint64) error {
	o := f.c.opts
	todo := events
	applied := make(map[entityKey]uint64)
	if !o.NoDedupe {
		todo = nil
		for _, e := range events {
			ek := entityKey{e.GetEntityType(), e.GetEntityId()}
			last, ok := applied[ek]
			if !ok {
				var err error
				if last, err = f.lastApplied(ek); err != nil {
					return err
				}
			}
			if e.GetSeqNr() > last {
				todo = append(todo, e)
				applied[ek] = e.GetSeqNr()
			}
		}
	}
	list := make([]offsets.Applied, 0, len(applied))
	for ek, seq := range applied {
		list = append(list, offsets.Applied{EntityType: ek.typ, EntityID: ek.id, SeqNr: seq})
	}
	keys := f.savedKeys(pos)
	var writes []offsets.Write
	for _, k := range keys {
		w, err := o.Store.PositionWrites(k, pos, list)
		if err != nil {
			return storeErrorf("consumer: producer %s: position %d: %w", f.addr, pos, err)
		}
		writes, list = append(writes, w...), nil
	}
	// The handler may take the events over; errors name the first as sent.
	first := &streamdv1.Event{Offset: events[0].GetOffset(), EntityType: events[0].GetEntityType(), EntityId: events[0].GetEntityId(), SeqNr: events[0].GetSeqNr()}
	if err := o.CommitHandler(ctx, todo, writes); err != nil {
		return f.handlerError(ctx, first, err)
	}
	if len(f.cache) > maxCachedEntities {
		clear(f.cache)
	}
	for ek, seq := range applied {
		f.cache[ek] = seq
	}
	f.saved(keys)
	if pos >= f.offset {
		f.offset, f.dirty = pos, false
	}
	return nil
}

// flush saves the position and the pending applied seqNrs, if they moved.
func (f *follower) flush() error {
	if !f.known || (!f.dirty && len(f.pending) == 0) {
		return nil
	}
	applied := make([]offsets.Applied, 0, len(f.pending))
	for k, seq := range f.pending {
		applied = append(applied, offsets.Applied{EntityType: k.typ, EntityID: k.id, SeqNr: seq})
	}
	keys := f.savedKeys(f.offset)
	for _, k := range keys {
		if err := f.c.opts.Store.Save(k, f.offset, applied); err != nil {
			return storeErrorf("consumer: producer %s: save position %d: %w", f.addr, f.offset, err)
		}
		applied = nil
	}
	f.saved(keys)
	f.dirty, f.sinceSave = false, 0
	clear(f.pending)
	if len(f.cache) > maxCachedEntities {
		clear(f.cache)
	}
	return nil
}

// forgetJournal drops what the follower knows of the producer's journal so
// that the next stream starts from the earliest offset of the new one.
func (f *follower) forgetJournal(earliest bool) {
	f.journalID, f.known, f.offset, f.dirty, f.sinceSave, f.lastKnown = nil, false, 0, false, 0, 0
	clear(f.cache)
	clear(f.pending)
	f.forceEarliest = earliest
	f.updateStatus()
}

func (f *follower) updateStatus() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.JournalID, f.st.Offset, f.st.Lag = f.journalID, f.offset, 0
	if f.lastKnown > f.offset {
		f.st.Lag = f.lastKnown - f.offset
	}
}

func (f *follower) setDisconnected(ctx context.Context, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st.Connected = false
	if err != nil && ctx.Err() == nil {
		f.st.LastError = err
	}
}

func (f *follower) status() ProducerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.st
	st.JournalID = bytes.Clone(st.JournalID)
	return st
}

// The journal record: the journal id last seen at a producer address, under
// "consumer/journal/" <uvarint len(name)> <name> "/" <addr> in Store.DB(),
// value: a version byte (1) and the 16-byte id.
const journalRecordVersion = 1

func (f *follower) journalRecordKey() []byte {
	name := f.c.opts.Name
	b := []byte("consumer/journal/")
	b = append(b, []byte(strconv.Itoa(len(name)))...)
	b = append(b, ':')
	b = append(b, name...)
	b = append(b, '/')
	return append(b, f.addr...)
}

func (f *follower) loadJournalRecord() ([]byte, error) {
	var jid []byte
	key := f.journalRecordKey()
	err := f.c.opts.Store.Update(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return err
		}
		if len(v) != 1+offsets.JournalIDLen || v[0] != journalRecordVersion {
			return fmt.Errorf("journal record %q: unknown version or length %d", key, len(v))
		}
		jid = v[1:]
		return nil
	})
	if err != nil {
		return nil, storeErrorf("consumer: producer %s: read the journal id last seen: %w", f.addr, err)
	}
	return jid, nil
}

func (f *follower) saveJournalRecord(jid []byte) error {
	v := append([]byte{journalRecordVersion}, jid...)
	err := f.c.opts.Store.Update(func(txn *badger.Txn) error {
		return txn.Set(f.journalRecordKey(), v)
	})
	if err != nil {
		return storeErrorf("consumer: producer %s: store the journal id %x: %w", f.addr, jid, err)
	}
	return nil
}

// session is one open Subscribe stream.
type session struct {
	f      *follower
	stream grpc.BidiStreamingClient[streamdv1.SubscribeRequest, streamdv1.SubscribeResponse]
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when the stream is over

	sendMu sync.Mutex // one sender at a time (gRPC's rule)

	mu        sync.Mutex
	journalID []byte
	waiters   map[uint64]chan *streamdv1.FilterUpdateResult

	recvErr error // set by receive before it closes its channel
}

// receive reads the stream: filter update results go to their waiters (so
// that UpdateFilter does not wait for the handler), the rest to out.
func (s *session) receive(ctx context.Context, out chan<- *streamdv1.SubscribeResponse) {
	defer close(out)
	for {
		m, err := s.stream.Recv()
		if err != nil {
			s.recvErr = err
			return
		}
		if r := m.GetFilterUpdateResult(); r != nil {
			s.deliver(r)
			continue
		}
		select {
		case out <- m:
		case <-ctx.Done():
			return
		}
	}
}

func (s *session) send(req *streamdv1.SubscribeRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(req)
}

func (s *session) restart(reason string) { s.cancel(&restartError{reason: reason}) }

func (s *session) setJournalID(jid []byte) {
	s.mu.Lock()
	s.journalID = jid
	s.mu.Unlock()
}

func (s *session) expect(id uint64) chan *streamdv1.FilterUpdateResult {
	ch := make(chan *streamdv1.FilterUpdateResult, 1)
	s.mu.Lock()
	s.waiters[id] = ch
	s.mu.Unlock()
	return ch
}

func (s *session) forget(id uint64) {
	s.mu.Lock()
	delete(s.waiters, id)
	s.mu.Unlock()
}

func (s *session) deliver(r *streamdv1.FilterUpdateResult) {
	s.mu.Lock()
	ch := s.waiters[r.GetId()]
	delete(s.waiters, r.GetId())
	s.mu.Unlock()
	if ch == nil {
		s.f.log.Debug("consumer: filter update result nobody waits for", "id", r.GetId())
		return
	}
	ch <- r
}

// replayFromLastApplied fills in, for this stream's journal, the replay of
// includes of exact entity ids that ask none.
func (s *session) replayFromLastApplied(add []*streamdv1.FilterCriterion, entityType string) []*streamdv1.FilterCriterion {
	s.mu.Lock()
	jid := s.journalID
	s.mu.Unlock()
	o := s.f.c.opts
	out := make([]*streamdv1.FilterCriterion, len(add))
	for i, c := range add {
		if c.GetAction() == streamdv1.FilterAction_FILTER_ACTION_INCLUDE &&
			c.GetField() == streamdv1.FilterField_FILTER_FIELD_ENTITY_ID && c.GetReplayFromSeqNr() == 0 {
			c = proto.CloneOf(c)
			var last uint64
			if jid != nil {
				var err error
				if last, err = o.Store.AppliedSeqNr(nil, o.Name, jid, entityType, c.GetValue()); err != nil {
					s.f.log.Warn("consumer: read applied seqNr for a replay, replaying the whole history", "entity", c.GetValue(), "error", err)
					last = 0
				}
			}
			c.ReplayFromSeqNr = last + 1
		}
		out[i] = c
	}
	return out
}

func codeOf(c int32) codes.Code { return codes.Code(uint32(c)) }

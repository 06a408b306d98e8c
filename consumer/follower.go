package consumer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// follower follows one producer: it connects, resumes, dedupes, calls the
// handler and saves the offset, reconnecting with backoff.
type follower struct {
	c    *Consumer
	addr string
	// slices are the follower's part of Options.Slices (all of it with
	// one stream per producer, Options.Streams).
	slices offsets.SliceRange
	log    *slog.Logger
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
	journalID     []byte          // journal of the last Hello (nil: none yet)
	recorded      []byte          // journal id in the journal record
	known         bool            // offset is a position in journalID
	offset        uint64          // last offset processed
	dirty         bool            // offset moved since the last save
	stored        uint64          // the offset last saved: what report sends
	pending       []pendingEntity // applied since the last save began
	sinceSave     int
	inflight      *save                  // the save running in the background, nil if none
	saveDone      chan error             // its result
	again         bool                   // another save was asked for while inflight ran
	cache         map[entityKey]*applied // last applied seqNr, saved or pending
	lastKnown     uint64                 // the producer's last offset, as far as we know
	forceEarliest bool                   // after a journal change with RestartFromEarliest
	// parts, after a re-split, are the pieces of slices that were
	// stored apart (each with the offset it had reached, 0 for one never
	// consumed), while the offset is below some of them: events at or
	// below their piece's offset were applied already, and the offset is
	// saved per piece so that this survives a restart (see savedKeys).
	parts []offsets.Entry
	// The stored offset last told the producer of the open stream
	// (OffsetReport), and when.
	reportedOffset uint64
	reportedAt     time.Time

	mu   sync.Mutex // guards st and sess
	st   ProducerStatus
	sess *session // the open stream (Init sent), nil between streams
}

func newFollower(c *Consumer, addr string, slices offsets.SliceRange) *follower {
	log := c.log.With("producer", addr)
	if c.opts.Streams > 1 {
		log = log.With("slices", slices.String())
	}
	return &follower{
		c:        c,
		addr:     addr,
		slices:   slices,
		log:      log,
		cache:    map[entityKey]*applied{},
		saveDone: make(chan error, 1),
		st:       ProducerStatus{Addr: addr, Target: addr},
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
	// A previous Run saved what it handled: the store says where to resume,
	// an operator may have moved the offset since (back, or off an offset
	// the producer refused).
	if !f.dirty && len(f.pending) == 0 {
		f.known = false
	}

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
			// pod): follow whatever journal it serves, from its own offset.
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
		errors.Is(err, ErrOutOfRange) || errors.Is(err, ErrAheadOfJournal) || errors.Is(err, ErrInvalid) {
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
	return offsets.Key{Consumer: f.c.opts.Name, JournalID: journalID, Slices: f.slices}
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
		return start{}, storeErrorf("consumer: producer %s: read the offset: %w", f.addr, err)
	}
	f.parts = nil
	if r.Found && !r.Exact && !r.Offset.Pending() {
		f.parts = pieces(f.slices, r)
	}
	switch {
	case !r.Found:
		return st, nil
	case r.Offset.Pending():
		st.policy, st.startTime, st.reset = r.Offset.Start, r.Offset.StartTime, true
		return st, nil
	case len(r.Uncovered) > 0 && o.StartPolicy == streamdv1.StartPolicy_START_POLICY_EARLIEST:
		// Slices never consumed before: start them (and, duplicates aside,
		// the others) from the earliest offset.
		f.log.Info("consumer: part of the slice range has no offset, starting from the earliest offset",
			"uncovered", fmt.Sprint(r.Uncovered))
		st.policy, st.expect = streamdv1.StartPolicy_START_POLICY_EARLIEST, jid
		return st, nil
	}
	off := r.Offset.Offset
	if f.known && bytes.Equal(f.journalID, jid) && f.offset > off {
		off = f.offset // handled in memory, the save failed or is pending
	}
	st.position = &streamdv1.Position{JournalId: jid, Offset: off}
	st.stored, st.expect = r.Offset.Offset, jid
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
		SliceRange:   f.slices.Proto(),
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

// forgetJournal drops what the follower knows of the producer's journal so
// that the next stream starts from the earliest offset of the new one.
func (f *follower) forgetJournal(earliest bool) {
	f.journalID, f.known, f.offset, f.dirty, f.sinceSave, f.lastKnown, f.stored = nil, false, 0, false, 0, 0, 0
	f.forgetApplied()
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

// loadJournalRecord returns the journal id last seen at the producer (nil
// if none was stored).
func (f *follower) loadJournalRecord() ([]byte, error) {
	jid, err := f.c.opts.Store.LastJournalID(f.c.opts.Name, f.addr)
	if err != nil {
		return nil, storeErrorf("consumer: producer %s: read the journal id last seen: %w", f.addr, err)
	}
	return jid, nil
}

func (f *follower) saveJournalRecord(jid []byte) error {
	if err := f.c.opts.Store.SaveLastJournalID(f.c.opts.Name, f.addr, jid); err != nil {
		return storeErrorf("consumer: producer %s: store the journal id %x: %w", f.addr, jid, err)
	}
	return nil
}

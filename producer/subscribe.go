package producer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// errStreamShutdown ends streams when the producer shuts down.
var errStreamShutdown = status.Error(codes.Unavailable, "producer: shutting down; resume from your stored position")

// replayChunk bounds one replay read, so replays interleave with live events.
const replayChunk = 100

// subscription is one open Subscribe stream.
type subscription struct {
	s            *Server
	st           streamdv1.EventStreamService_SubscribeServer
	stream       *stream
	consumer     string
	first, last  uint32 // slice range, inclusive
	criteria     []*streamdv1.FilterCriterion
	filter       *filters.Filter
	cursor       *journal.Cursor
	replays      []*replay // running, at most MaxReplays
	queued       []*replay
	replaying    map[string]*replay // running or queued, by entity
	reported     uint64             // highest offset sent or covered by Progress
	reader       readerKey          // its record in Server.readers
	pending      uint64             // highest offset read
	lastProgress time.Time
}

// replay sends one entity's history from a seqNr, below the live position.
type replay struct {
	entityType, entityID string
	next                 uint64 // next seqNr
	upTo                 uint64 // offsets from here on come live
}

// Subscribe serves one consumer stream. See the package doc for guarantees.
func (s *Server) Subscribe(st streamdv1.EventStreamService_SubscribeServer) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	init := first.GetInit()
	if init == nil {
		return invalidArg("the first message of Subscribe must be Init")
	}
	sub, hello, err := s.open(st, init)
	if err != nil {
		return err
	}
	if err := st.Send(&streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Hello{Hello: hello}}); err != nil {
		return err
	}
	if o := s.opts.Observer; o != nil {
		o.StreamOpened(init.Stream, init.ConsumerName)
		defer o.StreamClosed(init.Stream, init.ConsumerName)
	}
	stored := sub.reported
	if init.Position != nil {
		stored = init.Position.Offset
	}
	sub.reader = s.readers.opened(sub, remoteAddr(sub), stored)
	defer func() {
		s.readers.closed(sub.reader)
		s.readers.maybeSave()
	}()
	ctx, cancel := context.WithCancel(st.Context())
	defer cancel()
	reqs := make(chan *streamdv1.SubscribeRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return sub.run(ctx, reqs, recvErr)
}

// open validates Init and positions the stream.
func (s *Server) open(st streamdv1.EventStreamService_SubscribeServer, init *streamdv1.Init) (*subscription, *streamdv1.Hello, error) {
	if init.Stream == "" {
		init.Stream = DefaultStream
	}
	str := s.streams[init.Stream]
	if str == nil {
		return nil, nil, status.Errorf(codes.NotFound, "producer: unknown stream %q (this producer offers: %s)",
			init.Stream, strings.Join(s.StreamNames(), ", "))
	}
	if init.ConsumerName == "" {
		return nil, nil, invalidArg("Init.consumer_name is empty")
	}
	sub := &subscription{s: s, st: st, stream: str, consumer: init.ConsumerName, first: 0, last: journal.Slices - 1}
	if r := init.SliceRange; r != nil {
		if r.First > r.Last || r.Last >= journal.Slices {
			return nil, nil, invalidArg("Init.slice_range %d-%d: want first <= last <= %d", r.First, r.Last, journal.Slices-1)
		}
		sub.first, sub.last = r.First, r.Last
	}
	f, err := filters.Compile(init.Filter, s.opts.FilterLimits)
	if err != nil {
		return nil, nil, invalidArg("Init.filter: %v", err)
	}
	sub.criteria, sub.filter = init.Filter, f

	info := s.j.Info()
	var start uint64
	switch {
	case init.Position != nil:
		if !bytes.Equal(init.Position.JournalId, info.JournalID) {
			return nil, nil, journalIDMismatch(init.Position.JournalId, info.JournalID)
		}
		start = init.Position.Offset + 1
		if init.Position.Offset > info.LastOffset {
			// Offsets past the end would be reused by new events and skipped.
			return nil, nil, status.Errorf(codes.FailedPrecondition,
				"producer: position %d is ahead of journal %x, whose last offset is %d: was the journal restored from an older copy? reset the consumer's position",
				init.Position.Offset, info.JournalID, info.LastOffset)
		}
		if start < info.FirstOffset {
			return nil, nil, status.Errorf(codes.OutOfRange,
				"producer: position %d is below the retention floor; first available offset is %d", init.Position.Offset, info.FirstOffset)
		}
	case init.StartPolicy == streamdv1.StartPolicy_START_POLICY_EARLIEST:
		start = info.FirstOffset
	case init.StartPolicy == streamdv1.StartPolicy_START_POLICY_LATEST:
		start = info.LastOffset + 1
	case init.StartPolicy == streamdv1.StartPolicy_START_POLICY_AT_TIME:
		if start, err = s.j.OffsetAt(time.Unix(0, init.StartTimeUnixNano)); err != nil {
			return nil, nil, toStatus(err)
		}
	default:
		return nil, nil, invalidArg("Init needs a position or a start_policy")
	}
	// Each batch is sent before the next is read (run).
	sub.cursor = s.j.NewCursor(start).ReuseBuffers()
	sub.reported, sub.pending = start-1, start-1
	// Includes that ask for history replay it on every (re)connect, so a
	// replay cut short by a disconnect resumes; the consumer drops what it
	// already applied.
	sub.startReplays(init.Filter)
	return sub, &streamdv1.Hello{
		JournalId: info.JournalID, FirstOffset: info.FirstOffset, LastOffset: info.LastOffset, StartOffset: start,
		AcceptsOffsetReports: true,
	}, nil
}

// run is the one goroutine between the journal and gRPC for this stream:
// the journal's release wakes it (the live ring's notify channel), and it
// reads the committed records and sends them itself, in their stored
// encoding. The only hand-off after it is gRPC's own writer goroutine.
func (sub *subscription) run(ctx context.Context, reqs <-chan *streamdv1.SubscribeRequest, recvErr <-chan error) error {
	opts := sub.s.opts
	buf := make([]journal.Record, 0, opts.BatchEvents)
	for {
		select {
		case r := <-reqs:
			if err := sub.handle(r); err != nil {
				return err
			}
			continue
		case <-sub.s.shutdown:
			return errStreamShutdown
		case <-ctx.Done():
			return toStatus(ctx.Err())
		default:
		}
		evs, wait, err := sub.cursor.Read(opts.BatchEvents, buf[:0])
		if err != nil {
			return toStatus(err)
		}
		if len(evs) > 0 {
			if err := sub.sendLive(evs); err != nil {
				return err
			}
			if err := sub.replayStep(); err != nil {
				return err
			}
			continue
		}
		if len(sub.replays) > 0 {
			if err := sub.replayStep(); err != nil {
				return err
			}
			continue
		}
		// Caught up over events it filtered away: report them, but at most
		// every ProgressInterval. A live stream that filters every event (a
		// replication between regions) gets here after each batch, and a
		// consumer may store its offset at each report.
		var progressDue <-chan time.Time
		if sub.pending > sub.reported {
			if left := opts.ProgressInterval - time.Since(sub.lastProgress); left > 0 {
				progressDue = time.After(left)
			} else if err := sub.sendProgress(); err != nil {
				return err
			}
		}
		select {
		case <-wait:
		case <-progressDue:
		case r := <-reqs:
			if err := sub.handle(r); err != nil {
				return err
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil // the consumer closed its side
			}
			return err
		case <-ctx.Done():
			return toStatus(ctx.Err())
		case <-sub.s.shutdown:
			return errStreamShutdown
		}
	}
}

// sendLive filters a run of journal records and sends what is selected, in
// batches bounded by BatchBytes. Events go out as they are stored, without
// being encoded again, unless the stream transforms them; they are decoded
// only when something must look inside them.
func (sub *subscription) sendLive(recs []journal.Record) error {
	now := sub.s.opts.Now()
	inspect := sub.inspects()
	transform := sub.stream.def.Transform != nil
	var raw [][]byte
	var out []*streamdv1.Event
	size, filtered, last := 0, 0, uint64(0)
	flush := func() error {
		if len(raw)+len(out) == 0 {
			return nil
		}
		var err error
		if transform {
			err = sub.send(&streamdv1.EventBatch{Events: out}, size, filtered)
		} else {
			err = sub.sendRaw(raw, size, filtered)
		}
		sub.report(last)
		raw, out, size, filtered = nil, nil, 0, 0
		return err
	}
	// A stream that does not transform looks at each event only here, and
	// sends its stored encoding: one scratch event serves the records that
	// hold no decoded event (those read from Badger).
	var scratch streamdv1.Event
	for i := range recs {
		rec := &recs[i]
		var pub *streamdv1.Event
		if inspect {
			var (
				e   *streamdv1.Event
				err error
			)
			if transform {
				e, err = rec.Event()
			} else {
				e, err = rec.Peek(&scratch)
			}
			if err != nil {
				return toStatus(err)
			}
			if !sub.selects(e, now) {
				filtered++
				continue
			}
			if transform {
				if pub = sub.stream.public(e); pub == nil {
					filtered++
					continue
				}
			}
			// An entity's replayed history must reach the consumer before its
			// newer live events, or the consumer's seqNr dedupe would drop it.
			if r := sub.replaying[journal.EntityKey(e.EntityType, e.EntityId)]; r != nil {
				if err := flush(); err != nil {
					return err
				}
				if err := sub.drainReplay(r); err != nil {
					return err
				}
			}
		}
		n := len(rec.Raw)
		if transform {
			n = proto.Size(pub)
		}
		if size+n > sub.s.opts.BatchBytes && size > 0 {
			if err := flush(); err != nil {
				return err
			}
		}
		if transform {
			out = append(out, pub)
		} else {
			raw = append(raw, rec.Raw)
		}
		size += n
		last = rec.Offset
	}
	if err := flush(); err != nil {
		return err
	}
	if filtered > 0 {
		sub.observeSent(0, 0, filtered)
	}
	sub.pending = recs[len(recs)-1].Offset
	if sub.pending > sub.reported && time.Since(sub.lastProgress) >= sub.s.opts.ProgressInterval {
		return sub.sendProgress()
	}
	return nil
}

// inspects reports whether events must be decoded to be selected: a slice
// range, a selection or filter, a transformation or a pending replay.
func (sub *subscription) inspects() bool {
	return sub.first != 0 || sub.last != journal.Slices-1 || sub.stream.types != nil ||
		len(sub.stream.def.Filter) > 0 || sub.stream.def.Transform != nil ||
		len(sub.criteria) > 0 || len(sub.replaying) > 0
}

// selects: slice range, then the stream's selection (which always wins),
// then the consumer's filter.
func (sub *subscription) selects(e *streamdv1.Event, now time.Time) bool {
	return e.Slice >= sub.first && e.Slice <= sub.last && sub.stream.offers(e, now) && sub.filter.Match(e, now)
}

func (sub *subscription) send(b *streamdv1.EventBatch, size, filtered int) error {
	sub.observeSent(len(b.Events), size, filtered)
	return sub.st.Send(&streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Events{Events: b}})
}

// sendRaw sends events in their stored encoding, as a wire-identical batch.
func (sub *subscription) sendRaw(raw [][]byte, size, filtered int) error {
	sub.observeSent(len(raw), size, filtered)
	return sub.st.SendMsg(&streamdv1.RawSubscribeResponse{Response: &streamdv1.RawSubscribeResponse_Events{
		Events: &streamdv1.RawEventBatch{Events: raw}}})
}

func (sub *subscription) observeSent(events, size, filtered int) {
	if o := sub.s.opts.Observer; o != nil {
		o.Sent(sub.stream.def.Name, sub.consumer, events, size, filtered)
	}
}

// report moves the highest offset sent or covered by Progress.
func (sub *subscription) report(offset uint64) {
	if offset <= sub.reported {
		return
	}
	sub.reported = offset
	if o := sub.s.opts.Observer; o != nil {
		o.Progressed(sub.stream.def.Name, sub.consumer, offset)
	}
	sub.s.readers.update(sub.reader, func(r *Reader) { r.Delivered = offset })
	sub.s.readers.maybeSave()
}

func (sub *subscription) sendProgress() error {
	sub.report(sub.pending)
	sub.lastProgress = time.Now()
	return sub.st.Send(&streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Progress{
		Progress: &streamdv1.Progress{Offset: sub.pending}}})
}

// handle applies a FilterUpdate or queues a Replay.
func (sub *subscription) handle(r *streamdv1.SubscribeRequest) error {
	switch req := r.Request.(type) {
	case *streamdv1.SubscribeRequest_FilterUpdate:
		return sub.updateFilter(req.FilterUpdate)
	case *streamdv1.SubscribeRequest_Replay:
		rp := req.Replay
		if rp.EntityType == "" || rp.EntityId == "" {
			return invalidArg("Replay needs entity_type and entity_id")
		}
		sub.startReplay(rp.EntityType, rp.EntityId, rp.FromSeqNr)
		return nil
	case *streamdv1.SubscribeRequest_OffsetReport:
		off := req.OffsetReport.GetStoredOffset()
		if off > sub.reported {
			return invalidArg("OffsetReport.stored_offset %d is beyond what this stream delivered (%d)", off, sub.reported)
		}
		sub.s.readers.update(sub.reader, func(r *Reader) { r.Stored = off })
		sub.s.readers.maybeSave()
		return nil
	case *streamdv1.SubscribeRequest_Init:
		return invalidArg("Init may only be sent once, first")
	}
	return invalidArg("empty SubscribeRequest")
}

// updateFilter swaps the filter from the next event on; a bad update is
// refused with InvalidArgument in FilterUpdateResult and changes nothing.
func (sub *subscription) updateFilter(u *streamdv1.FilterUpdate) error {
	criteria := filters.Apply(sub.criteria, u.Add, u.Remove)
	f, err := filters.Compile(criteria, sub.s.opts.FilterLimits)
	result := &streamdv1.FilterUpdateResult{Id: u.Id}
	if err != nil {
		result.Code, result.Message = int32(codes.InvalidArgument), err.Error()
	} else {
		sub.criteria, sub.filter = criteria, f
		sub.startReplays(u.Add)
		sub.s.readers.update(sub.reader, func(r *Reader) { r.Filter = criteria })
	}
	return sub.st.Send(&streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_FilterUpdateResult{
		FilterUpdateResult: result}})
}

// startReplays starts the replays that include criteria ask for.
func (sub *subscription) startReplays(criteria []*streamdv1.FilterCriterion) {
	for _, c := range criteria {
		if c.ReplayFromSeqNr > 0 && c.Action == streamdv1.FilterAction_FILTER_ACTION_INCLUDE &&
			c.Field == streamdv1.FilterField_FILTER_FIELD_ENTITY_ID {
			for _, t := range sub.stream.entityTypes(sub.s.j.EntityTypes()) {
				sub.startReplay(t, c.Value, c.ReplayFromSeqNr)
			}
		}
	}
}

func (sub *subscription) startReplay(entityType, entityID string, from uint64) {
	key := journal.EntityKey(entityType, entityID)
	if r := sub.replaying[key]; r != nil {
		r.next = min(r.next, max(from, 1)) // already pending: widen it
		return
	}
	r := &replay{entityType: entityType, entityID: entityID, next: max(from, 1), upTo: sub.cursor.Next()}
	if sub.replaying == nil {
		sub.replaying = map[string]*replay{}
	}
	sub.replaying[key] = r
	if len(sub.replays) < sub.s.opts.MaxReplays {
		sub.replays = append(sub.replays, r)
	} else {
		sub.queued = append(sub.queued, r)
	}
}

// replayStep sends one chunk of the oldest running replay.
func (sub *subscription) replayStep() error {
	if len(sub.replays) == 0 {
		return nil
	}
	r := sub.replays[0]
	done, err := sub.replayChunk(r)
	if done {
		sub.finishReplay(r)
	}
	return err
}

// drainReplay sends the rest of a replay now, queued or running.
func (sub *subscription) drainReplay(r *replay) error {
	for {
		done, err := sub.replayChunk(r)
		if err != nil {
			return err
		}
		if done {
			sub.finishReplay(r)
			return nil
		}
	}
}

func (sub *subscription) finishReplay(r *replay) {
	delete(sub.replaying, journal.EntityKey(r.entityType, r.entityID))
	drop := func(rs []*replay) []*replay {
		return slices.DeleteFunc(rs, func(x *replay) bool { return x == r })
	}
	sub.replays, sub.queued = drop(sub.replays), drop(sub.queued)
	for len(sub.replays) < sub.s.opts.MaxReplays && len(sub.queued) > 0 {
		sub.replays = append(sub.replays, sub.queued[0])
		sub.queued = sub.queued[1:]
	}
}

// replayChunk sends the next chunk of a replay; done when nothing is left
// below the offset where the live stream took over.
func (sub *subscription) replayChunk(r *replay) (done bool, err error) {
	evs, err := sub.s.j.ReadEntity(r.entityType, r.entityID, r.next, replayChunk, nil)
	if err != nil {
		return true, toStatus(err)
	}
	now := sub.s.opts.Now()
	var out []*streamdv1.Event
	size := 0
	done = len(evs) < replayChunk
	for _, e := range evs {
		if e.Offset >= r.upTo {
			done = true
			break
		}
		r.next = e.SeqNr + 1
		// Replayed history passes the same selection as live events: slices,
		// the stream's selection, and the consumer's filter (its excludes win).
		if !sub.selects(e, now) {
			continue
		}
		if pub := sub.stream.public(e); pub != nil {
			out = append(out, pub)
			size += proto.Size(pub)
		}
	}
	if len(out) == 0 {
		return done, nil
	}
	return done, sub.send(&streamdv1.EventBatch{Events: out, Replay: true}, size, 0)
}

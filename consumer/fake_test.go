package consumer

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// fakeProducer is a small EventStreamService that follows the Subscribe
// protocol: Init first, Hello, catch-up and live events in offset order
// (filtered by slice range and filter), Progress when idle, filter updates
// answered by id, replays in batches marked replay, and the error codes of
// the real producer. Tests can inject duplicate batches, disconnects, a
// replaced journal and refused filter updates.
type fakeProducer struct {
	streamdv1.UnimplementedEventStreamServiceServer

	streams map[string]bool // stream names offered; set before serving

	mu        sync.Mutex
	journalID []byte
	first     uint64             // retention floor: offsets below are gone
	events    []*streamdv1.Event // events[i].Offset == i+1
	seqNrs    map[string]uint64  // per entity type NUL id
	changed   chan struct{}      // closed on every append or journal change
	kill      chan struct{}      // closed by disconnectAll
	batchSize int                // events per catch-up batch
	dup       bool               // send every event batch twice
	noSlices  bool               // ignore the slice range (a faulty producer)
	failAfter map[int]int        // connection number → events it sends before Unavailable
	silent    map[int]bool       // connection number → never answers Init
	refuse    string             // non-empty: refuse filter updates with this message
	reports   bool               // Hello says it takes OffsetReport (else one ends the stream)
	stored    [][2]uint64        // the offsets reported, in order, each with its connection number
	inits     []*streamdv1.Init  // every Init received, in order
	updates   []*streamdv1.FilterUpdate
	replays   []*streamdv1.Replay
	open      int // streams open now
}

func newFakeProducer() *fakeProducer {
	return &fakeProducer{
		streams:   map[string]bool{"": true, "orders": true},
		journalID: newJournalID(),
		first:     1,
		seqNrs:    map[string]uint64{},
		changed:   make(chan struct{}),
		kill:      make(chan struct{}),
		silent:    map[int]bool{},
		batchSize: 100,
		failAfter: map[int]int{},
	}
}

func newJournalID() []byte {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	return id
}

// publish appends one event per entity id (type "car" unless it is given as
// "type/id"), assigning offset, seqNr and slice like the journal.
func (p *fakeProducer) publish(entities ...string) []*streamdv1.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*streamdv1.Event
	for _, ent := range entities {
		typ, id := "car", ent
		if i := bytes.IndexByte([]byte(ent), '/'); i >= 0 {
			typ, id = ent[:i], ent[i+1:]
		}
		p.seqNrs[typ+"\x00"+id]++
		e := &streamdv1.Event{
			Offset: uint64(len(p.events)) + 1, EntityType: typ, EntityId: id,
			SeqNr: p.seqNrs[typ+"\x00"+id], Slice: journal.SliceOf(id), EventType: "Tick",
		}
		p.events = append(p.events, e)
		out = append(out, e)
	}
	close(p.changed)
	p.changed = make(chan struct{})
	return out
}

// replaceJournal gives the producer a new, empty journal; open streams end
// with Unavailable.
func (p *fakeProducer) replaceJournal() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.journalID, p.events, p.seqNrs, p.first = newJournalID(), nil, map[string]uint64{}, 1
	close(p.changed)
	p.changed = make(chan struct{})
	return p.journalID
}

func (p *fakeProducer) disconnectAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	close(p.kill)
	p.kill = make(chan struct{})
}

func (p *fakeProducer) set(fn func(p *fakeProducer)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fn(p)
}

func (p *fakeProducer) jid() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.journalID
}

func (p *fakeProducer) initList() []*streamdv1.Init {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*streamdv1.Init(nil), p.inits...)
}

func (p *fakeProducer) updateList() []*streamdv1.FilterUpdate {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*streamdv1.FilterUpdate(nil), p.updates...)
}

func (p *fakeProducer) replayList() []*streamdv1.Replay {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*streamdv1.Replay(nil), p.replays...)
}

func (p *fakeProducer) openStreams() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

func (p *fakeProducer) JournalInfo(context.Context, *streamdv1.JournalInfoRequest) (*streamdv1.JournalInfoResponse, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return &streamdv1.JournalInfoResponse{
		JournalId: p.journalID, FirstOffset: p.first, LastOffset: uint64(len(p.events)), RetentionFloor: p.first,
	}, nil
}

// fakeSub is the state of one Subscribe stream.
type fakeSub struct {
	p           *fakeProducer
	st          grpc.BidiStreamingServer[streamdv1.SubscribeRequest, streamdv1.SubscribeResponse]
	conn        int // connection number
	first, last uint32
	criteria    []*streamdv1.FilterCriterion
	filter      *filters.Filter
	next        uint64 // next offset to read
}

func (p *fakeProducer) Subscribe(st grpc.BidiStreamingServer[streamdv1.SubscribeRequest, streamdv1.SubscribeResponse]) error {
	req, err := st.Recv()
	if err != nil {
		return err
	}
	init := req.GetInit()
	if init == nil {
		return status.Error(codes.InvalidArgument, "fake: the first message of Subscribe must be Init")
	}
	p.mu.Lock()
	conn := len(p.inits)
	p.inits = append(p.inits, proto.CloneOf(init))
	jid, floor, last := p.journalID, p.first, uint64(len(p.events))
	reports := p.reports
	limit, limited := p.failAfter[conn]
	silent := p.silent[conn]
	p.mu.Unlock()
	if silent {
		<-st.Context().Done()
		return st.Context().Err()
	}

	if !p.streams[init.GetStream()] {
		return status.Errorf(codes.NotFound, "fake: unknown stream %q", init.GetStream())
	}
	if init.GetConsumerName() == "" {
		return status.Error(codes.InvalidArgument, "fake: Init.consumer_name is empty")
	}
	sub := &fakeSub{p: p, st: st, conn: conn, first: 0, last: journal.Slices - 1}
	if r := init.GetSliceRange(); r != nil {
		if r.First > r.Last || r.Last >= journal.Slices {
			return status.Errorf(codes.InvalidArgument, "fake: Init.slice_range %d-%d", r.First, r.Last)
		}
		sub.first, sub.last = r.First, r.Last
	}
	if sub.filter, err = filters.Compile(init.GetFilter(), filters.Limits{}); err != nil {
		return status.Errorf(codes.InvalidArgument, "fake: Init.filter: %v", err)
	}
	sub.criteria = init.GetFilter()
	switch {
	case init.GetPosition() != nil:
		if !bytes.Equal(init.GetPosition().GetJournalId(), jid) {
			return status.Errorf(codes.FailedPrecondition,
				"fake: position is for journal %x, this producer's journal is %x", init.GetPosition().GetJournalId(), jid)
		}
		sub.next = init.GetPosition().GetOffset() + 1
		if init.GetPosition().GetOffset() > last {
			return status.Errorf(codes.FailedPrecondition,
				"fake: position %d is ahead of journal %x, whose last offset is %d", init.GetPosition().GetOffset(), jid, last)
		}
		if sub.next < floor {
			return status.Errorf(codes.OutOfRange,
				"fake: position %d is below the retention floor; first available offset is %d", init.GetPosition().GetOffset(), floor)
		}
	case init.GetStartPolicy() == streamdv1.StartPolicy_START_POLICY_EARLIEST:
		sub.next = floor
	case init.GetStartPolicy() == streamdv1.StartPolicy_START_POLICY_LATEST:
		sub.next = last + 1
	default:
		return status.Error(codes.InvalidArgument, "fake: Init needs a position or a start_policy")
	}
	hello := &streamdv1.Hello{JournalId: jid, FirstOffset: floor, LastOffset: last, StartOffset: sub.next, AcceptsOffsetReports: reports}
	if err := st.Send(&streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Hello{Hello: hello}}); err != nil {
		return err
	}
	p.mu.Lock()
	p.open++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.open--
		p.mu.Unlock()
	}()

	ctx, cancel := context.WithCancel(st.Context())
	defer cancel()
	reqs := make(chan *streamdv1.SubscribeRequest)
	recvErr := make(chan error, 1)
	go func() { // ends when the stream does
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

	sent, progress := 0, false
	for {
		select {
		case r := <-reqs:
			if err := sub.handle(r); err != nil {
				return err
			}
			continue
		default:
		}
		p.mu.Lock()
		var batch []*streamdv1.Event
		if sub.next >= 1 && sub.next <= uint64(len(p.events)) {
			batch = p.events[sub.next-1 : min(uint64(len(p.events)), sub.next-1+uint64(p.batchSize))]
		}
		replaced := !bytes.Equal(p.journalID, jid)
		changed, kill, dup, noSlices := p.changed, p.kill, p.dup, p.noSlices
		p.mu.Unlock()
		if replaced {
			return status.Error(codes.Unavailable, "fake: journal replaced, reconnect")
		}
		if len(batch) > 0 {
			var out []*streamdv1.Event
			for _, e := range batch {
				if (noSlices || sub.inSlices(e)) && sub.filter.Match(e, time.Now()) {
					out = append(out, proto.CloneOf(e))
				}
			}
			fail := limited && sent+len(out) >= limit
			if fail {
				out = out[:limit-sent]
			}
			if len(out) > 0 {
				if err := sub.sendEvents(out, false); err != nil {
					return err
				}
				if dup {
					if err := sub.sendEvents(out, false); err != nil {
						return err
					}
				}
				sent += len(out)
			}
			if fail {
				return status.Error(codes.Unavailable, "fake: injected disconnect")
			}
			sub.next = batch[len(batch)-1].Offset + 1
			progress = true
			continue
		}
		if progress {
			progress = false
			if err := st.Send(&streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Progress{
				Progress: &streamdv1.Progress{Offset: sub.next - 1}}}); err != nil {
				return err
			}
		}
		select {
		case <-changed:
		case <-kill:
			return status.Error(codes.Unavailable, "fake: injected disconnect")
		case r := <-reqs:
			if err := sub.handle(r); err != nil {
				return err
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *fakeSub) inSlices(e *streamdv1.Event) bool { return e.Slice >= s.first && e.Slice <= s.last }

func (s *fakeSub) sendEvents(evs []*streamdv1.Event, replay bool) error {
	return s.st.Send(&streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Events{
		Events: &streamdv1.EventBatch{Events: evs, Replay: replay}}})
}

func (s *fakeSub) handle(r *streamdv1.SubscribeRequest) error {
	switch req := r.GetRequest().(type) {
	case *streamdv1.SubscribeRequest_FilterUpdate:
		u := req.FilterUpdate
		s.p.mu.Lock()
		s.p.updates = append(s.p.updates, proto.CloneOf(u))
		refuse := s.p.refuse
		s.p.mu.Unlock()
		res := &streamdv1.FilterUpdateResult{Id: u.GetId()}
		criteria := filters.Apply(s.criteria, u.GetAdd(), u.GetRemove())
		f, err := filters.Compile(criteria, filters.Limits{})
		switch {
		case refuse != "":
			res.Code, res.Message = int32(codes.InvalidArgument), refuse
		case err != nil:
			res.Code, res.Message = int32(codes.InvalidArgument), err.Error()
		default:
			s.criteria, s.filter = criteria, f
		}
		if err := s.st.Send(&streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_FilterUpdateResult{
			FilterUpdateResult: res}}); err != nil {
			return err
		}
		if res.Code != 0 {
			return nil
		}
		for _, c := range u.GetAdd() {
			if c.GetReplayFromSeqNr() > 0 && c.GetAction() == streamdv1.FilterAction_FILTER_ACTION_INCLUDE &&
				c.GetField() == streamdv1.FilterField_FILTER_FIELD_ENTITY_ID {
				if err := s.replay("", c.GetValue(), c.GetReplayFromSeqNr()); err != nil {
					return err
				}
			}
		}
		return nil
	case *streamdv1.SubscribeRequest_Replay:
		rp := req.Replay
		s.p.mu.Lock()
		s.p.replays = append(s.p.replays, proto.CloneOf(rp))
		s.p.mu.Unlock()
		if rp.GetEntityType() == "" || rp.GetEntityId() == "" {
			return status.Error(codes.InvalidArgument, "fake: Replay needs entity_type and entity_id")
		}
		return s.replay(rp.GetEntityType(), rp.GetEntityId(), rp.GetFromSeqNr())
	case *streamdv1.SubscribeRequest_OffsetReport:
		s.p.mu.Lock()
		defer s.p.mu.Unlock()
		if !s.p.reports {
			return status.Error(codes.InvalidArgument, "fake: an OffsetReport, but Hello did not accept them")
		}
		s.p.stored = append(s.p.stored, [2]uint64{uint64(s.conn), req.OffsetReport.GetStoredOffset()})
		return nil
	case *streamdv1.SubscribeRequest_Init:
		return status.Error(codes.InvalidArgument, "fake: Init may only be sent once, first")
	}
	return status.Error(codes.InvalidArgument, "fake: empty SubscribeRequest")
}

// replay sends, in one replay batch, the events of the entity (any type if
// entityType is "") from seqNr from that are below the stream's position.
func (s *fakeSub) replay(entityType, entityID string, from uint64) error {
	s.p.mu.Lock()
	var out []*streamdv1.Event
	for _, e := range s.p.events {
		if e.Offset >= s.next {
			break
		}
		if e.EntityId == entityID && (entityType == "" || e.EntityType == entityType) && e.SeqNr >= max(from, 1) && s.inSlices(e) {
			out = append(out, proto.CloneOf(e))
		}
	}
	s.p.mu.Unlock()
	if len(out) == 0 {
		return nil
	}
	return s.sendEvents(out, true)
}

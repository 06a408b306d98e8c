package producer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

var errShuttingDown = errors.New("producer: shutting down")

// Server implements streamdv1.EventStreamServiceServer over a journal.
type Server struct {
	streamdv1.UnimplementedEventStreamServiceServer
	j       *journal.Journal
	opts    ServerOptions
	streams map[string]*stream
	readers *readers

	mu       sync.Mutex
	shutdown chan struct{}
	closed   bool
}

// NewServer serves the journal j. The caller keeps ownership of j.
func NewServer(j *journal.Journal, opts ServerOptions) (*Server, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	streams, err := compileStreams(opts.Streams, opts.FilterLimits)
	if err != nil {
		return nil, err
	}
	rs := newReaders(j, opts)
	if err := rs.load(); err != nil {
		return nil, err
	}
	return &Server{j: j, opts: opts, streams: streams, readers: rs, shutdown: make(chan struct{})}, nil
}

// Readers returns the consumers reading from the server, or that did
// within the bounds of ServerOptions.MaxReaders and ReaderMaxAge, with
// their lag now; sorted by consumer name and slice range.
func (s *Server) Readers() []Reader { return s.readers.list() }

// StreamNames lists the named streams, sorted.
func (s *Server) StreamNames() []string {
	names := make([]string, 0, len(s.streams))
	for n := range s.streams {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Shutdown ends every open Subscribe stream with Unavailable and saves
// the consumers view (Readers) in the journal, which must still be open.
// Unary calls keep working until the journal is closed. Idempotent.
func (s *Server) Shutdown() {
	s.mu.Lock()
	first := !s.closed
	if first {
		s.closed = true
		close(s.shutdown)
	}
	s.mu.Unlock()
	if first {
		s.readers.saving.Lock()
		s.readers.save()
		s.readers.saving.Unlock()
	}
}

// Publish appends the request's events.
func (s *Server) Publish(ctx context.Context, req *streamdv1.PublishRequest) (*streamdv1.PublishResponse, error) {
	if err := s.reserved(req.Events); err != nil {
		return nil, err
	}
	if routed, err := s.routed(req.Events); err != nil || routed {
		if err != nil {
			return nil, err
		}
		appended, err := s.opts.Router.Publish(ctx, req.Events)
		if err != nil {
			return nil, err
		}
		return &streamdv1.PublishResponse{Appended: appended}, nil
	}
	res, err := s.j.Append(ctx, req.Events...)
	if err != nil {
		return nil, toStatus(err)
	}
	return &streamdv1.PublishResponse{Appended: appendedProto(res)}, nil
}

// messageRoom is what a gRPC message may hold besides the events of the
// largest publish.
const messageRoom = 1 << 20

// MaxMessageBytes is the largest gRPC message the server takes: the
// journal's largest publish (Limits.MaxBatchBytes) and 1 MiB for the rest of
// the request. A gRPC server serving s must be made with
// grpc.MaxRecvMsgSize(s.MaxMessageBytes()): PublishStream tells publishers
// this limit.
func (s *Server) MaxMessageBytes() int { return s.j.Limits().MaxBatchBytes + messageRoom }

// The keys of PublishStream's response header that carry the server's
// limits (streamd.proto).
const (
	headerMaxPayloadBytes = "streamd-max-payload-bytes"
	headerMaxEventBytes   = "streamd-max-event-bytes"
	headerMaxMessageBytes = "streamd-max-message-bytes"
)

// PublishStream appends each request as it arrives, many in flight at once
// (so they share group commits), commits them in the order sent, and
// answers each in order. A request with separate_appends set is one append
// per event, answered event by event. Its response header says the
// server's limits, so that a client refuses an event over them itself: gRPC
// ends the stream at a request over MaxMessageBytes, unanswered requests
// before it included.
func (s *Server) PublishStream(st streamdv1.EventStreamService_PublishStreamServer) error {
	lim := s.j.Limits()
	if err := st.SendHeader(metadata.Pairs(
		headerMaxPayloadBytes, strconv.Itoa(lim.MaxPayloadBytes),
		headerMaxEventBytes, strconv.Itoa(lim.MaxEventBytes()),
		headerMaxMessageBytes, strconv.Itoa(s.MaxMessageBytes()),
	)); err != nil {
		return err
	}
	// The receiving loop queues each request's appends in the journal (or
	// their refusal) and the sending loop answers them in order as they
	// commit: up to PublishInFlight requests in flight, no goroutine per
	// request.
	queue := make(chan publishRequest, s.opts.PublishInFlight)
	sendErr := make(chan error, 1)
	rt := &routes{last: map[string]chan struct{}{}}
	go func() {
		for r := range queue {
			if err := st.Send(r.answer()); err != nil {
				sendErr <- err
				for range queue { // drain so the receiving loop is not left blocked
				}
				return
			}
		}
		sendErr <- nil
	}()
	var recvErr error
	for {
		req, err := st.Recv()
		if err != nil {
			if err != io.EOF {
				recvErr = err
			}
			break
		}
		r := publishRequest{separate: req.SeparateAppends}
		if req.SeparateAppends {
			r.appends, r.each = s.submitEach(st.Context(), rt, req.Events)
		} else {
			r.appends = []publishAppend{s.submit(st.Context(), rt, req.Events...)}
		}
		queue <- r
	}
	close(queue)
	if err := <-sendErr; err != nil {
		return err
	}
	return recvErr
}

// publishRequest is one PublishStreamRequest on its way through the
// journal: one append, or with separate_appends set one per event.
type publishRequest struct {
	appends  []publishAppend
	separate bool
	// each: the request's events that are plain appends, queued together
	// (Journal.SubmitEach); appends holds the others, nil at their places.
	each *eachAppends
}

// eachAppends is a request's plain appends queued by one SubmitEach: the
// events at positions at of the request.
type eachAppends struct {
	pending *journal.PendingEach
	at      []int
}

// submitEach queues a separate_appends request: each event refused before
// the journal or taken by the Router on its own (route); the others (all
// of them, without a Router) in one SubmitEach.
func (s *Server) submitEach(ctx context.Context, rt *routes, events []*streamdv1.Event) ([]publishAppend, *eachAppends) {
	appends := make([]publishAppend, len(events))
	each := &eachAppends{}
	var plain []*streamdv1.Event
	for i, e := range events {
		one := events[i : i+1]
		if err := s.reserved(one); err != nil {
			appends[i] = publishAppend{err: err}
			continue
		}
		routed, err := s.routed(one)
		switch {
		case err != nil:
			appends[i] = publishAppend{err: err}
		case routed:
			appends[i] = s.route(ctx, rt, one)
		default:
			plain = append(plain, e)
			each.at = append(each.at, i)
		}
	}
	if len(plain) == 0 {
		return appends, nil
	}
	each.pending = s.j.SubmitEach(ctx, plain)
	return appends, each
}

// publishAppend is an append queued in the journal, a write of the
// Router's under way, or refused before either (err).
type publishAppend struct {
	pending *journal.Pending
	routed  chan routedResult
	err     error
}

type routedResult struct {
	appended []*streamdv1.Appended
	err      error
}

// routes orders one PublishStream's writes through the Router: those of
// one entity run one after the other, in the order sent; those of
// different entities at once.
type routes struct {
	mu   sync.Mutex
	last map[string]chan struct{} // per entity, closed when its last write is done
}

func (s *Server) submit(ctx context.Context, rt *routes, events ...*streamdv1.Event) publishAppend {
	if err := s.reserved(events); err != nil {
		return publishAppend{err: err}
	}
	routed, err := s.routed(events)
	if err != nil {
		return publishAppend{err: err}
	}
	if !routed {
		p, err := s.j.Submit(ctx, nil, events...)
		return publishAppend{pending: p, err: err}
	}
	return s.route(ctx, rt, events)
}

// route hands events the Router takes to it, after the last write of
// their entity on this stream.
func (s *Server) route(ctx context.Context, rt *routes, events []*streamdv1.Event) publishAppend {
	key := journal.EntityKey(events[0].GetEntityType(), events[0].GetEntityId())
	done := make(chan struct{})
	rt.mu.Lock()
	prev := rt.last[key]
	rt.last[key] = done
	rt.mu.Unlock()
	a := publishAppend{routed: make(chan routedResult, 1)}
	go func() {
		defer func() {
			rt.mu.Lock()
			if rt.last[key] == done {
				delete(rt.last, key)
			}
			rt.mu.Unlock()
			close(done)
		}()
		if prev != nil {
			<-prev
		}
		appended, err := s.opts.Router.Publish(ctx, events)
		a.routed <- routedResult{appended, err}
	}()
	return a
}

func (a publishAppend) wait() ([]*streamdv1.Appended, error) {
	switch {
	case a.err != nil:
		return nil, a.err
	case a.routed != nil:
		r := <-a.routed
		return r.appended, r.err
	}
	res, err := a.pending.Wait()
	return appendedProto(res), err
}

// answer waits for the request's appends and says what became of them.
func (r publishRequest) answer() *streamdv1.PublishStreamResponse {
	resp := &streamdv1.PublishStreamResponse{}
	if !r.separate {
		res, err := r.appends[0].wait()
		resp.Appended = res
		if err != nil {
			resp.Code, resp.Message = refusal(err)
		}
		return resp
	}
	resp.Appended = make([]*streamdv1.Appended, len(r.appends))
	if r.each != nil {
		res, errs := r.each.pending.Wait()
		for k, i := range r.each.at {
			resp.Appended[i] = &streamdv1.Appended{Offset: res[k].Offset, SeqNr: res[k].SeqNr}
			if errs[k] != nil {
				resp.Appended[i] = &streamdv1.Appended{}
				resp.Appended[i].Code, resp.Appended[i].Message = refusal(errs[k])
			}
		}
	}
	for i, a := range r.appends {
		if resp.Appended[i] != nil {
			continue
		}
		res, err := a.wait()
		if err != nil {
			resp.Appended[i] = &streamdv1.Appended{}
			resp.Appended[i].Code, resp.Appended[i].Message = refusal(err)
			continue
		}
		resp.Appended[i] = res[0]
	}
	return resp
}

// refusal is the google.rpc.Code and message an answer carries for err.
func refusal(err error) (int32, string) {
	st := status.Convert(toStatus(err))
	return int32(st.Code()), st.Message()
}

// reserved refuses events of a reserved entity type (ServerOptions.Reserved).
func (s *Server) reserved(events []*streamdv1.Event) error {
	for i, e := range events {
		if how, ok := s.opts.Reserved[e.GetEntityType()]; ok {
			return status.Errorf(codes.FailedPrecondition, "producer: event %d: entity type %q is not published but written through %s", i, e.GetEntityType(), how)
		}
	}
	return nil
}

// routed reports whether the events go to the Router: all of them or
// none may; an event the Router refuses, or one with crdt_ops and no Router,
// is InvalidArgument.
func (s *Server) routed(events []*streamdv1.Event) (bool, error) {
	n := 0
	for i, e := range events {
		if s.opts.Router == nil {
			if len(e.GetCrdtOps()) > 0 {
				return false, invalidArg("event %d: crdt_ops are for replicated entity types, and this server has none (streamd --config entity_types, mode replicated)", i)
			}
			continue
		}
		routed, err := s.opts.Router.Routes(e)
		if err != nil {
			return false, status.Errorf(codes.InvalidArgument, "producer: event %d: %v", i, err)
		}
		if routed {
			n++
		}
	}
	if n > 0 && n < len(events) {
		return false, invalidArg("%d of %d events are written through this server's router (of pinned, request-region or replicated entity types, or of slices another pod of its group writes) and the others are appended here: publish them separately (or with separate_appends)", n, len(events))
	}
	return n > 0, nil
}

func appendedProto(res []journal.Appended) []*streamdv1.Appended {
	out := make([]*streamdv1.Appended, len(res))
	for i, a := range res {
		out[i] = &streamdv1.Appended{Offset: a.Offset, SeqNr: a.SeqNr}
	}
	return out
}

// LoadEvent returns one event by (entity, seqNr).
func (s *Server) LoadEvent(ctx context.Context, req *streamdv1.LoadEventRequest) (*streamdv1.LoadEventResponse, error) {
	if req.EntityType == "" || req.EntityId == "" || req.SeqNr == 0 {
		return nil, invalidArg("LoadEvent needs entity_type, entity_id and seq_nr > 0")
	}
	e, err := s.j.Load(req.EntityType, req.EntityId, req.SeqNr)
	if err != nil {
		return nil, toStatus(err)
	}
	return &streamdv1.LoadEventResponse{Event: e}, nil
}

// EntityEvents streams the history of one entity from a seqNr.
func (s *Server) EntityEvents(req *streamdv1.EntityEventsRequest, st streamdv1.EventStreamService_EntityEventsServer) error {
	if req.EntityType == "" || req.EntityId == "" {
		return invalidArg("EntityEvents needs entity_type and entity_id")
	}
	from := max(req.FromSeqNr, 1)
	for {
		evs, err := s.j.ReadEntity(req.EntityType, req.EntityId, from, s.opts.BatchEvents, nil)
		if err != nil {
			return toStatus(err)
		}
		if len(evs) == 0 {
			return nil
		}
		if err := st.Send(&streamdv1.EntityEventsResponse{Events: evs}); err != nil {
			return err
		}
		from = evs[len(evs)-1].SeqNr + 1
	}
}

// JournalInfo describes the journal.
func (s *Server) JournalInfo(ctx context.Context, _ *streamdv1.JournalInfoRequest) (*streamdv1.JournalInfoResponse, error) {
	info := s.j.Info()
	return &streamdv1.JournalInfoResponse{
		JournalId:      info.JournalID,
		FirstOffset:    info.FirstOffset,
		LastOffset:     info.LastOffset,
		Events:         info.Events,
		Bytes:          uint64(info.Bytes),
		RetentionFloor: info.FirstOffset,
		Streams:        s.StreamNames(),
	}, nil
}

func journalIDMismatch(got, want []byte) error {
	return status.Error(codes.FailedPrecondition, fmt.Sprintf(
		"producer: position is for journal %x, this producer's journal is %x: the journal was replaced; reset the consumer's position to resume", got, want))
}

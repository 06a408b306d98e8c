package producer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// harness is a producer served over real TCP on 127.0.0.1, taking messages
// up to its MaxMessageBytes as cmd/streamd does.
type harness struct {
	p      *Producer
	client streamdv1.EventStreamServiceClient
	addr   string
}

func start(t testing.TB, opts Options) *harness {
	t.Helper()
	p, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.MaxRecvMsgSize(p.Server().MaxMessageBytes()))
	streamdv1.RegisterEventStreamServiceServer(g, p.Server())
	go g.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		p.Server().Shutdown()
		g.Stop()
		p.Close()
	})
	return &harness{p: p, client: streamdv1.NewEventStreamServiceClient(conn), addr: lis.Addr().String()}
}

func (h *harness) publish(t *testing.T, events ...*streamdv1.Event) []journal.Appended {
	t.Helper()
	res, err := h.p.Publish(context.Background(), events...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func car(id, category string) *streamdv1.Event {
	return &streamdv1.Event{EntityType: "car", EntityId: id, EventType: "Sampled",
		Tags: []string{category}, Topic: "car/" + id + "/speed", Payload: make([]byte, 128)}
}

// cars is n car events spread over the entities car-0 … car-(entities-1).
func cars(n, entities int, category string) []*streamdv1.Event {
	batch := make([]*streamdv1.Event, n)
	for k := range batch {
		batch[k] = car(fmt.Sprint("car-", k%entities), category)
	}
	return batch
}

// sub is a raw Subscribe client that records what arrives.
type sub struct {
	t      *testing.T
	stream streamdv1.EventStreamService_SubscribeClient
	cancel context.CancelFunc
	hello  *streamdv1.Hello
}

func (h *harness) subscribe(t *testing.T, init *streamdv1.Init) (*sub, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := h.client.Subscribe(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	if init.ConsumerName == "" {
		init.ConsumerName = "test"
	}
	if err := st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: init}}); err != nil {
		cancel()
		return nil, err
	}
	first, err := st.Recv()
	if err != nil {
		cancel()
		return nil, err
	}
	s := &sub{t: t, stream: st, cancel: cancel, hello: first.GetHello()}
	t.Cleanup(cancel)
	return s, nil
}

// next returns the next message, failing the test after 10s.
func (s *sub) next() *streamdv1.SubscribeResponse {
	s.t.Helper()
	type res struct {
		m   *streamdv1.SubscribeResponse
		err error
	}
	ch := make(chan res, 1)
	go func() { m, err := s.stream.Recv(); ch <- res{m, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			s.t.Fatalf("recv: %v", r.err)
		}
		return r.m
	case <-time.After(10 * time.Second):
		s.t.Fatal("no message within 10s")
	}
	return nil
}

// events collects live events until n have arrived, checking order.
func (s *sub) events(n int) []*streamdv1.Event {
	s.t.Helper()
	var out []*streamdv1.Event
	for len(out) < n {
		m := s.next()
		if b := m.GetEvents(); b != nil && !b.Replay {
			out = append(out, b.Events...)
		}
	}
	for i := 1; i < len(out); i++ {
		if out[i].Offset <= out[i-1].Offset {
			s.t.Fatalf("offset %d after %d", out[i].Offset, out[i-1].Offset)
		}
	}
	return out
}

// sentUntil returns the events sent until a Progress reports offset.
func (s *sub) sentUntil(offset uint64) []*streamdv1.Event {
	var sent []*streamdv1.Event
	for {
		m := s.next()
		sent = append(sent, m.GetEvents().GetEvents()...)
		if p := m.GetProgress(); p != nil && p.Offset == offset {
			return sent
		}
	}
}

func (s *sub) send(r *streamdv1.SubscribeRequest) {
	s.t.Helper()
	if err := s.stream.Send(r); err != nil {
		s.t.Fatal(err)
	}
}

func earliest() *streamdv1.Init {
	return &streamdv1.Init{Stream: DefaultStream, StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST}
}

// A backlog larger than the ring is caught up from Badger, then the stream
// goes live; every offset arrives once, in order, across the seam.
func TestCatchUpThenLive(t *testing.T) {
	h := start(t, Options{Journal: journal.Options{RingSize: 64}, Server: ServerOptions{BatchEvents: 50}})
	for range 20 {
		h.publish(t, cars(50, 7, "family")...)
	}
	s, err := h.subscribe(t, earliest())
	if err != nil {
		t.Fatal(err)
	}
	if s.hello.FirstOffset != 1 || s.hello.LastOffset != 1000 || s.hello.StartOffset != 1 || len(s.hello.JournalId) != 16 {
		t.Fatalf("hello %v", s.hello)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 40 {
			if _, err := h.p.Publish(context.Background(), cars(25, 7, "family")...); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	got := s.events(2000)
	<-done
	for i, e := range got {
		if e.Offset != uint64(i+1) {
			t.Fatalf("event %d has offset %d", i, e.Offset)
		}
	}
}

func TestResumeFromPosition(t *testing.T) {
	h := start(t, Options{})
	for i := range 10 {
		h.publish(t, car(fmt.Sprint(i), "x"))
	}
	info := h.p.Journal().Info()
	s, err := h.subscribe(t, &streamdv1.Init{Stream: DefaultStream,
		Position: &streamdv1.Position{JournalId: info.JournalID, Offset: 7}})
	if err != nil {
		t.Fatal(err)
	}
	got := s.events(3)
	if got[0].Offset != 8 || s.hello.StartOffset != 8 {
		t.Fatalf("resumed at %d (hello start %d), want 8", got[0].Offset, s.hello.StartOffset)
	}
	s2, err := h.subscribe(t, &streamdv1.Init{Stream: DefaultStream, StartPolicy: streamdv1.StartPolicy_START_POLICY_LATEST})
	if err != nil {
		t.Fatal(err)
	}
	h.publish(t, car("new", "x"))
	if got := s2.events(1); got[0].Offset != 11 {
		t.Fatalf("latest started at %d", got[0].Offset)
	}
}

// ServerOptions.Validate reports every nonsensical field, each error
// matching ErrInvalidOptions and naming its field; Open refuses them.
func TestServerOptionsValidate(t *testing.T) {
	if err := (ServerOptions{}).Validate(); err != nil {
		t.Fatalf("zero ServerOptions: %v", err)
	}
	err := ServerOptions{BatchEvents: -1, MaxReplays: -2}.Validate()
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok || len(joined.Unwrap()) != 2 {
		t.Fatalf("Validate = %v, want two errors joined", err)
	}
	for i, field := range []string{"ServerOptions.BatchEvents -1", "ServerOptions.MaxReplays -2"} {
		e := joined.Unwrap()[i]
		if !errors.Is(e, ErrInvalidOptions) || !strings.HasPrefix(e.Error(), "producer: invalid options: "+field) {
			t.Errorf("error %d = %q, want one matching ErrInvalidOptions about %s", i, e, field)
		}
	}
	if _, err := Open(t.TempDir(), Options{Server: ServerOptions{PublishInFlight: -1}}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("Open with PublishInFlight -1: %v, want ErrInvalidOptions", err)
	}
}

func TestBadInit(t *testing.T) {
	h := start(t, Options{Server: ServerOptions{Streams: []StreamDef{{Name: "cars", EntityTypes: []string{"car"}}}}})
	id := h.p.Journal().ID()
	other := make([]byte, 16)
	cases := []struct {
		name string
		init *streamdv1.Init
		code codes.Code
	}{
		{"unknown stream", &streamdv1.Init{Stream: "nope", StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST}, codes.NotFound},
		{"no start", &streamdv1.Init{Stream: "cars"}, codes.InvalidArgument},
		{"slice range reversed", &streamdv1.Init{Stream: "cars", StartPolicy: 1, SliceRange: &streamdv1.SliceRange{First: 9, Last: 3}}, codes.InvalidArgument},
		{"slice range too big", &streamdv1.Init{Stream: "cars", StartPolicy: 1, SliceRange: &streamdv1.SliceRange{First: 0, Last: 1024}}, codes.InvalidArgument},
		{"other journal", &streamdv1.Init{Stream: "cars", Position: &streamdv1.Position{JournalId: other, Offset: 1}}, codes.FailedPrecondition},
		{"position ahead of the journal", &streamdv1.Init{Stream: "cars", Position: &streamdv1.Position{JournalId: id, Offset: 5}}, codes.FailedPrecondition},
		{"bad filter", &streamdv1.Init{Stream: "cars", StartPolicy: 1, Filter: []*streamdv1.FilterCriterion{{
			Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_ID_REGEX, Value: "("}}}, codes.InvalidArgument},
		{"default stream hidden by named ones", &streamdv1.Init{Stream: DefaultStream, StartPolicy: 1}, codes.NotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := h.subscribe(t, c.init)
			if status.Code(err) != c.code {
				t.Fatalf("got %v, want %v", err, c.code)
			}
			if msg := status.Convert(err).Message(); msg == "" {
				t.Fatal("error has no message")
			}
		})
	}
	// A missing consumer name is refused too.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, _ := h.client.Subscribe(ctx)
	st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{Stream: "cars", StartPolicy: 1}}})
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no consumer name: %v", err)
	}
}

func TestOutOfRange(t *testing.T) {
	h := start(t, Options{Journal: journal.Options{RetentionMaxBytes: 1, RetentionInterval: time.Hour}})
	for range 5 {
		h.publish(t, car("a", "x"))
	}
	if _, err := h.p.Journal().EnforceRetention(); err != nil {
		t.Fatal(err)
	}
	_, err := h.subscribe(t, &streamdv1.Init{Stream: DefaultStream,
		Position: &streamdv1.Position{JournalId: h.p.Journal().ID(), Offset: 2}})
	if status.Code(err) != codes.OutOfRange {
		t.Fatalf("got %v, want OutOfRange", err)
	}
}

// Filtered events are not sent; Progress moves the position past them.
func TestProgressWhenFiltered(t *testing.T) {
	h := start(t, Options{Server: ServerOptions{ProgressInterval: time.Millisecond}})
	s := subscribeSports(t, h)
	h.publish(t, car("a", "sports"), car("b", "family"), car("c", "family"))
	var sent []uint64
	for _, e := range s.sentUntil(3) {
		sent = append(sent, e.Offset)
	}
	if fmt.Sprint(sent) != "[1]" {
		t.Fatalf("sent offsets %v, want only [1]", sent)
	}
}

// A filter selects among stored events read past the live ring, which the
// stream decodes one after the other into one scratch event: nothing of an
// event's fields is left for the next one's selection.
func TestFilterOverStoredEvents(t *testing.T) {
	h := start(t, Options{Journal: journal.Options{RingSize: 4}, Server: ServerOptions{ProgressInterval: time.Millisecond}})
	events := make([]*streamdv1.Event, 40)
	var want []uint64
	for i := range events {
		events[i] = car(fmt.Sprint("car-", i%3), []string{"sports", "family"}[i%2])
		if i%2 == 0 {
			want = append(want, uint64(i+1))
		}
	}
	h.publish(t, events...)
	var sent []uint64
	for _, e := range subscribeSports(t, h).sentUntil(40) {
		if e.Tags[0] != "sports" {
			t.Fatalf("offset %d sent with tags %v", e.Offset, e.Tags)
		}
		sent = append(sent, e.Offset)
	}
	if fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Fatalf("sent offsets %v, want %v", sent, want)
	}
}

// The stream's selection wins over a consumer's include.
func TestProducerFilterWins(t *testing.T) {
	h := start(t, Options{Server: ServerOptions{Streams: []StreamDef{{
		Name: "public", EntityTypes: []string{"car"},
		Filter: []*streamdv1.FilterCriterion{{Action: streamdv1.FilterAction_FILTER_ACTION_EXCLUDE,
			Field: streamdv1.FilterField_FILTER_FIELD_TAG, Value: "secret"}},
		Transform: func(e *streamdv1.Event) *streamdv1.Event {
			return &streamdv1.Event{Offset: e.Offset, EntityType: e.EntityType, EntityId: e.EntityId, SeqNr: e.SeqNr,
				Slice: e.Slice, EventType: "Public" + e.EventType, Tags: e.Tags}
		},
	}}}})
	init := &streamdv1.Init{Stream: "public", StartPolicy: 1, Filter: []*streamdv1.FilterCriterion{{
		Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_TAG, Value: "secret"}, {
		Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE, Value: "user"}, {
		Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_TAG, Value: "ok"}}}
	s, err := h.subscribe(t, init)
	if err != nil {
		t.Fatal(err)
	}
	h.publish(t, car("a", "secret"), &streamdv1.Event{EntityType: "user", EntityId: "u"}, car("b", "ok"))
	got := s.events(1)
	if len(got) != 1 || got[0].EntityId != "b" || got[0].EventType != "PublicSampled" || got[0].Payload != nil {
		t.Fatalf("got %v, want only car b, transformed", got)
	}
}

// A filter update takes effect from the next event; an include with replay
// delivers the earlier history in replay batches; a bad update is refused
// and the old filter stays.
func TestFilterUpdateAndReplay(t *testing.T) {
	h := start(t, Options{})
	init := earliest()
	init.Filter = []*streamdv1.FilterCriterion{{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE,
		Field: streamdv1.FilterField_FILTER_FIELD_TAG, Value: "sports"}}
	s, err := h.subscribe(t, init)
	if err != nil {
		t.Fatal(err)
	}
	h.publish(t, car("f1", "family"), car("f1", "family"), car("s1", "sports"))
	if got := s.events(1); got[0].EntityId != "s1" {
		t.Fatalf("before update got %v", got)
	}
	s.send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_FilterUpdate{FilterUpdate: &streamdv1.FilterUpdate{
		Id: 7, Add: []*streamdv1.FilterCriterion{{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE,
			Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_ID, Value: "f1", ReplayFromSeqNr: 1}}}}})
	var replayed, live []*streamdv1.Event
	gotResult := false
	for len(replayed) < 2 || len(live) < 1 || !gotResult {
		m := s.next()
		switch {
		case m.GetFilterUpdateResult() != nil:
			r := m.GetFilterUpdateResult()
			if r.Id != 7 || r.Code != 0 {
				t.Fatalf("filter update result %v", r)
			}
			gotResult = true
			// The result is sent after the swap: what is published now is live.
			h.publish(t, car("f1", "family"))
		case m.GetEvents() != nil && m.GetEvents().Replay:
			replayed = append(replayed, m.GetEvents().Events...)
		case m.GetEvents() != nil:
			live = append(live, m.GetEvents().Events...)
		}
	}
	if len(replayed) != 2 || replayed[0].SeqNr != 1 || replayed[1].SeqNr != 2 || live[0].SeqNr != 3 || live[0].EntityId != "f1" {
		t.Fatalf("replayed %v live %v", replayed, live)
	}
	// A bad update is refused; the stream keeps its filter.
	s.send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_FilterUpdate{FilterUpdate: &streamdv1.FilterUpdate{
		Id: 8, Add: []*streamdv1.FilterCriterion{{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE,
			Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_ID_REGEX, Value: "(("}}}}})
	for {
		m := s.next()
		if r := m.GetFilterUpdateResult(); r != nil {
			if r.Id != 8 || codes.Code(r.Code) != codes.InvalidArgument || r.Message == "" {
				t.Fatalf("bad update result %v", r)
			}
			break
		}
	}
	h.publish(t, car("x", "family"), car("s2", "sports"))
	if got := s.events(1); got[0].EntityId != "s2" {
		t.Fatalf("after refused update got %v", got)
	}
}

func TestSliceRange(t *testing.T) {
	h := start(t, Options{})
	init := earliest()
	init.SliceRange = &streamdv1.SliceRange{First: 0, Last: 511}
	s, err := h.subscribe(t, init)
	if err != nil {
		t.Fatal(err)
	}
	var want int
	for i := range 200 {
		id := fmt.Sprint("car-", i)
		if journal.SliceOf(id) <= 511 {
			want++
		}
		h.publish(t, car(id, "x"))
	}
	for _, e := range s.events(want) {
		if e.Slice > 511 {
			t.Fatalf("event of slice %d outside 0-511", e.Slice)
		}
	}
}

func TestUnaryRPCs(t *testing.T) {
	h := start(t, Options{})
	ctx := context.Background()
	res, err := h.client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{car("a", "x"), car("a", "x")}})
	if err != nil || len(res.Appended) != 2 || res.Appended[1].SeqNr != 2 {
		t.Fatalf("Publish: %v %v", res, err)
	}
	_, err = h.client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: "car"}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("Publish bad event: %v", err)
	}
	conflict := car("a", "x")
	conflict.SeqNr = 2
	if _, err = h.client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{conflict}}); status.Code(err) != codes.Aborted {
		t.Fatalf("Publish conflict: %v", err)
	}
	le, err := h.client.LoadEvent(ctx, &streamdv1.LoadEventRequest{EntityType: "car", EntityId: "a", SeqNr: 2})
	if err != nil || le.Event.Offset != 2 {
		t.Fatalf("LoadEvent: %v %v", le, err)
	}
	if _, err := h.client.LoadEvent(ctx, &streamdv1.LoadEventRequest{EntityType: "car", EntityId: "a", SeqNr: 9}); status.Code(err) != codes.NotFound {
		t.Fatalf("LoadEvent missing: %v", err)
	}
	ee, err := h.client.EntityEvents(ctx, &streamdv1.EntityEventsRequest{EntityType: "car", EntityId: "a", FromSeqNr: 2})
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for {
		r, err := ee.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range r.Events {
			seqs = append(seqs, e.SeqNr)
		}
	}
	if fmt.Sprint(seqs) != "[2]" {
		t.Fatalf("EntityEvents from 2: %v", seqs)
	}
	info, err := h.client.JournalInfo(ctx, &streamdv1.JournalInfoRequest{})
	if err != nil || info.LastOffset != 2 || info.Events != 2 || len(info.JournalId) != 16 || info.Streams[0] != DefaultStream {
		t.Fatalf("JournalInfo: %v %v", info, err)
	}
}

func TestPublishStream(t *testing.T) {
	h := start(t, Options{})
	st, err := h.client.PublishStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	go func() {
		for i := range n {
			e := car(fmt.Sprint(i%10), "x")
			if i == 150 {
				e.EntityId = "" // refused, the stream goes on
			}
			st.Send(&streamdv1.PublishStreamRequest{Events: []*streamdv1.Event{e}})
		}
		st.CloseSend()
	}()
	ok, bad, last := 0, 0, uint64(0)
	for i := range n {
		r, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if i == 150 {
			if codes.Code(r.Code) != codes.InvalidArgument {
				t.Fatalf("response 150: %v", r)
			}
			bad++
			continue
		}
		if r.Code != 0 || len(r.Appended) != 1 {
			t.Fatalf("response %d: %v", i, r)
		}
		// A stream's appends are committed in the order sent.
		if r.Appended[0].Offset != last+1 {
			t.Fatalf("response %d: offset %d after %d", i, r.Appended[0].Offset, last)
		}
		last = r.Appended[0].Offset
		ok++
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after last response: %v", err)
	}
	if ok != n-1 || h.p.Journal().LastOffset() != n-1 {
		t.Fatalf("ok %d, journal last offset %d", ok, h.p.Journal().LastOffset())
	}
}

// A request with separate_appends set is one append per event: a refused
// event fails alone; without it the same events are refused together.
func TestPublishStreamSeparateAppends(t *testing.T) {
	h := start(t, Options{Server: ServerOptions{Reserved: map[string]string{"order": "PrimaryService.Write"}}})
	st, err := h.client.PublishStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	events := func() []*streamdv1.Event {
		noID := car("2", "x")
		noID.EntityId = ""
		stale := car("3", "x")
		stale.SeqNr = 5 // car 3 has no events: 1 is expected
		return []*streamdv1.Event{car("1", "x"), noID, {EntityType: "order", EntityId: "o1", EventType: "Placed"}, stale, car("1", "x")}
	}
	st.Send(&streamdv1.PublishStreamRequest{Events: events()})
	st.Send(&streamdv1.PublishStreamRequest{Events: events(), SeparateAppends: true})
	st.CloseSend()
	r, err := st.Recv()
	if err != nil || codes.Code(r.Code) != codes.FailedPrecondition || len(r.Appended) != 0 {
		t.Fatalf("atomic request = %v, %v", r, err)
	}
	if r, err = st.Recv(); err != nil || r.Code != 0 || len(r.Appended) != 5 {
		t.Fatalf("separate-appends request = %v, %v", r, err)
	}
	want := []struct {
		code          codes.Code
		offset, seqNr uint64
	}{{codes.OK, 1, 1}, {codes.InvalidArgument, 0, 0}, {codes.FailedPrecondition, 0, 0}, {codes.Aborted, 0, 0}, {codes.OK, 2, 2}}
	for i, w := range want {
		a := r.Appended[i]
		if codes.Code(a.Code) != w.code || a.Offset != w.offset || a.SeqNr != w.seqNr || (w.code != codes.OK) != (a.Message != "") {
			t.Errorf("event %d: %v, want code %v offset %d seq_nr %d", i, a, w.code, w.offset, w.seqNr)
		}
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last answer: %v", err)
	}
	if last := h.p.Journal().LastOffset(); last != 2 {
		t.Fatalf("journal last offset %d, want 2", last)
	}
}

// PublishStream's header says the server's limits, and they are exact: an
// event of the largest size it gives is appended, one byte more is refused
// alone.
func TestPublishStreamLimits(t *testing.T) {
	h := start(t, Options{Journal: journal.Options{Limits: journal.Limits{MaxBatchBytes: 4096}}})
	st, err := h.client.PublishStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sized := func(n int) *streamdv1.Event {
		e := car("1", "x")
		for e.Payload = nil; proto.Size(e) < n; {
			e.Payload = append(e.Payload, 0)
		}
		if proto.Size(e) != n {
			t.Fatalf("no event of %d bytes", n)
		}
		return e
	}
	st.Send(&streamdv1.PublishStreamRequest{Events: []*streamdv1.Event{sized(4096 - 32), sized(4096 - 31)}, SeparateAppends: true})
	st.CloseSend()
	md, err := st.Header()
	if err != nil {
		t.Fatal(err)
	}
	want := metadata.Pairs(headerMaxPayloadBytes, fmt.Sprint(journal.DefaultLimits.MaxPayloadBytes),
		headerMaxEventBytes, fmt.Sprint(4096-32), headerMaxMessageBytes, fmt.Sprint(4096+1<<20))
	for k, v := range want {
		if got := md.Get(k); len(got) != 1 || got[0] != v[0] {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	r, err := st.Recv()
	if err != nil || len(r.Appended) != 2 || r.Appended[0].Code != 0 || r.Appended[0].Offset != 1 || codes.Code(r.Appended[1].Code) != codes.InvalidArgument {
		t.Fatalf("events of the largest size and one byte more: %v, %v", r, err)
	}
}

// Shutdown ends streams with Unavailable, so consumers resume later.
func TestShutdownEndsStreams(t *testing.T) {
	h := start(t, Options{})
	s, err := h.subscribe(t, earliest())
	if err != nil {
		t.Fatal(err)
	}
	h.p.Server().Shutdown()
	_, err = s.stream.Recv()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("after Shutdown: %v", err)
	}
}

// An entity's replayed history arrives before any of its newer live events,
// even when the history is longer than one replay chunk and live events of
// the entity keep coming.
func TestReplayPrecedesLiveOfSameEntity(t *testing.T) {
	h := start(t, Options{})
	init := earliest()
	init.Filter = []*streamdv1.FilterCriterion{{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE,
		Field: streamdv1.FilterField_FILTER_FIELD_TAG, Value: "sports"}}
	s, err := h.subscribe(t, init)
	if err != nil {
		t.Fatal(err)
	}
	for range 500 {
		h.publish(t, car("f1", "family"))
	}
	s.send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_FilterUpdate{FilterUpdate: &streamdv1.FilterUpdate{
		Id: 1, Add: []*streamdv1.FilterCriterion{{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE,
			Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_ID, Value: "f1", ReplayFromSeqNr: 1}}}}})
	go func() {
		for range 50 {
			if _, err := h.p.Publish(context.Background(), car("f1", "family")); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var seqs []uint64
	for len(seqs) < 550 {
		if b := s.next().GetEvents(); b != nil {
			for _, e := range b.Events {
				seqs = append(seqs, e.SeqNr)
			}
		}
	}
	for i, seq := range seqs {
		if seq != uint64(i+1) {
			t.Fatalf("arrival %d is seqNr %d: the history is out of order (first 5 around it: %v)", i, seq, seqs[max(i-2, 0):min(i+3, len(seqs))])
		}
	}
}

// Shutdown also ends a stream that is busy catching up.
func TestShutdownDuringCatchUp(t *testing.T) {
	// 100,000 events (~18 MB) exceed what gRPC can have in flight (a 16 MiB
	// window at most), so receiving all of them would mean the stream ignored
	// the shutdown until it caught up.
	const total = 100_000
	h := start(t, Options{Journal: journal.Options{Durability: journal.DurabilityAsync}, Server: ServerOptions{BatchEvents: 10}})
	for range total / 1000 {
		h.publish(t, cars(1000, 50, "x")...)
	}
	s, err := h.subscribe(t, earliest())
	if err != nil {
		t.Fatal(err)
	}
	received := len(s.events(10)) // catching up
	h.p.Server().Shutdown()
	for {
		m, err := s.stream.Recv()
		if err == nil {
			received += len(m.GetEvents().GetEvents()) // batches already in flight
			continue
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("after Shutdown: %v, want Unavailable", err)
		}
		if received >= total {
			t.Fatalf("received all %d events before Unavailable: the catch-up ignored the shutdown", received)
		}
		return
	}
}

// Reserved entity types are refused by Publish and PublishStream, with the
// way to write them, and nothing is appended.
func TestReservedTypesRefused(t *testing.T) {
	h := start(t, Options{Server: ServerOptions{Reserved: map[string]string{"order": "PrimaryService.Write"}}})
	order := &streamdv1.Event{EntityType: "order", EntityId: "o1", EventType: "Placed"}
	_, err := h.client.Publish(context.Background(), &streamdv1.PublishRequest{Events: []*streamdv1.Event{car("1", "x"), order}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), `event 1: entity type "order" is not published but written through PrimaryService.Write`) {
		t.Fatalf("Publish = %v", err)
	}
	st, err := h.client.PublishStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&streamdv1.PublishStreamRequest{Events: []*streamdv1.Event{order}})
	st.Send(&streamdv1.PublishStreamRequest{Events: []*streamdv1.Event{car("1", "x")}})
	st.CloseSend()
	if r, err := st.Recv(); err != nil || codes.Code(r.Code) != codes.FailedPrecondition || len(r.Appended) != 0 {
		t.Fatalf("PublishStream of order = %v, %v", r, err)
	}
	if r, err := st.Recv(); err != nil || r.Code != 0 || len(r.Appended) != 1 {
		t.Fatalf("PublishStream of a car = %v, %v", r, err)
	}
	if last := h.p.Journal().LastOffset(); last != 1 {
		t.Fatalf("journal last offset %d, want 1 (the car only)", last)
	}
}

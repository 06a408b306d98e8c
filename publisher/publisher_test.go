package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a producer served over real TCP on 127.0.0.1 with the gRPC
// server options of cmd/streamd that bear on publishing, counting the
// publish requests it receives.
type server struct {
	p        *producer.Producer
	g        *grpc.Server
	conn     *grpc.ClientConn
	requests atomic.Int64
	// gate, if set, holds the server's receiving until it is closed.
	gate chan struct{}
}

type countingStream struct {
	grpc.ServerStream
	s *server
}

func (cs countingStream) RecvMsg(m any) error {
	if cs.s.gate != nil {
		<-cs.s.gate
	}
	err := cs.ServerStream.RecvMsg(m)
	if err == nil {
		cs.s.requests.Add(1)
	}
	return err
}

func serve(t testing.TB) *server {
	return serveGated(t, nil)
}

func serveGated(t testing.TB, gate chan struct{}) *server {
	t.Helper()
	p, err := producer.Open(t.TempDir(), producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &server{p: p, gate: gate}
	opts := append(producer.Interceptors(slog.New(slog.DiscardHandler)),
		grpc.MaxRecvMsgSize(p.Server().MaxMessageBytes()),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, countingStream{ServerStream: ss, s: s})
		}))
	s.g = grpc.NewServer(opts...)
	streamdv1.RegisterEventStreamServiceServer(s.g, p.Server())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.g.Serve(lis)
	if s.conn, err = grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.conn.Close()
		p.Server().Shutdown()
		s.g.Stop()
		p.Close()
	})
	return s
}

// publisher opens a Publisher on the server.
func (s *server) publisher(t testing.TB, opts Options) *Publisher {
	t.Helper()
	pub, err := New(context.Background(), s.conn, opts)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func car(id string) *streamdv1.Event {
	return &streamdv1.Event{EntityType: "car", EntityId: id, EventType: "Sampled", Payload: make([]byte, 128)}
}

// Publishes made one at a time by many goroutines are each answered with
// their own place in the journal, travel many to a request, and are
// appended in the order they were made per entity.
func TestConcurrentPublishesBatch(t *testing.T) {
	s := serve(t)
	pub := s.publisher(t, Options{})
	const goroutines, each = 64, 100
	var wg sync.WaitGroup
	offsets := make([][]Appended, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for range each {
				a, err := pub.Publish(context.Background(), car(fmt.Sprint("car-", g)))
				if err != nil {
					t.Error(err)
					return
				}
				offsets[g] = append(offsets[g], a)
			}
		})
	}
	wg.Wait()
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for g, as := range offsets {
		for i, a := range as {
			if a.SeqNr != uint64(i+1) || seen[a.Offset] || (i > 0 && a.Offset <= as[i-1].Offset) {
				t.Fatalf("goroutine %d publish %d: %+v after %+v", g, i, a, as[max(i-1, 0)])
			}
			seen[a.Offset] = true
		}
	}
	total := uint64(goroutines * each)
	if len(seen) != int(total) || s.p.Journal().LastOffset() != total {
		t.Fatalf("%d distinct offsets, journal last offset %d, want %d", len(seen), s.p.Journal().LastOffset(), total)
	}
	if n := s.requests.Load(); n >= int64(total)/2 {
		t.Fatalf("%d requests for %d publishes: publishes in flight were not sent together", n, total)
	}
}

// A refused publish fails alone, with its status; the publishes around it
// (in the same request or not) are appended, in order.
func TestRefusedPublishFailsAlone(t *testing.T) {
	s := serve(t)
	pub := s.publisher(t, Options{MaxInFlight: 1})
	defer pub.Close()
	var acks []*Ack
	for i := range 10 {
		e := car("a")
		switch i {
		case 4:
			e.EntityId = ""
		case 7:
			e.SeqNr = 100 // a is not at 99
		}
		acks = append(acks, pub.PublishAsync(e))
	}
	next := uint64(1)
	for i, a := range acks {
		res, err := a.Result()
		switch i {
		case 4, 7:
			want := map[int]codes.Code{4: codes.InvalidArgument, 7: codes.Aborted}[i]
			if status.Code(err) != want || res != (Appended{}) {
				t.Errorf("publish %d: %+v, %v; want %v", i, res, err, want)
			}
		default:
			if err != nil || res.Offset != next || res.SeqNr != next {
				t.Errorf("publish %d: %+v, %v; want offset and seq_nr %d", i, res, err, next)
			}
			next++
		}
	}
	if n := s.requests.Load(); n >= 10 {
		t.Errorf("%d requests for 10 publishes made at once", n)
	}
	if err := pub.Err(); err != nil {
		t.Errorf("Err after refused publishes: %v, want nil: the stream works", err)
	}
}

// Close answers every publish made before it; publishes after it fail with
// ErrClosed; Close is idempotent.
func TestCloseAnswersEverything(t *testing.T) {
	s := serve(t)
	pub := s.publisher(t, Options{MaxBatchEvents: 7, MaxInFlight: 2})
	var acks []*Ack
	for i := range 500 {
		acks = append(acks, pub.PublishAsync(car(fmt.Sprint(i%5))))
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	for i, a := range acks {
		select {
		case <-a.Done():
		default:
			t.Fatalf("publish %d not answered when Close returned", i)
		}
		if res, err := a.Result(); err != nil || res.Offset != uint64(i+1) {
			t.Fatalf("publish %d: %+v, %v", i, res, err)
		}
	}
	if n := s.requests.Load(); n < 500/7 {
		t.Errorf("%d requests: more than MaxBatchEvents (7) events in one", n)
	}
	if _, err := pub.Publish(context.Background(), car("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after Close: %v", err)
	}
	if err := pub.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// MaxBatchBytes bounds a request; a larger event goes alone.
func TestBatchBytes(t *testing.T) {
	s := serve(t)
	pub := s.publisher(t, Options{MaxBatchBytes: 1000, MaxInFlight: 1})
	big := car("big")
	big.Payload = make([]byte, 5000)
	acks := []*Ack{pub.PublishAsync(big)}
	for range 20 {
		acks = append(acks, pub.PublishAsync(car("small"))) // about 160 bytes each: at most 6 to a request
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	for i, a := range acks {
		if _, err := a.Result(); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if n := s.requests.Load(); n < 1+20/6 {
		t.Fatalf("%d requests for one 5 kB event and 20 of 160 bytes under a 1000-byte bound", n)
	}
}

// When the server goes away, the publishes in flight and later ones fail
// (none hangs) and Close returns the failure.
func TestServerGone(t *testing.T) {
	s := serve(t)
	pub := s.publisher(t, Options{})
	if _, err := pub.Publish(context.Background(), car("a")); err != nil {
		t.Fatal(err)
	}
	if err := pub.Err(); err != nil {
		t.Fatalf("Err while the stream works: %v", err)
	}
	s.p.Server().Shutdown()
	s.g.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := pub.Publish(ctx, car("a"))
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "publisher:") {
		t.Fatalf("publish after the server stopped: %v", err)
	}
	if err := pub.Err(); err == nil || !strings.Contains(err.Error(), "publisher:") {
		t.Fatalf("Err after the server stopped: %v, want the stream's failure", err)
	}
	if err := pub.Close(); err == nil || errors.Is(err, ErrClosed) {
		t.Fatalf("Close after the stream failed: %v", err)
	}
}

// An event that cannot be encoded is refused at once, alone: the stream
// and the other publishes go on.
func TestUnencodableEventFailsAlone(t *testing.T) {
	s := serve(t)
	pub := s.publisher(t, Options{})
	bad := car("\xff")
	a := pub.PublishAsync(bad)
	select {
	case <-a.Done():
	default:
		t.Fatal("an unencodable event was queued")
	}
	if _, err := a.Result(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "cannot be encoded") {
		t.Fatalf("unencodable event: %v", err)
	}
	if res, err := pub.Publish(context.Background(), car("a")); err != nil || res.Offset != 1 {
		t.Fatalf("publish after it: %+v, %v", res, err)
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
}

// A request the publisher encodes itself decodes as the PublishStreamRequest
// it stands for, and is of the size the sender counts.
func TestEncodeRequest(t *testing.T) {
	events := []*streamdv1.Event{car("a"), {EntityType: "car", EntityId: "b", SeqNr: 3, Tags: []string{"x"}}}
	var batch []*Ack
	size := requestTail
	for _, e := range events {
		raw, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		batch, size = append(batch, &Ack{raw: raw}), size+eventSize(raw)
	}
	req := encodeRequest(batch, size)
	if len(req) != size {
		t.Fatalf("request of %d bytes, counted %d", len(req), size)
	}
	var got streamdv1.PublishStreamRequest
	if err := proto.Unmarshal(req, &got); err != nil {
		t.Fatal(err)
	}
	want := &streamdv1.PublishStreamRequest{Events: events, SeparateAppends: true}
	if !proto.Equal(&got, want) {
		t.Fatalf("decoded %v, want %v", &got, want)
	}
}

func TestOptionsValidate(t *testing.T) {
	err := Options{MaxBatchEvents: -1, MaxInFlight: -2}.Validate()
	if err == nil || !strings.Contains(err.Error(), "Options.MaxBatchEvents is -1") || !strings.Contains(err.Error(), "Options.MaxInFlight is -2") {
		t.Fatalf("Validate = %v", err)
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok || len(joined.Unwrap()) != 2 {
		t.Fatalf("Validate = %v, want two errors joined", err)
	}
	for _, e := range joined.Unwrap() {
		if !errors.Is(e, ErrInvalidOptions) || !strings.HasPrefix(e.Error(), "publisher: invalid options: Options.") {
			t.Errorf("error %q does not match ErrInvalidOptions", e)
		}
	}
	if _, err := New(context.Background(), nil, Options{MaxBatchBytes: -1}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("New with MaxBatchBytes -1: %v, want ErrInvalidOptions", err)
	}
	if err := (Options{}).Validate(); err != nil {
		t.Fatalf("zero Options: %v", err)
	}
}

// Events over the server's limits, among small ones, are refused alone by
// PublishAsync: a 6 MiB and a 20 MiB event, over both the payload limit
// (1 MiB) and gRPC's message limit (5 MiB), would otherwise end the stream
// and fail every publish after them. Every other event is appended, in
// order, and the Publisher goes on.
func TestOversizedEventsFailAlone(t *testing.T) {
	s := serve(t)
	pub := s.publisher(t, Options{})
	big := map[int]int{600: 6 << 20, 1400: 20 << 20}
	var acks []*Ack
	for i := range 2000 {
		e := car("a")
		if n, ok := big[i]; ok {
			e.Payload = make([]byte, n)
		}
		acks = append(acks, pub.PublishAsync(e))
	}
	next := uint64(1)
	for i, a := range acks {
		res, err := a.Result()
		if _, ok := big[i]; ok {
			if !errors.Is(err, ErrTooLarge) || status.Code(err) != codes.InvalidArgument || res != (Appended{}) ||
				!strings.Contains(err.Error(), "the server takes an event of at most") {
				t.Errorf("publish %d (%d bytes): %+v, %v; want ErrTooLarge", i, big[i], res, err)
			}
			continue
		}
		if err != nil || res.Offset != next || res.SeqNr != next {
			t.Fatalf("publish %d: %+v, %v; want offset and seq_nr %d", i, res, err, next)
		}
		next++
	}
	if res, err := pub.Publish(context.Background(), car("a")); err != nil || res.Offset != next {
		t.Fatalf("publish after them: %+v, %v; want offset %d", res, err, next)
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
}

// An event over any of the server's size limits is refused before it is
// sent, with one message naming the limits: over the payload limit alone,
// over gRPC's message limit with a small payload, over both.
func TestTooLargeRefusedUnsent(t *testing.T) {
	s := serve(t)
	pub := s.publisher(t, Options{})
	defer pub.Close()
	lim := s.p.Journal().Limits()
	for _, tc := range []struct {
		name string
		edit func(*streamdv1.Event)
	}{
		{"payload over its limit", func(e *streamdv1.Event) { e.Payload = make([]byte, lim.MaxPayloadBytes+1) }},
		{"event over the journal's limit", func(e *streamdv1.Event) { e.Tags = []string{strings.Repeat("t", lim.MaxEventBytes())} }},
		{"event over the message limit", func(e *streamdv1.Event) { e.Tags = []string{strings.Repeat("t", s.p.Server().MaxMessageBytes())} }},
		{"both", func(e *streamdv1.Event) { e.Payload = make([]byte, 6<<20) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := car("a")
			tc.edit(e)
			a := pub.PublishAsync(e)
			select {
			case <-a.Done():
			default:
				t.Fatal("the event was queued")
			}
			_, err := a.Result()
			if !errors.Is(err, ErrTooLarge) || status.Code(err) != codes.InvalidArgument ||
				!strings.Contains(err.Error(), fmt.Sprintf("at most %d bytes encoded, its payload at most %d bytes", lim.MaxEventBytes(), lim.MaxPayloadBytes)) {
				t.Fatalf("PublishAsync = %v", err)
			}
		})
	}
	if n := s.requests.Load(); n != 0 {
		t.Fatalf("%d requests sent", n)
	}
	if res, err := pub.Publish(context.Background(), car("a")); err != nil || res.Offset != 1 {
		t.Fatalf("publish after them: %+v, %v", res, err)
	}
}

// The publishes that gather while the window is full go in requests within
// the server's message limit, whatever MaxBatchBytes says.
func TestRequestsWithinServerLimit(t *testing.T) {
	gate := make(chan struct{})
	s := serveGated(t, gate)
	pub := s.publisher(t, Options{MaxBatchBytes: 64 << 20, MaxInFlight: 1})
	maxPayload := s.p.Journal().Limits().MaxPayloadBytes
	var acks []*Ack
	for i := range 16 { // the first is sent alone; 15 MiB gather behind it
		e := car(fmt.Sprint(i))
		e.Payload = make([]byte, maxPayload)
		acks = append(acks, pub.PublishAsync(e))
	}
	close(gate)
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
	for i, a := range acks {
		if res, err := a.Result(); err != nil || res.Offset != uint64(i+1) {
			t.Fatalf("publish %d: %+v, %v", i, res, err)
		}
	}
	if n, least := s.requests.Load(), 1+15/(s.p.Server().MaxMessageBytes()/maxPayload); n < int64(least) {
		t.Fatalf("%d requests for 16 events of %d bytes, want at least %d", n, maxPayload, least)
	}
}

// noLimits is a PublishStream server that does not say its limits.
type noLimits struct {
	streamdv1.UnimplementedEventStreamServiceServer
}

func (noLimits) PublishStream(st streamdv1.EventStreamService_PublishStreamServer) error {
	if err := st.SendHeader(metadata.Pairs("streamd-max-payload-bytes", "1000")); err != nil {
		return err
	}
	<-st.Context().Done()
	return st.Context().Err()
}

// New fails, saying why, when the server refuses the stream or does not say
// its limits.
func TestNewNeedsServerLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		srv  streamdv1.EventStreamServiceServer
		opts []grpc.ServerOption
		want func(error) bool
	}{
		{"refused", noLimits{}, []grpc.ServerOption{grpc.StreamInterceptor(func(any, grpc.ServerStream, *grpc.StreamServerInfo, grpc.StreamHandler) error {
			return status.Error(codes.Unauthenticated, "no token")
		})}, func(err error) bool { return status.Code(err) == codes.Unauthenticated }},
		{"no limits", noLimits{}, nil, func(err error) bool {
			return strings.Contains(err.Error(), `streamd-max-event-bytes []`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := grpc.NewServer(tc.opts...)
			streamdv1.RegisterEventStreamServiceServer(g, tc.srv)
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go g.Serve(lis)
			defer g.Stop()
			conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			pub, err := New(ctx, conn, Options{})
			if err == nil {
				pub.Close()
				t.Fatal("New succeeded")
			}
			if ctx.Err() != nil || !strings.HasPrefix(err.Error(), "publisher: ") || !tc.want(err) {
				t.Fatalf("New = %v", err)
			}
		})
	}
}

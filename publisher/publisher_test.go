package publisher

import (
	"context"
	"errors"
	"fmt"
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
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a producer served over real TCP on 127.0.0.1, counting the
// publish requests it receives.
type server struct {
	p        *producer.Producer
	g        *grpc.Server
	conn     *grpc.ClientConn
	requests atomic.Int64
}

type countingStream struct {
	grpc.ServerStream
	n *atomic.Int64
}

func (s countingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.n.Add(1)
	}
	return err
}

func serve(t testing.TB) *server {
	t.Helper()
	p, err := producer.Open(t.TempDir(), producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := &server{p: p}
	s.g = grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return h(srv, countingStream{ServerStream: ss, n: &s.requests})
	}))
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
	s.p.Server().Shutdown()
	s.g.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := pub.Publish(ctx, car("a"))
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "publisher:") {
		t.Fatalf("publish after the server stopped: %v", err)
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
// it stands for.
func TestEncodeRequest(t *testing.T) {
	events := []*streamdv1.Event{car("a"), {EntityType: "car", EntityId: "b", SeqNr: 3, Tags: []string{"x"}}}
	var batch []*Ack
	size := 0
	for _, e := range events {
		raw, err := proto.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		batch, size = append(batch, &Ack{raw: raw}), size+len(raw)
	}
	var got streamdv1.PublishStreamRequest
	if err := proto.Unmarshal(encodeRequest(batch, size), &got); err != nil {
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
	if _, err := New(context.Background(), nil, Options{MaxBatchBytes: -1}); err == nil {
		t.Fatal("New accepted MaxBatchBytes -1")
	}
}

package main

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/publisher"
)

func wantExhausted(t *testing.T, what string, err error, mention string) {
	t.Helper()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), mention) {
		t.Fatalf("%s: %v, want ResourceExhausted mentioning %q", what, err, mention)
	}
}

func TestRateLimitPerClient(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--rate-limit", "1", "--rate-burst", "3")
	ctx := context.Background()
	client := streamdv1.NewEventStreamServiceClient(d.conn)
	var refused error
	ok := 0
	for range 10 {
		if _, err := client.JournalInfo(ctx, &streamdv1.JournalInfoRequest{}); err != nil {
			refused = err
			break
		}
		ok++
	}
	if ok < 3 || ok > 4 {
		t.Fatalf("%d calls passed before the first refusal, want the burst of 3 (4 if a token refilled)", ok)
	}
	wantExhausted(t, "call over the limit", refused, "over its rate limit of 1 calls/s (burst 3)")
	for range 10 {
		if _, err := healthpb.NewHealthClient(d.conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("health checks are limited: %v", err)
		}
	}
}

func TestStreamsPerConnection(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--max-streams-per-conn", "2")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func(conn *grpc.ClientConn) error {
		st, err := streamdv1.NewEventStreamServiceClient(conn).Subscribe(ctx)
		if err != nil {
			return err
		}
		// io.EOF: the server has ended the stream already; Recv says why.
		if err := st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
			StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST, ConsumerName: "t"}}}); err != nil && err != io.EOF {
			return err
		}
		_, err = st.Recv() // Hello, or the refusal
		return err
	}
	for i := range 2 {
		if err := open(d.conn); err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
	}
	wantExhausted(t, "third stream on the connection", open(d.conn), "streams are open on this connection")
	other, err := grpc.NewClient(d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := open(other); err != nil {
		t.Fatalf("a stream on another connection: %v", err)
	}
}

// A client that connects and never speaks (slow loris) is cut after the
// handshake timeout.
func TestHandshakeTimeout(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--handshake-timeout", "300ms")
	c, err := net.Dial("tcp", d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64)
	for {
		if _, err := c.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("streamd kept a silent connection open for 10s")
			}
			break // closed by the server
		}
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Fatalf("closed after %v, before the handshake timeout", waited)
	}
}

func TestOversizedMessageRefused(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--max-batch-bytes", "1048576", "--max-payload-bytes", "1048576")
	_, err := streamdv1.NewEventStreamServiceClient(d.conn).Publish(context.Background(), &streamdv1.PublishRequest{Events: []*streamdv1.Event{
		{EntityType: "car", EntityId: "c1", EventType: "Moved", Payload: make([]byte, 3<<20)}}})
	wantExhausted(t, "a 3 MiB publish with a 2 MiB message limit", err, "larger than max")
}

// A publisher learns streamd's limits from the stream: an event over them is
// refused alone, before it is sent, and the events around it are appended.
func TestPublisherRefusesOversizedEvent(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--max-batch-bytes", "1048576", "--max-payload-bytes", "1048576")
	pub, err := publisher.New(context.Background(), d.conn, publisher.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var acks []*publisher.Ack
	for i := range 3 {
		e := &streamdv1.Event{EntityType: "car", EntityId: "c1", EventType: "Moved", Payload: make([]byte, 100)}
		if i == 1 {
			e.Payload = make([]byte, 3<<20) // over the 2 MiB message limit
		}
		acks = append(acks, pub.PublishAsync(e))
	}
	for i, a := range acks {
		res, err := a.Result()
		if i == 1 {
			if !errors.Is(err, publisher.ErrTooLarge) || !strings.Contains(err.Error(), "its payload at most 1048576 bytes") {
				t.Errorf("publish of 3 MiB: %v", err)
			}
		} else if err != nil || res.SeqNr != uint64(i/2+1) {
			t.Errorf("publish %d: %+v, %v", i, res, err)
		}
	}
	if err := pub.Close(); err != nil {
		t.Fatal(err)
	}
}

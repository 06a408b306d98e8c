package producer

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

type panicking struct {
	streamdv1.UnimplementedEventStreamServiceServer
}

func (panicking) JournalInfo(context.Context, *streamdv1.JournalInfoRequest) (*streamdv1.JournalInfoResponse, error) {
	panic("boom")
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// A panicking handler answers Internal and is logged; the server lives on.
func TestInterceptorsRecoverAndLog(t *testing.T) {
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g := grpc.NewServer(Interceptors(log)...)
	streamdv1.RegisterEventStreamServiceServer(g, panicking{})
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
	client := streamdv1.NewEventStreamServiceClient(conn)
	for range 2 {
		_, err := client.JournalInfo(context.Background(), &streamdv1.JournalInfoRequest{})
		if status.Code(err) != codes.Internal {
			t.Fatalf("panicking handler answered %v, want Internal", err)
		}
	}
	out := logs.String()
	if !strings.Contains(out, "panic in gRPC handler") || !strings.Contains(out, "boom") ||
		!strings.Contains(out, "JournalInfo") {
		t.Fatalf("logs do not record the panic and the call:\n%s", out)
	}
}

package metrics

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestRefusalReasonIsBounded(t *testing.T) {
	for c := range codes.Code(17) {
		for _, msg := range []string{"", "grpc: received message larger than max (9 vs. 8)", "journal: not enough free disk space", "streamd: client x is over its rate limit of 1 calls/s"} {
			if r := RefusalReason(c, msg); !slices.Contains(Reasons, r) {
				t.Errorf("RefusalReason(%v, %q) = %q, not one of Reasons", c, msg, r)
			}
		}
	}
}

// refuser refuses every publish with the status its event type names
// ("ResourceExhausted:message"), in Publish's error and in each
// PublishStream answer.
type refuser struct {
	streamdv1.UnimplementedEventStreamServiceServer
}

func refusal(req *streamdv1.PublishRequest) *status.Status {
	code, msg, _ := strings.Cut(req.GetEvents()[0].GetEventType(), ":")
	var c codes.Code
	if err := c.UnmarshalJSON([]byte(`"` + strings.ToUpper(snake(code)) + `"`)); err != nil {
		panic(err)
	}
	return status.New(c, msg)
}

// snake turns ResourceExhausted into RESOURCE_EXHAUSTED's letters.
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (refuser) Publish(_ context.Context, req *streamdv1.PublishRequest) (*streamdv1.PublishResponse, error) {
	return nil, refusal(req).Err()
}

func (refuser) PublishStream(st streamdv1.EventStreamService_PublishStreamServer) error {
	for {
		req, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		s := refusal(&streamdv1.PublishRequest{Events: req.GetEvents()})
		if err := st.Send(&streamdv1.PublishStreamResponse{Code: int32(s.Code()), Message: s.Message()}); err != nil {
			return err
		}
	}
}

// TestPublishStatsCountsRefusals runs a gRPC server with PublishStats and
// a message limit, and refuses publishes for every reason.
func TestPublishStatsCountsRefusals(t *testing.T) {
	m := New()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(grpc.StatsHandler(m.PublishStats()), grpc.MaxRecvMsgSize(1000))
	streamdv1.RegisterEventStreamServiceServer(srv, refuser{})
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()
	conn, err := grpc.NewClient("passthrough:///bufconn", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := streamdv1.NewEventStreamServiceClient(conn)
	ctx := context.Background()
	publish := func(eventType string, payload int) {
		t.Helper()
		_, err := api.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EventType: eventType, Payload: make([]byte, payload)}}})
		if err == nil {
			t.Fatalf("publish %s: not refused", eventType)
		}
	}
	publish("InvalidArgument:journal: invalid event", 0)
	publish("ResourceExhausted:journal: not enough free disk space", 0)
	publish("ResourceExhausted:streamd: client 1.2.3.4 is over its rate limit of 1 calls/s (burst 1); slow down", 0)
	publish("Aborted:seqNr conflict", 0)
	publish("InvalidArgument:too big anyway", 2000) // refused by gRPC: too_large

	st, err := api.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, et := range []string{"InvalidArgument:x", "Unavailable:shutting down"} {
		if err := st.Send(&streamdv1.PublishStreamRequest{Events: []*streamdv1.Event{{EventType: et}}}); err != nil {
			t.Fatal(err)
		}
		if r, err := st.Recv(); err != nil || r.GetCode() == 0 {
			t.Fatalf("PublishStream answer %v, %v", r, err)
		}
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("PublishStream end: %v", err)
	}

	want := map[string]float64{"invalid": 2, "disk_full": 1, "rate_limited": 1, "seqnr_conflict": 1, "too_large": 1, "unavailable": 1}
	// The server counts a call at its end, which may come after the client
	// has its status (gRPC's own refusal of the message too large).
	testwait.For(t, 10*time.Second, "the 7 refusals counted", func() bool {
		var n float64
		for _, r := range Reasons {
			n += testutil.ToFloat64(m.refused.WithLabelValues(r))
		}
		return n >= 7
	})
	for _, r := range Reasons {
		got := testutil.ToFloat64(m.refused.WithLabelValues(r))
		if got != want[r] {
			t.Errorf("streamd_publish_refused_total{reason=%q} = %v, want %v", r, got, want[r])
		}
	}
	if n := testutil.CollectAndCount(m.refused); n != len(Reasons) {
		t.Errorf("%d reason series, want %d (every reason, from 0)", n, len(Reasons))
	}
}

package main

import (
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/aggregate"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// A replication's stats handler counts the bytes of the events it receives,
// summaries (the output types of the config's stages) apart from detail,
// and nothing of other messages.
func TestLinkBytes(t *testing.T) {
	reg := prometheus.NewRegistry()
	l := newLinkBytes(reg, []aggregate.Options{{Output: aggregate.Output{EntityType: "car-summary"}}})
	h := l.stats("replicate-us-all", "us")
	car := &streamdv1.Event{EntityType: "car", EntityId: "c1", EventType: "Moved", Payload: []byte("lap"), Offset: 7}
	sum := &streamdv1.Event{EntityType: "car-summary", EntityId: "us/sports", EventType: "LapsSummarized", Payload: []byte(`{"count":2}`), Offset: 8}
	batch := &streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Events{Events: &streamdv1.EventBatch{Events: []*streamdv1.Event{car, sum, car}}}}
	for _, st := range []stats.RPCStats{
		&stats.InPayload{Client: true, Payload: batch},
		&stats.InPayload{Client: true, Payload: &streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Hello{Hello: &streamdv1.Hello{LastOffset: 9}}}},
		&stats.InPayload{Client: true, Payload: &streamdv1.JournalInfoResponse{Events: 9}},
		&stats.OutPayload{Client: true, Payload: batch},
	} {
		h.HandleRPC(context.Background(), st)
	}
	if got, want := testutil.ToFloat64(l.bytes.WithLabelValues("replicate-us-all", "us", kindDetail)), float64(2*proto.Size(car)); got != want {
		t.Errorf("detail bytes = %v, want %v (two cars)", got, want)
	}
	if got, want := testutil.ToFloat64(l.bytes.WithLabelValues("replicate-us-all", "us", kindSummary)), float64(proto.Size(sum)); got != want {
		t.Errorf("summary bytes = %v, want %v", got, want)
	}
}

// BenchmarkLinkStats: the cost the byte count adds to each batch a
// replication receives (a batch of 500 events of 200-byte payloads).
func BenchmarkLinkStats(b *testing.B) {
	l := newLinkBytes(prometheus.NewRegistry(), []aggregate.Options{{Output: aggregate.Output{EntityType: "car-summary"}}})
	h := l.stats("replicate-us-all", "us")
	batch := &streamdv1.EventBatch{}
	for i := range 500 {
		batch.Events = append(batch.Events, &streamdv1.Event{EntityType: "car", EntityId: "c1", EventType: "Moved", Tags: []string{"sports"},
			Payload: make([]byte, 200), Offset: uint64(i + 1), SeqNr: uint64(i + 1), TimestampUnixNano: 1e18, Origin: "us"})
	}
	in := &stats.InPayload{Client: true, Payload: &streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Events{Events: batch}}}
	for b.Loop() {
		h.HandleRPC(context.Background(), in)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch.Events)), "ns/event")
}

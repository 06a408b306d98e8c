package main

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/aggregate"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// The kinds of events a replication receives: the summaries of aggregation
// stages, or the detail (every other event).
const (
	kindSummary = "summary"
	kindDetail  = "detail"
)

// linkBytes counts the bytes of the events each replication receives from
// its source, by kind. A summary is an event of an output entity type of
// the config's aggregation stages (the same file runs in every region, so
// these are the types the source's stages write too).
type linkBytes struct {
	bytes   *prometheus.CounterVec
	summary map[string]bool // entity types
}

func newLinkBytes(reg prometheus.Registerer, aggs []aggregate.Options) *linkBytes {
	l := &linkBytes{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamd_replication_received_bytes_total",
			Help: "Bytes of the events (protobuf-encoded, as sent) a replication received from its source region, by kind: summary (an output entity type of the config's aggregate: stages) or detail (every other event).",
		}, []string{"consumer", "region", "kind"}),
		summary: map[string]bool{},
	}
	for _, a := range aggs {
		l.summary[a.Output.EntityType] = true
	}
	reg.MustRegister(l.bytes)
	return l
}

// dialOption makes a replication's connections count what it receives.
func (l *linkBytes) dialOption(consumer, region string) grpc.DialOption {
	return grpc.WithStatsHandler(l.stats(consumer, region))
}

func (l *linkBytes) stats(consumer, region string) linkStats {
	return linkStats{
		summary: l.summary,
		bytes:   [2]prometheus.Counter{l.bytes.WithLabelValues(consumer, region, kindSummary), l.bytes.WithLabelValues(consumer, region, kindDetail)},
	}
}

// linkStats is the gRPC stats handler of one replication's connections: it
// sees each message as received, decoded.
type linkStats struct {
	summary map[string]bool
	bytes   [2]prometheus.Counter // summary, detail
}

func (s linkStats) HandleRPC(_ context.Context, st stats.RPCStats) {
	in, ok := st.(*stats.InPayload)
	if !ok {
		return
	}
	resp, ok := in.Payload.(*streamdv1.SubscribeResponse)
	if !ok {
		return
	}
	var summary, detail int
	for _, e := range resp.GetEvents().GetEvents() {
		if s.summary[e.GetEntityType()] {
			summary += proto.Size(e)
		} else {
			detail += proto.Size(e)
		}
	}
	s.bytes[0].Add(float64(summary))
	s.bytes[1].Add(float64(detail))
}

func (linkStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (linkStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (linkStats) HandleConn(context.Context, stats.ConnStats)                       {}

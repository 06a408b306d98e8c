package main

import (
	"context"
	"fmt"
	"maps"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// traffic is a count of events and bytes.
type traffic struct{ Events, Bytes int64 }

func (t traffic) minus(o traffic) traffic { return traffic{t.Events - o.Events, t.Bytes - o.Bytes} }

// arrivals is what reached the cloud's journal from the edges, each event
// counted at its size inside an EventBatch (batchedSize), as the raw
// readings are: summaries, and raw readings (raised detail) by category.
type arrivals struct {
	Summary, Raw traffic
	RawBy        map[string]traffic
}

func (a arrivals) minus(o arrivals) arrivals {
	d := arrivals{Summary: a.Summary.minus(o.Summary), Raw: a.Raw.minus(o.Raw), RawBy: map[string]traffic{}}
	for k, v := range a.RawBy {
		d.RawBy[k] = v.minus(o.RawBy[k])
	}
	return d
}

// cloudWatch follows the cloud's journal from its first event and counts
// what arrives.
type cloudWatch struct {
	mu sync.Mutex
	a  arrivals
}

func (w *cloudWatch) arrivals() arrivals {
	w.mu.Lock()
	defer w.mu.Unlock()
	a := w.a
	a.RawBy = maps.Clone(w.a.RawBy)
	return a
}

// run subscribes to the cloud at conn until ctx is done.
func (w *cloudWatch) run(ctx context.Context, conn *grpc.ClientConn) error {
	st, err := streamdv1.NewEventStreamServiceClient(conn).Subscribe(ctx)
	if err == nil {
		err = st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
			StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST, ConsumerName: "telemetry-report"}}})
	}
	for err == nil {
		var r *streamdv1.SubscribeResponse
		if r, err = st.Recv(); err != nil {
			break
		}
		w.count(r.GetEvents().GetEvents())
	}
	if ctx.Err() != nil && status.Code(err) == codes.Canceled {
		return nil
	}
	return fmt.Errorf("telemetry: following the cloud's journal: %w", err)
}

func (w *cloudWatch) count(evs []*streamdv1.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.a.RawBy == nil {
		w.a.RawBy = map[string]traffic{}
	}
	for _, e := range evs {
		n := batchedSize(e)
		switch e.EntityType {
		case summaryType:
			w.a.Summary = traffic{w.a.Summary.Events + 1, w.a.Summary.Bytes + n}
		case carType:
			category := ""
			if len(e.Tags) > 0 {
				category = e.Tags[0]
			}
			by := w.a.RawBy[category]
			w.a.RawBy[category] = traffic{by.Events + 1, by.Bytes + n}
			w.a.Raw = traffic{w.a.Raw.Events + 1, w.a.Raw.Bytes + n}
		}
	}
}

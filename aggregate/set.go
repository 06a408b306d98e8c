package aggregate

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Set runs stages and serves the AggregateService over them.
type Set struct {
	streamdv1.UnimplementedAggregateServiceServer
	stages []*Stage
	log    *slog.Logger
	// MinBackoff and MaxBackoff bound the wait before a stage that stopped
	// on an error runs again (it resumes from its checkpoint).
	MinBackoff, MaxBackoff time.Duration
}

// NewSet makes a set of stages with distinct names.
func NewSet(log *slog.Logger, stages ...*Stage) (*Set, error) {
	seen := map[string]bool{}
	for _, s := range stages {
		if seen[s.Name()] {
			return nil, fmt.Errorf("%w: two stages named %q", ErrInvalidOptions, s.Name())
		}
		seen[s.Name()] = true
	}
	return &Set{stages: stages, log: log, MinBackoff: time.Second, MaxBackoff: 30 * time.Second}, nil
}

// Stages are the set's stages.
func (set *Set) Stages() []*Stage { return set.stages }

// Run runs every stage until ctx is done. A stage that stops on an error
// (a full disk, another writer in its summary entities) is logged and run
// again after a backoff, from its checkpoint; the others run on.
func (set *Set) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, s := range set.stages {
		wg.Go(func() {
			backoff := set.MinBackoff
			for {
				err := s.Run(ctx)
				if ctx.Err() != nil {
					return
				}
				set.log.Error("aggregate: stage stopped; it runs again from its checkpoint", "aggregate", s.Name(), "err", err, "retry_in", backoff)
				t := time.NewTimer(backoff)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
				backoff = min(2*backoff, set.MaxBackoff)
			}
		})
	}
	wg.Wait()
}

// Register serves the AggregateService on srv.
func (set *Set) Register(srv grpc.ServiceRegistrar) {
	streamdv1.RegisterAggregateServiceServer(srv, set)
}

// ListAggregates implements the AggregateService.
func (set *Set) ListAggregates(_ context.Context, req *streamdv1.ListAggregatesRequest) (*streamdv1.ListAggregatesResponse, error) {
	res := &streamdv1.ListAggregatesResponse{}
	for _, s := range set.stages {
		if req.GetName() == "" || req.GetName() == s.Name() {
			res.Aggregates = append(res.Aggregates, StatusProto(s.Status()))
		}
	}
	if req.GetName() != "" && len(res.Aggregates) == 0 {
		return nil, status.Errorf(codes.NotFound, "aggregate: no stage named %q (streamctl aggregates list shows them all)", req.GetName())
	}
	return res, nil
}

// StatusProto is st on the wire.
func StatusProto(st Status) *streamdv1.AggregateStatus {
	c := st.Counters
	p := &streamdv1.AggregateStatus{
		Name: st.Name, OutputEntityType: st.OutputEntityType, Running: st.Running,
		NextOffset: st.Next, Lag: st.Lag, WatermarkUnixMs: st.WatermarkMs, OpenWindows: uint32(st.OpenWindows),
		Read: c.Read, Aggregated: c.Aggregated, Late: c.Late, SkippedNotJson: c.NotJSON, SkippedMissingField: c.MissingField,
		SkippedNotNumber: c.NotNumber, SkippedTooManyWindows: c.TooManyWindows, Summaries: c.Summaries,
	}
	if st.Err != nil {
		p.Error = st.Err.Error()
	}
	if l := st.Last; l.Summaries > 0 {
		p.LastWindow = &streamdv1.AggregateWindow{StartUnixMs: l.StartMs, EndUnixMs: l.EndMs, Summaries: uint32(l.Summaries),
			Events: l.Events, WrittenUnixNano: l.WrittenAt.UnixNano()}
	}
	return p
}

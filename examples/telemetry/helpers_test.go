package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is the producers' and the cloud's clock of filter expiry in
// tests: it moves only when told.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// testEpoch is the sample time of the first tick in tests.
var testEpoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// openTestSystem opens a system in t.TempDir(); it is closed at cleanup.
func openTestSystem(t *testing.T, o options) *system {
	t.Helper()
	o.dir, o.async = t.TempDir(), true
	if o.log == nil {
		o.log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if o.now == nil {
		o.now = time.Now
	}
	sys, err := openSystem(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := sys.close(); err != nil {
			t.Error(err)
		}
	})
	return sys
}

// background runs fn until the returned stop is called; stop returns fn's
// error. It is also stopped at cleanup.
func background(t *testing.T, fn func(context.Context) error) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var err error
	var stopped bool
	stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

// lastOffsets are the edges' last offsets now.
func lastOffsets(sys *system) []uint64 {
	var out []uint64
	for _, e := range sys.edges {
		out = append(out, e.prod.Journal().LastOffset())
	}
	return out
}

// waitCloudAt waits until the cloud consumer has processed every edge's
// journal up to the offsets given (in the order of sys.edges).
func waitCloudAt(t *testing.T, sys *system, offsets []uint64) {
	t.Helper()
	testwait.For(t, 20*time.Second, "the cloud to reach the edges' offsets", func() bool {
		for i, st := range sys.cloud.consumer.Status() {
			if st.Offset < offsets[i] {
				return false
			}
		}
		return true
	})
}

// waitPublished waits until every edge has published ticks more ticks and
// the cloud has processed them, and returns the edges' offsets it waited for.
func waitPublished(t *testing.T, sys *system, ticks int64) []uint64 {
	t.Helper()
	var from []int64
	for _, e := range sys.edges {
		from = append(from, e.sim.ticks.Load())
	}
	testwait.For(t, 20*time.Second, "the simulators to publish", func() bool {
		for i, e := range sys.edges {
			if e.sim.ticks.Load() < from[i]+ticks {
				return false
			}
		}
		return true
	})
	at := lastOffsets(sys)
	waitCloudAt(t, sys, at)
	return at
}

// readAll returns every event of a journal, in offset order.
func readAll(t *testing.T, j *journal.Journal) []*streamdv1.Event {
	t.Helper()
	var out []*streamdv1.Event
	for {
		evs, err := j.Read(uint64(len(out))+1, 10_000, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
	}
}

// summariesOf decodes the summaries of one (region, category) in a journal,
// in seqNr order.
func summariesOf(t *testing.T, j *journal.Journal, region, category string) []summary {
	t.Helper()
	evs, err := j.ReadEntity(summaryType, region+"/"+category, 1, 100_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []summary
	for i, e := range evs {
		if e.SeqNr != uint64(i+1) {
			t.Fatalf("summary %d of %s/%s has seqNr %d", i+1, region, category, e.SeqNr)
		}
		var s summary
		if err := json.Unmarshal(e.Payload, &s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// expectedSummaries recomputes, from the raw readings in an edge journal,
// the summaries of every closed window per category: readings grouped by
// category and by sample time / window in offset order, each group closed
// by the first reading of a later window. The open last window of each
// category is left out. It shares no code with the aggregator.
func expectedSummaries(t *testing.T, evs []*streamdv1.Event, region string, window time.Duration) map[string][]summary {
	t.Helper()
	ms := window.Milliseconds()
	open := map[string]*summary{}
	sums := map[string][2]float64{} // speed, rpm of the open window
	out := map[string][]summary{}
	for _, e := range evs {
		if e.EntityType != carType {
			continue
		}
		cat := e.Tags[0]
		var s sample
		if err := json.Unmarshal(e.Payload, &s); err != nil {
			t.Fatal(err)
		}
		n := s.T / ms
		cur := open[cat]
		if cur != nil && n < cur.Window {
			t.Fatalf("reading %s/%d of window %d after window %d: the simulator publishes in sample time order", e.EntityId, e.SeqNr, n, cur.Window)
		}
		if cur != nil && n > cur.Window {
			sum := sums[cat]
			cur.MeanSpeed, cur.MeanRPM = sum[0]/float64(cur.Count), sum[1]/float64(cur.Count)
			out[cat] = append(out[cat], *cur)
			cur = nil
		}
		if cur == nil {
			cur = &summary{Region: region, Category: cat, Window: n, StartMs: n * ms, EndMs: (n + 1) * ms, MaxSpeed: s.Speed, MaxRPM: s.RPM}
			open[cat], sums[cat] = cur, [2]float64{}
		}
		cur.Count++
		cur.MaxSpeed, cur.MaxRPM = max(cur.MaxSpeed, s.Speed), max(cur.MaxRPM, s.RPM)
		sums[cat] = [2]float64{sums[cat][0] + s.Speed, sums[cat][1] + s.RPM}
	}
	return out
}

package main

import (
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/streamd/streamd/aggregate"
	"github.com/streamd/streamd/internal/streamdtest"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

var long = flag.Bool("long", false, "kill the edge's streamd 50 times in TestStageExactlyOnceAcrossSIGKILL (default 10)")

func TestMain(m *testing.M) { goleak.VerifyTestMain(streamdtest.M(m)) }

// testConfig is the example's edge config with a shorter window and grace.
func testConfig(t *testing.T, window, grace string) []byte {
	t.Helper()
	c := strings.Replace(string(edgeConfig), "window: 5s", "window: "+window, 1)
	c = strings.Replace(c, "grace: 1s", "grace: "+grace, 1)
	if c == string(edgeConfig) {
		t.Fatal("config/edge.yaml no longer has window: 5s and grace: 1s to replace")
	}
	return []byte(c)
}

// startTestSystem starts the daemons in t.TempDir(); they are stopped at
// cleanup.
func startTestSystem(t *testing.T, o options) *system {
	t.Helper()
	bin, err := streamdtest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	o.streamd, o.dir, o.durability = bin, t.TempDir(), "async"
	if o.cloudConfig == nil {
		o.cloudConfig = cloudConfig
	}
	if o.log == nil {
		o.log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if o.epoch.IsZero() {
		o.epoch = time.Now()
	}
	sys, err := startSystem(o)
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

// stageOf describes the aggregation stage of an edge, through the
// AggregateService (what streamctl aggregates list shows).
func stageOf(t *testing.T, e *edge) *streamdv1.AggregateStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := streamdv1.NewAggregateServiceClient(e.conn).ListAggregates(ctx, &streamdv1.ListAggregatesRequest{Name: "car-summary"}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	return res.Aggregates[0]
}

// waitCaughtUp waits until the stage of every edge has read the edge's
// whole journal.
func waitCaughtUp(t *testing.T, sys *system) {
	t.Helper()
	for _, e := range sys.edges {
		testwait.For(t, 30*time.Second, "the stage of "+e.name+" to read every event", func() bool {
			st := stageOf(t, e)
			return st.Running && st.Lag == 0
		})
	}
}

// openJournal opens a stopped region's journal.
func openJournal(t *testing.T, sys *system, region string) *journal.Journal {
	t.Helper()
	j, err := journal.Open(filepath.Join(sys.opts.dir, region), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

// readAll returns every event of a journal, in offset order.
func readAll(t *testing.T, j *journal.Journal) []*streamdv1.Event {
	t.Helper()
	var out []*streamdv1.Event
	for from := j.Info().FirstOffset; ; {
		evs, err := j.Read(from, 10_000, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
		out = append(out, evs...)
		from = evs[len(evs)-1].Offset + 1
	}
}

// window names one summary: a category's window by its start.
type window struct {
	category string
	startMs  int64
}

// summariesIn decodes the summaries of region in a journal: each of its
// category entities must have seqNrs 1, 2, 3… and each window one summary.
func summariesIn(t *testing.T, j *journal.Journal, region string) map[window]aggregate.Summary {
	t.Helper()
	out := map[window]aggregate.Summary{}
	for _, c := range categories {
		evs, err := j.ReadEntity(summaryType, region+"/"+c, 1, 1_000_000, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range evs {
			if e.SeqNr != uint64(i+1) || e.EventType != "WindowSummarized" {
				t.Fatalf("summary %d of %s/%s: seqNr %d, event type %s", i+1, region, c, e.SeqNr, e.EventType)
			}
			var s aggregate.Summary
			if err := json.Unmarshal(e.Payload, &s); err != nil {
				t.Fatal(err)
			}
			w := window{s.Group["tag"], s.StartMs}
			if w.category != c {
				t.Fatalf("summary %d of %s/%s is of category %q", i+1, region, c, w.category)
			}
			if prev, dup := out[w]; dup {
				t.Fatalf("%s/%s: window %d written twice:\n%+v\n%+v", region, c, w.startMs, prev, s)
			}
			out[w] = s
		}
	}
	return out
}

// recompute computes, from the raw readings of an edge journal and
// independently of package aggregate, the summary of every window the
// stage has closed: readings in offset order, grouped by category and by
// sample time t / window; the watermark is the latest t read; a window is
// closed once the watermark reaches its end + grace, and a reading of a
// closed window is late and left out.
func recompute(t *testing.T, evs []*streamdv1.Event, length, grace time.Duration) (map[window]aggregate.Summary, int) {
	t.Helper()
	type sums struct {
		n                            int
		speed, rpm, maxSpeed, maxRPM float64
	}
	w, g := length.Milliseconds(), grace.Milliseconds()
	open := map[window]*sums{}
	var watermark int64 = math.MinInt64
	late := 0
	for _, e := range evs {
		if e.EntityType != carType {
			continue
		}
		var s sample
		if err := json.Unmarshal(e.Payload, &s); err != nil {
			t.Fatal(err)
		}
		k := window{e.Tags[0], s.T - s.T%w}
		if k.startMs+w+g <= watermark {
			late++
			continue
		}
		cur := open[k]
		if cur == nil {
			cur = &sums{maxSpeed: s.Speed, maxRPM: s.RPM}
			open[k] = cur
		}
		cur.n++
		cur.speed += s.Speed
		cur.rpm += s.RPM
		cur.maxSpeed, cur.maxRPM = max(cur.maxSpeed, s.Speed), max(cur.maxRPM, s.RPM)
		watermark = max(watermark, s.T)
	}
	out := map[window]aggregate.Summary{}
	for k, s := range open {
		if k.startMs+w+g > watermark {
			continue // still open
		}
		v := func(x float64) *float64 { return &x }
		out[k] = aggregate.Summary{Stage: "car-summary", StartMs: k.startMs, EndMs: k.startMs + w,
			Group: map[string]string{"tag": k.category}, Count: uint64(s.n),
			Values: map[string]map[aggregate.Op]*float64{
				"speed_kmh": {aggregate.OpAvg: v(s.speed / float64(s.n)), aggregate.OpMax: v(s.maxSpeed)},
				"rpm":       {aggregate.OpAvg: v(s.rpm / float64(s.n)), aggregate.OpMax: v(s.maxRPM)},
			}}
	}
	return out, late
}

// sameSummaries compares summaries by window; it reports the differences.
func sameSummaries(t *testing.T, what string, got, want map[window]aggregate.Summary) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d summaries, want %d", what, len(got), len(want))
	}
	var keys []window
	for k := range want {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b window) int {
		return cmp.Or(cmp.Compare(a.startMs, b.startMs), strings.Compare(a.category, b.category))
	})
	bad := 0
	for _, k := range keys {
		g, ok := got[k]
		gj, _ := json.Marshal(g)
		wj, _ := json.Marshal(want[k])
		if !ok || string(gj) != string(wj) {
			if bad++; bad <= 5 {
				t.Errorf("%s: window %s@%d:\n got %s\nwant %s", what, k.category, k.startMs, gj, wj)
			}
		}
	}
}

package console

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// fakeAdmin answers the AdminService calls the console makes from what a
// test sets; other calls are Unimplemented.
type fakeAdmin struct {
	mu         sync.Mutex
	consumers  []*streamdv1.ConsumerStatus
	aggregates []*streamdv1.AggregateStatus
	primaries  map[string]string // entity type: its primary now
	interests  []*streamdv1.EntityInterest
	// interestsErr fails ListInterests.
	interestsErr error
}

func (f *fakeAdmin) set(cs ...*streamdv1.ConsumerStatus) {
	f.mu.Lock()
	f.consumers = cs
	f.mu.Unlock()
}

func (f *fakeAdmin) Invoke(_ context.Context, method string, args, reply any, _ ...grpc.CallOption) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	var resp proto.Message
	switch method {
	case streamdv1.AdminService_ListConsumers_FullMethodName:
		r := &streamdv1.ListConsumersResponse{}
		for _, c := range f.consumers {
			if name := args.(*streamdv1.ListConsumersRequest).GetConsumer(); name == "" || name == c.Name {
				r.Consumers = append(r.Consumers, c)
			}
		}
		if len(r.Consumers) == 0 && args.(*streamdv1.ListConsumersRequest).GetConsumer() != "" {
			return status.Error(codes.NotFound, "admin: unknown consumer")
		}
		resp = r
	case streamdv1.AdminService_MoveOffsets_FullMethodName:
		resp = &streamdv1.MoveOffsetsResponse{Executed: args.(*streamdv1.MoveOffsetsRequest).GetExecute()}
	case streamdv1.AdminService_UpdateConsumerFilter_FullMethodName:
		resp = &streamdv1.UpdateConsumerFilterResponse{Filter: args.(*streamdv1.UpdateConsumerFilterRequest).GetAdd()}
	case streamdv1.AggregateService_ListAggregates_FullMethodName:
		resp = &streamdv1.ListAggregatesResponse{Aggregates: f.aggregates}
	case streamdv1.InterestService_ListInterests_FullMethodName:
		if f.interestsErr != nil {
			return f.interestsErr
		}
		resp = &streamdv1.ListInterestsResponse{Interests: f.interests}
	case streamdv1.PrimaryService_GetPrimary_FullMethodName:
		name := args.(*streamdv1.GetPrimaryRequest).GetEntityType()
		primary, ok := f.primaries[name]
		if !ok {
			return status.Errorf(codes.NotFound, "topology: unknown entity type: %q", name)
		}
		resp = &streamdv1.GetPrimaryResponse{EntityType: name, Primary: primary, PinnedIn: primary, PinnedAtUnixNano: 5e6}
	case streamdv1.PrimaryService_Failover_FullMethodName:
		req := args.(*streamdv1.FailoverRequest)
		resp = &streamdv1.FailoverResponse{EntityTypes: []string{"order"}, Executed: req.GetExecute(), AtRisk: 2, Progress: []*streamdv1.RegionProgress{
			{Region: req.GetTo(), Reachable: true, AppliedOffset: 3, KnownOffset: 5}, {Region: "ap", Reachable: true, AppliedOffset: 4, KnownOffset: 5}}}
	default:
		return status.Errorf(codes.Unimplemented, "fake: %s", method)
	}
	proto.Merge(reply.(proto.Message), resp)
	return nil
}

func (f *fakeAdmin) NewStream(context.Context, *grpc.StreamDesc, string, ...grpc.CallOption) (grpc.ClientStream, error) {
	return nil, status.Error(codes.Unimplemented, "fake: no streams")
}

func consumerWith(name string, offset, lag uint64) *streamdv1.ConsumerStatus {
	return &streamdv1.ConsumerStatus{Name: name, Running: true,
		Producers: []*streamdv1.ProducerStatus{{Addr: "127.0.0.1:1", Offset: offset, Lag: lag, Connected: true}}}
}

func TestValidate(t *testing.T) {
	ok := Options{Conn: &fakeAdmin{}, Info: func() journal.Info { return journal.Info{} }, Gatherer: prometheus.NewRegistry()}
	for _, tc := range []struct {
		change func(*Options)
		want   string
	}{
		{func(o *Options) { o.Conn = nil }, "Options.Conn"},
		{func(o *Options) { o.Info = nil }, "Options.Info"},
		{func(o *Options) { o.Gatherer = nil }, "Options.Gatherer"},
		{func(o *Options) { o.Interval = -time.Second }, "Options.Interval"},
	} {
		o := ok
		tc.change(&o)
		if err := o.Validate(); !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate = %v, want ErrInvalidOptions naming %s", err, tc.want)
		}
	}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
}

// The figures of a snapshot follow from the metrics and the admin API
// between samples: rates per second, the mean fsync, each consumer's lag
// series and how long it has been behind, the readers with open streams.
func TestSnapshotFigures(t *testing.T) {
	reg := prometheus.NewRegistry()
	appended := prometheus.NewCounter(prometheus.CounterOpts{Name: "streamd_journal_events_appended_total"})
	fsync := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "streamd_journal_fsync_seconds"})
	lag := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "streamd_stream_lag_events"}, []string{"stream", "consumer"})
	sent := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "streamd_stream_events_sent_total"}, []string{"stream", "consumer"})
	reg.MustRegister(appended, fsync, lag, sent)
	lag.WithLabelValues("all", "billing").Set(4)
	sent.WithLabelValues("all", "billing").Add(10)
	sent.WithLabelValues("all", "gone").Add(3) // its stream closed: no lag, not listed

	admin := &fakeAdmin{}
	admin.set(consumerWith("r", 10, 3))
	failure := errors.New("journal: fsync: input/output error")
	var failed bool
	var mu sync.Mutex
	c, err := New(Options{Conn: admin, Gatherer: reg, Interval: time.Hour,
		Info: func() journal.Info {
			return journal.Info{JournalID: []byte{0xab, 0xcd}, FirstOffset: 3, LastOffset: 9, Events: 7, Bytes: 100}
		},
		Err: func() error {
			mu.Lock()
			defer mu.Unlock()
			if failed {
				return failure
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitSample(t, c)

	appended.Add(50)
	fsync.Observe(0.001)
	fsync.Observe(0.003)
	admin.set(consumerWith("r", 20, 5))
	c.takeSample()
	admin.set(consumerWith("r", 20, 0))
	c.takeSample()
	admin.set(consumerWith("r", 26, 7))
	mu.Lock()
	failed = true
	mu.Unlock()
	c.takeSample()

	snap, _, _ := c.samples.current()
	pts := c.samples.points
	dt := func(i int) float64 { return pts[i].t.Sub(pts[i-1].t).Seconds() }
	near := func(got, want float64) bool { return math.Abs(got-want) <= 1e-9*math.Max(1, math.Abs(want)) }
	if len(snap.Rate) != 4 || !near(snap.Rate[1], 50/dt(1)) || snap.Rate[2] != 0 || snap.Rate[0] != 0 {
		t.Errorf("rate = %v, want [0 %v 0 0]", snap.Rate, 50/dt(1))
	}
	if !near(snap.Fsync[1], 2) || snap.Fsync[2] != 0 {
		t.Errorf("fsync = %v ms, want 2 at the second sample, 0 after", snap.Fsync)
	}
	if got := snap.Lags["r"]; len(got) != 4 || got[0] != 3 || got[1] != 5 || got[2] != 0 || got[3] != 7 {
		t.Errorf("lags = %v, want [3 5 0 7]", got)
	}
	if got, want := snap.Behind["r"], pts[3].t.Sub(pts[2].t).Seconds(); !near(got, want) {
		t.Errorf("behind = %v s, want %v (since the sample with lag 0)", got, want)
	}
	if got := snap.Moves["r"]; !near(got[1], 10/dt(1)) || got[2] != 0 || !near(got[3], 6/dt(3)) {
		t.Errorf("offsets per second = %v", got)
	}
	if len(snap.Readers) != 1 || snap.Readers[0] != (Reader{Stream: "all", Consumer: "billing", Lag: 4, Sent: 10}) {
		t.Errorf("readers = %+v, want billing on all with lag 4 and 10 sent", snap.Readers)
	}
	if snap.JournalID != "abcd" || snap.First != 3 || snap.Last != 9 || snap.Events != 7 || snap.Bytes != 100 {
		t.Errorf("journal figures = %+v", snap)
	}
	if snap.Health != "FAILED" || snap.HealthErr != failure.Error() {
		t.Errorf("health = %q %q, want FAILED with the journal's error", snap.Health, snap.HealthErr)
	}
	var cs struct {
		Name      string `json:"name"`
		Producers []struct {
			Offset string `json:"offset"`
		} `json:"producers"`
	}
	if err := json.Unmarshal(snap.Consumers[0], &cs); err != nil || cs.Name != "r" || cs.Producers[0].Offset != "26" {
		t.Errorf("consumer as the admin API lists it: %s (%v)", snap.Consumers[0], err)
	}
}

// Samples older than History are dropped, the last one kept.
func TestHistory(t *testing.T) {
	c, err := New(Options{Conn: &fakeAdmin{}, Gatherer: prometheus.NewRegistry(), Interval: time.Hour, History: time.Nanosecond,
		Info: func() journal.Info { return journal.Info{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitSample(t, c)
	c.takeSample()
	c.takeSample()
	if snap, _, _ := c.samples.current(); len(snap.Times) != 1 {
		t.Fatalf("%d samples kept, want 1", len(snap.Times))
	}
}

func waitSample(t *testing.T, c *Console) {
	t.Helper()
	_, ok, changed := c.samples.current()
	if ok {
		return
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("no first sample")
	}
}

// FuzzActions: any body to the action endpoints is answered with JSON,
// an error for what is not a valid request, never a panic.
func FuzzActions(f *testing.F) {
	admin := &fakeAdmin{}
	admin.set(consumerWith("r", 1, 0))
	c, err := New(Options{Conn: admin, Gatherer: prometheus.NewRegistry(), Interval: time.Hour,
		Info: func() journal.Info { return journal.Info{} }})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { c.Close() })
	h := c.Handler()
	csrf := c.csrf("")
	for _, seed := range []string{
		`{"consumer":"r","to":"offset","offset":3}`, `{"consumer":"r","to":"time","time":"2026-01-02T15:04:05Z","execute":true}`,
		`{"consumer":"r","add":["include tag=a ttl=1m"]}`, `{"consumer":"r","remove":["include tag=a"],"execute":true}`,
		`{"to":"sideways"}`, `{"add":["include bogus"]}`, `[]`, `{"consumer":1}`, ``,
		`{"from":"us","to":"eu"}`, `{"from":"us","to":"eu","execute":true}`, `{"from":"eu","to":"eu"}`, `{"from":"us"}`,
	} {
		f.Add(byte(0), seed)
		f.Add(byte(1), seed)
		f.Add(byte(2), seed)
	}
	f.Fuzz(func(t *testing.T, which byte, body string) {
		path := [...]string{Path + "api/offsets/move", Path + "api/filters/update", Path + "api/primary/failover"}[which%3]
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Host = "127.0.0.1:9464"
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set(csrfHeader, csrf)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var resp map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatalf("%s %q: %d, not JSON: %q", path, body, w.Code, w.Body.String())
		}
		if w.Code != http.StatusOK {
			if msg, _ := resp["error"].(string); msg == "" {
				t.Fatalf("%s %q: %d without an error message: %s", path, body, w.Code, w.Body.String())
			}
		}
	})
}

func TestListed(t *testing.T) {
	for _, tc := range []struct {
		object string
		want   int
	}{
		{`{"consumers":[],"readers":[{"consumer":"a"},{"consumer":"b"}]}`, 2},
		{`{"consumers":[{"name":"r"}]}`, 0},
		{`{"readers":{}}`, 0},
		{`not json`, 0},
	} {
		if got := listed([]byte(tc.object), "readers"); len(got) != tc.want {
			t.Errorf("listed(%s) = %d elements, want %d", tc.object, len(got), tc.want)
		}
	}
}

// The regions and aggregation figures of a snapshot: each link's bytes by
// kind and per second, each entity type's primary now (or why not) and
// its on-demand settings, each stage's last windows (a window written again
// replaces itself, at most keptWindows, a snapshot's own copy), the
// entries of interest in milliseconds (or why ListInterests failed).
func TestSnapshotRegionsAndStages(t *testing.T) {
	reg := prometheus.NewRegistry()
	received := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "streamd_replication_received_bytes_total"}, []string{"consumer", "region", "kind"})
	forwards := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "streamd_primary_forwards_total"}, []string{"entity_type"})
	reg.MustRegister(received, forwards)
	received.WithLabelValues("region-us", "us", "summary").Add(100)
	received.WithLabelValues("region-us", "us", "detail").Add(1000)
	forwards.WithLabelValues("order").Add(2)
	admin := &fakeAdmin{primaries: map[string]string{"order": "eu", "cart": "us"}, interests: []*streamdv1.EntityInterest{
		{EntityId: "c1", EntityTypes: []string{"cart"}, Regions: []string{"ap", "us"}, SinceUnixNano: 1_500_999_999, ExpiresAtUnixNano: 61_500_000_001}}}
	window := func(start int64, summaries uint32) {
		admin.mu.Lock()
		admin.aggregates = []*streamdv1.AggregateStatus{{Name: "laps", LastWindow: &streamdv1.AggregateWindow{
			StartUnixMs: start, EndUnixMs: start + 1000, Summaries: summaries, Events: 3, WrittenUnixNano: (start + 2000) * 1e6}}}
		admin.mu.Unlock()
	}
	window(0, 1)
	c, err := New(Options{Conn: admin, Gatherer: reg, Interval: time.Hour, Info: func() journal.Info { return journal.Info{} },
		EntityTypes: []EntityType{{Name: "order", Mode: "pinned", Configured: "us"}, {Name: "gone", Mode: "pinned", Configured: "us"},
			{Name: "cart", Mode: "pinned", Configured: "us", OnDemand: true, SummaryTypes: []string{"cart-summary"}, Inactivity: time.Minute}, {Mode: "local"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitSample(t, c)
	first, _, _ := c.samples.current()
	window(0, 2) // another group of the same window
	received.WithLabelValues("region-us", "us", "detail").Add(500)
	c.takeSample()
	if again, _, _ := c.samples.current(); len(again.Windows["laps"]) != 1 || again.Windows["laps"][0].Summaries != 2 {
		t.Errorf("windows after a window written again = %+v, want it once, with 2 summaries", again.Windows["laps"])
	}
	for i := range int64(keptWindows + 1) {
		window((i+1)*1000, 1)
		c.takeSample()
	}

	snap, _, _ := c.samples.current()
	pts := c.samples.points
	near := func(got, want float64) bool { return math.Abs(got-want) <= 1e-9*math.Max(1, math.Abs(want)) }
	lb := snap.LinkBytes["region-us"]
	if lb.Summary != 100 || lb.Detail != 1500 || lb.SummaryRate[1] != 0 || !near(lb.DetailRate[1], 500/pts[1].t.Sub(pts[0].t).Seconds()) || lb.DetailRate[2] != 0 {
		t.Errorf("link bytes = %+v, want 100 summary, 1500 detail, 500 of it in the second sample", lb)
	}
	want := []Primary{
		{EntityType: EntityType{Name: "order", Mode: "pinned", Configured: "us"}, Primary: "eu", PinnedIn: "eu", PinnedAt: 5, Forwards: 2},
		{EntityType: EntityType{Name: "gone", Mode: "pinned", Configured: "us"}, Error: `topology: unknown entity type: "gone"`},
		{EntityType: EntityType{Name: "cart", Mode: "pinned", Configured: "us", OnDemand: true, SummaryTypes: []string{"cart-summary"}, Inactivity: time.Minute}, Primary: "us", PinnedIn: "us", PinnedAt: 5},
		{EntityType: EntityType{Mode: "local"}},
	}
	if len(snap.EntityTypes) != len(want) {
		t.Fatalf("entity types = %+v", snap.EntityTypes)
	}
	for i := range want {
		if !reflect.DeepEqual(snap.EntityTypes[i], want[i]) {
			t.Errorf("entity type %d = %+v, want %+v", i, snap.EntityTypes[i], want[i])
		}
	}
	ws := snap.Windows["laps"]
	if len(ws) != keptWindows || ws[0].Start != 2000 || ws[keptWindows-1].Start != (keptWindows+1)*1000 || ws[0].Written != 4000 {
		t.Errorf("windows = %+v, want the last %d, from the one at 2000 ms", ws, keptWindows)
	}
	if got := first.Windows["laps"]; len(got) != 1 || got[0].Summaries != 1 {
		t.Errorf("the first snapshot's windows became %+v: a later sample changed them", got)
	}
	c.samples.mu.Lock()
	if w := c.samples.windows["laps"]; len(w) != keptWindows {
		t.Errorf("%d windows kept, want %d", len(w), keptWindows)
	}
	c.samples.mu.Unlock()
	if len(snap.Aggregates) != 1 || !strings.Contains(string(snap.Aggregates[0]), `"name":"laps"`) {
		t.Errorf("aggregates = %s", snap.Aggregates)
	}
	wantInterests := []Interest{{EntityID: "c1", EntityTypes: []string{"cart"}, Regions: []string{"ap", "us"}, Since: 1500, Expires: 61_500}}
	if !reflect.DeepEqual(snap.Interests, wantInterests) || snap.InterestsError != "" {
		t.Errorf("interests = %+v (error %q), want %+v", snap.Interests, snap.InterestsError, wantInterests)
	}

	// A ListInterests that fails shows why, and no entries.
	admin.mu.Lock()
	admin.interestsErr = status.Error(codes.Unavailable, "producer: shutting down")
	admin.mu.Unlock()
	c.takeSample()
	if snap, _, _ := c.samples.current(); snap.Interests != nil || snap.InterestsError != "producer: shutting down" {
		t.Errorf("interests after a failed ListInterests = %+v, error %q", snap.Interests, snap.InterestsError)
	}
}

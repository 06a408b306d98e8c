package main

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Two edges, cars in three categories, simulated ten times faster than real
// time. The cloud gets the summaries; then the detail is raised for sports
// cars (every sports reading from then on crosses, nothing of the other
// categories), runs out on the producers' clock (no raw reading committed
// after that crosses), and one truck is followed with a replay from its
// seqNr 3. At the end the summaries in both edges and in the cloud are
// compared with the ones recomputed from the raw readings.
func TestSummariesAndDetailAcrossTheLink(t *testing.T) {
	clock := &fakeClock{}
	clock.Set(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	opts := options{regions: []string{"eu", "us"}, cars: 15, rate: 5, window: 2 * time.Second, speed: 10, epoch: testEpoch, now: clock.Now}
	sys := openTestSystem(t, opts)
	stopSims := background(t, sys.runSims)
	stopConsumers := background(t, sys.runConsumers)

	testwait.For(t, 20*time.Second, "3 summaries of every region and category in the cloud", func() bool {
		for _, r := range opts.regions {
			for _, c := range categories {
				if last, _ := sys.cloud.prod.Journal().ReadEntity(summaryType, r+"/"+c, 3, 1, nil); len(last) == 0 {
					return false
				}
			}
		}
		return true
	})
	if l := sys.meter.stats(); l.Raw.Events != 0 || l.Summary.Events == 0 {
		t.Fatalf("before any detail was raised: %d raw and %d summary events crossed, want 0 and > 0", l.Raw.Events, l.Summary.Events)
	}

	// Raise the detail for sports cars for an hour of the producers' clock.
	ctx := context.Background()
	if _, err := sys.cloud.addFilter(ctx, "include tag=sports ttl=1h"); err != nil {
		t.Fatal(err)
	}
	raised := lastOffsets(sys) // every later sports reading must cross
	active := waitPublished(t, sys, 10)

	// The hour passes on the producers' clock: from then on no raw reading
	// may cross, without a word from the cloud.
	clock.Set(clock.Now().Add(time.Hour + time.Second))
	expired := lastOffsets(sys) // committed after the expiry: must not cross
	waitPublished(t, sys, 5)
	before := sys.meter.stats()
	waitPublished(t, sys, 10)
	if after := sys.meter.stats(); after.Raw != before.Raw {
		t.Errorf("after the expiry %d raw events (%d bytes) crossed the link", after.Raw.Events-before.Raw.Events, after.Raw.Bytes-before.Raw.Bytes)
	}
	if by := sys.meter.stats().RawBy; len(by) != 1 || by["sports"].Events == 0 {
		t.Errorf("raw events crossed by category: %v, want only sports", by)
	}

	// Follow one truck, with its history from seqNr 3.
	const truck = "eu-00002"
	if _, err := sys.cloud.addFilter(ctx, "include entity="+truck+" replay=3 ttl=1h"); err != nil {
		t.Fatal(err)
	}
	followed := waitPublished(t, sys, 5)

	// Stop the cars, let everything catch up, and compare.
	if err := stopSims(); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 20*time.Second, "the aggregators to catch up", func() bool {
		for _, e := range sys.edges {
			if e.aggregator.Status()[0].Offset < e.prod.Journal().LastOffset() {
				return false
			}
		}
		return true
	})
	waitCloudAt(t, sys, lastOffsets(sys))
	if err := stopConsumers(); err != nil {
		t.Fatal(err)
	}

	details, err := sys.cloud.details()
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range sys.edges {
		evs := readAll(t, e.prod.Journal())
		checkSummaries(t, sys, e, evs)
		for _, c := range e.sim.cars {
			d, got := details[c.id]
			switch {
			case c.category == "sports":
				checkRun(t, c.id, d, evs, func(e *streamdv1.Event) bool { return e.Offset > raised[i] && e.Offset <= active[i] })
				if d.LastOffset > expired[i] {
					t.Errorf("%s: a reading at offset %d crossed after the expiry (offset %d)", c.id, d.LastOffset, expired[i])
				}
			case c.id == truck:
				checkRun(t, c.id, d, evs, func(e *streamdv1.Event) bool { return e.SeqNr >= 3 && e.Offset <= followed[i] })
				if d.First != 3 {
					t.Errorf("%s: the replay started at seqNr %d, want 3", c.id, d.First)
				}
			case got:
				t.Errorf("%s (%s) crossed the link: %+v", c.id, c.category, d)
			}
		}
	}
	if truckWire, truckGot := sys.meter.stats().RawBy["truck"].Events, details[truck].Count; truckWire != int64(truckGot) {
		t.Errorf("%d truck readings crossed the wire, the cloud applied %d of %s", truckWire, truckGot, truck)
	}
}

// checkRun checks that the cloud got car's readings as one unbroken run of
// seqNrs that covers every reading of the car that must have crossed.
func checkRun(t *testing.T, car string, d detail, evs []*streamdv1.Event, must func(*streamdv1.Event) bool) {
	t.Helper()
	var first, last uint64
	for _, e := range evs {
		if e.EntityId == car && must(e) {
			if first == 0 {
				first = e.SeqNr
			}
			last = e.SeqNr
		}
	}
	switch {
	case first == 0:
		t.Errorf("%s: no reading had to cross: the test waited too little", car)
	case d.Count == 0 || d.First > first || d.Last < last:
		t.Errorf("%s: the cloud got seqNrs %d..%d, want at least %d..%d", car, d.First, d.Last, first, last)
	case d.Count != d.Last-d.First+1:
		t.Errorf("%s: the cloud got %d readings of seqNrs %d..%d: some are missing", car, d.Count, d.First, d.Last)
	}
}

// checkSummaries compares the summaries of an edge, in its journal and in
// the cloud's, with those recomputed from its raw readings.
func checkSummaries(t *testing.T, sys *system, e *edge, evs []*streamdv1.Event) {
	t.Helper()
	want := expectedSummaries(t, evs, e.name, sys.opts.window)
	for _, c := range categories {
		if len(want[c]) < 5 {
			t.Fatalf("%s/%s: only %d closed windows to compare", e.name, c, len(want[c]))
		}
		if got := summariesOf(t, e.prod.Journal(), e.name, c); !reflect.DeepEqual(got, want[c]) {
			t.Errorf("%s/%s: the edge journal holds summaries\n%+v\nwant\n%+v", e.name, c, got, want[c])
		}
		if got := summariesOf(t, sys.cloud.prod.Journal(), e.name, c); !reflect.DeepEqual(got, want[c]) {
			t.Errorf("%s/%s: the cloud journal holds summaries\n%+v\nwant\n%+v", e.name, c, got, want[c])
		}
	}
}

// At the default rate and window, the link carries the summaries of a few
// hundred cars in real time for under 2% of the bytes of their raw
// readings, counting every TCP byte both ways against the raw readings'
// own encoded size.
func TestLinkUnderTwoPercentOfRaw(t *testing.T) {
	// Defaults of the command, but 150 cars a region; the link's cost does not
	// depend on the number of cars, so more cars only lower the ratio.
	// The first window closes after about a second.
	epoch := time.Now().Truncate(5 * time.Second).Add(4 * time.Second)
	opts := options{regions: []string{"eu", "us"}, cars: 150, rate: 5, window: 5 * time.Second, speed: 1, epoch: epoch}
	sys := openTestSystem(t, opts)
	start := sys.read()
	stopSims := background(t, sys.runSims)
	stopConsumers := background(t, sys.runConsumers)
	testwait.For(t, 20*time.Second, "two rounds of summaries in the cloud", func() bool {
		return sys.meter.stats().Summary.Events >= int64(2*len(opts.regions)*len(categories))
	})
	end := sys.read()
	if err := errors.Join(stopSims(), stopConsumers()); err != nil {
		t.Fatal(err)
	}
	raw, link := end.raw.minus(start.raw), end.link.minus(start.link)
	ratio := float64(link.TCP()) / float64(raw.Bytes)
	t.Logf("%.1fs: raw %d events, %d bytes; link %d summaries, TCP %d bytes (%d down, %d up), gRPC %d bytes: %.3f%% of raw",
		end.at.Sub(start.at).Seconds(), raw.Events, raw.Bytes, link.Summary.Events, link.TCP(), link.TCPDown, link.TCPUp, link.GRPC(), 100*ratio)
	if link.Raw.Events != 0 {
		t.Errorf("%d raw events crossed with no detail raised", link.Raw.Events)
	}
	if link.TCPDown < link.GRPC() {
		t.Errorf("TCP carried %d bytes down but gRPC received %d: the meter is wrong", link.TCPDown, link.GRPC())
	}
	if ratio > 0.02 {
		t.Errorf("the link carried %.2f%% of the raw bytes, want <= 2%%", 100*ratio)
	}
}

var errCrash = errors.New("simulated crash")

// The aggregator is stopped mid-stream again and again: by cancelling its
// Run, and by a crash right after a summary reached the journal but before
// the transaction holding its window (and the offset) committed. Every
// run is a new Consumer on the same store. The journal ends up with each
// closed window's summary exactly once, as recomputed from the readings,
// and each crash's summary was recognised as already written.
func TestAggregatorExactlyOnceAcrossRestarts(t *testing.T) {
	opts := options{regions: []string{"eu"}, cars: 30, rate: 5, window: time.Second, speed: 10, epoch: testEpoch}
	sys := openTestSystem(t, opts)
	e := sys.edges[0]
	stopSims := background(t, sys.runSims)

	crashes := 0
	for round := range 8 {
		crash := round%2 == 1
		handler := e.agg.handle
		if crash {
			handler = func(ctx context.Context, txn *badger.Txn, ev *streamdv1.Event) error {
				before := e.agg.written.Load()
				if err := e.agg.handle(ctx, txn, ev); err != nil {
					return err
				}
				if e.agg.written.Load() > before {
					return errCrash // the summary is written, its window not committed
				}
				return nil
			}
		}
		c, err := newAggregatorConsumer(e.name, e.addr, e.store, handler, sys.opts.log)
		if err != nil {
			t.Fatal(err)
		}
		if crash {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			err := c.Run(ctx)
			cancel()
			if !errors.Is(err, errCrash) {
				t.Fatalf("round %d: Run returned %v, want the simulated crash", round, err)
			}
			crashes++
			continue
		}
		written := e.agg.written.Load()
		stop := background(t, c.Run)
		testwait.For(t, 20*time.Second, "two more summaries", func() bool { return e.agg.written.Load() >= written+2 })
		if err := stop(); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
	if err := stopSims(); err != nil {
		t.Fatal(err)
	}
	c, err := newAggregatorConsumer(e.name, e.addr, e.store, e.agg.handle, sys.opts.log)
	if err != nil {
		t.Fatal(err)
	}
	stop := background(t, c.Run)
	testwait.For(t, 20*time.Second, "the aggregator to catch up", func() bool {
		return c.Status()[0].Offset >= e.prod.Journal().LastOffset()
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	if got := e.agg.recognised.Load(); got < int64(crashes) {
		t.Errorf("%d re-emitted summaries recognised as written after %d crashes", got, crashes)
	}
	want := expectedSummaries(t, readAll(t, e.prod.Journal()), e.name, opts.window)
	for _, cat := range categories {
		got := summariesOf(t, e.prod.Journal(), e.name, cat)
		if len(got) < 5 || !reflect.DeepEqual(got, want[cat]) {
			t.Errorf("%s: the journal holds %d summaries\n%+v\nwant %d\n%+v", cat, len(got), got, len(want[cat]), want[cat])
		}
	}
	t.Logf("%d crashes, %d summaries written, %d re-emissions recognised", crashes, e.agg.written.Load(), e.agg.recognised.Load())
}

// writeOnce tells a summary already written from a real conflict.
func TestWriteOnce(t *testing.T) {
	j, err := journal.Open(t.TempDir(), journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ev := func(seqNr uint64, payload string) *streamdv1.Event {
		return &streamdv1.Event{EntityType: summaryType, EntityId: "eu/sports", EventType: summaryEvent, SeqNr: seqNr, Payload: []byte(payload)}
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		e           *streamdv1.Event
		wantWritten bool
		wantErr     string
	}{
		{"first", ev(1, "a"), true, ""},
		{"second", ev(2, "b"), true, ""},
		{"again, as written", ev(1, "a"), false, ""},
		{"again, other payload", ev(2, "x"), false, "already written with another payload"},
		{"gap", ev(4, "d"), false, "a summary is missing"},
	} {
		written, err := writeOnce(ctx, j.Append, j.Load, tc.e)
		if written != tc.wantWritten || (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: written %v, err %v; want %v, %q", tc.name, written, err, tc.wantWritten, tc.wantErr)
		}
	}
	if evs, _ := j.ReadEntity(summaryType, "eu/sports", 1, 10, nil); len(evs) != 2 {
		t.Errorf("the journal holds %d summaries, want 2", len(evs))
	}
}

// Windows close when a later window's reading arrives; a reading of a
// closed window is late and left out.
func TestAggregatorWindows(t *testing.T) {
	sys := openTestSystem(t, options{regions: []string{"eu"}, cars: 1, rate: 1, window: time.Second, speed: 1})
	e := sys.edges[0]
	db := e.store.DB()
	reading := func(ms int64, speed float64) *streamdv1.Event {
		return &streamdv1.Event{EntityType: carType, EntityId: "eu-1", Tags: []string{"truck"},
			Payload: fmt.Appendf(nil, `{"t":%d,"speed_kmh":%g,"rpm":%g}`, ms, speed, 10*speed)}
	}
	for _, r := range []*streamdv1.Event{reading(1000, 10), reading(1999, 30), reading(2000, 50), reading(1500, 70), reading(4200, 5)} {
		if err := db.Update(func(txn *badger.Txn) error { return e.agg.handle(context.Background(), txn, r) }); err != nil {
			t.Fatal(err)
		}
	}
	want := []summary{
		{Region: "eu", Category: "truck", Window: 1, StartMs: 1000, EndMs: 2000, Count: 2, MeanSpeed: 20, MaxSpeed: 30, MeanRPM: 200, MaxRPM: 300},
		{Region: "eu", Category: "truck", Window: 2, StartMs: 2000, EndMs: 3000, Count: 1, MeanSpeed: 50, MaxSpeed: 50, MeanRPM: 500, MaxRPM: 500},
	}
	if got := summariesOf(t, e.prod.Journal(), "eu", "truck"); !reflect.DeepEqual(got, want) {
		t.Errorf("summaries\n%+v\nwant\n%+v", got, want)
	}
	var st aggState
	if err := db.View(func(txn *badger.Txn) error { return loadJSON(txn, stateKey("truck"), &st) }); err != nil {
		t.Fatal(err)
	}
	if st.Late != 1 || st.Emitted != 2 || st.Open.Number != 4 || st.Open.Count != 1 {
		t.Errorf("state %+v, want 1 late, 2 emitted, window 4 open with 1 reading", st)
	}
}

// An operator raises the detail through the cloud's AdminService, as
// streamctl filters add does: the family cars' readings cross, no others.
func TestDetailThroughAdminService(t *testing.T) {
	sys := openTestSystem(t, options{regions: []string{"eu"}, cars: 12, rate: 5, window: time.Second, speed: 10, epoch: testEpoch})
	background(t, sys.runSims)
	background(t, sys.runConsumers)

	conn, err := grpc.NewClient(sys.cloud.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	family, err := filters.Parse("include tag=family ttl=30m", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	res, err := streamdv1.NewAdminServiceClient(conn).UpdateConsumerFilter(ctx, &streamdv1.UpdateConsumerFilterRequest{
		Consumer: cloudName, Add: []*streamdv1.FilterCriterion{family}})
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, c := range res.Filter {
		texts = append(texts, filters.Format(c))
	}
	if len(texts) != 2 || texts[0] != "include type="+summaryType || texts[1] != filters.Format(family) {
		t.Errorf("the cloud's filter is %q, want the summaries and %q", texts, filters.Format(family))
	}
	waitPublished(t, sys, 5)
	if by := sys.meter.stats().RawBy; len(by) != 1 || by["family"].Events == 0 {
		t.Errorf("raw events crossed by category: %v, want only family", by)
	}
}

// A summary the cloud gets again (after a crash between its append and the
// commit of the consumer's transaction) is not written twice; one that
// skips a seqNr is refused.
func TestCloudReplicatesSummaryOnce(t *testing.T) {
	sys := openTestSystem(t, options{regions: []string{"eu"}, cars: 1, rate: 1, window: time.Second, speed: 1})
	summaryAt := func(seqNr uint64) *streamdv1.Event {
		return &streamdv1.Event{EntityType: summaryType, EntityId: "eu/truck", SeqNr: seqNr, EventType: summaryEvent,
			Payload: fmt.Appendf(nil, `{"window":%d}`, seqNr)}
	}
	ctx := context.Background()
	for _, seqNr := range []uint64{1, 1, 2, 1, 2} {
		if err := sys.cloud.storeSummary(ctx, summaryAt(seqNr)); err != nil {
			t.Fatalf("summary %d: %v", seqNr, err)
		}
	}
	var gap *journal.OriginGapError
	if err := sys.cloud.storeSummary(ctx, summaryAt(4)); !errors.As(err, &gap) {
		t.Errorf("summary 4 after 2: %v, want an OriginGapError", err)
	}
	evs, err := sys.cloud.prod.Journal().ReadEntity(summaryType, "eu/truck", 1, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].OriginSeqNr != 1 || evs[1].OriginSeqNr != 2 || evs[1].Origin != "eu" {
		t.Errorf("the cloud journal holds %v, want summaries 1 and 2 from eu", evs)
	}
}

package aggregate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func openJournal(t testing.TB) *journal.Journal {
	t.Helper()
	j, err := journal.Open(t.TempDir(), journal.Options{Region: "eu", Durability: journal.DurabilityAsync})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func publish(t testing.TB, j *journal.Journal, evs ...*streamdv1.Event) {
	t.Helper()
	if _, err := j.Append(context.Background(), evs...); err != nil {
		t.Fatal(err)
	}
}

// reading is a car reading at ms with a speed; payload "" writes a bad one.
func reading(id, tag string, ms int64, speed float64) *streamdv1.Event {
	return &streamdv1.Event{EntityType: "car", EntityId: id, EventType: "Sampled", Tags: []string{tag}, Topic: "cars/" + tag + "/" + id,
		Payload: fmt.Appendf(nil, `{"t":%d,"speed":%g,"engine":{"rpm":%g},"model":"m-%s"}`, ms, speed, 10*speed, tag)}
}

func carOptions(j *journal.Journal) Options {
	only, _ := filters.Parse("include type=car", time.Now())
	return Options{
		Name: "cars", Journal: j, Filter: []*streamdv1.FilterCriterion{only},
		Window: time.Second, Grace: 500 * time.Millisecond, TimeField: "t",
		GroupBy: []string{"tag"},
		Values:  []Value{{Field: "speed", Ops: ops}, {Field: "engine.rpm", Ops: []Op{OpMax}}},
		Output:  Output{EntityType: "car-summary", EventType: "Summarized", EntityID: "{region}/{tag}"},
		Logger:  slog.New(slog.DiscardHandler),
	}
}

// start runs a stage until the test ends; stop returns Run's error.
func start(t *testing.T, o Options) (*Stage, func() error) {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var stopped atomic.Bool
	var runErr error
	stop := func() error {
		if stopped.CompareAndSwap(false, true) {
			cancel()
			runErr = <-done
		}
		return runErr
	}
	t.Cleanup(func() { stop() })
	return s, stop
}

// caughtUp waits until s has read every event of its journal.
func caughtUp(t *testing.T, s *Stage) {
	t.Helper()
	testwait.For(t, 10*time.Second, "the stage to read every event", func() bool {
		st := s.Status()
		return st.Next > s.opts.Journal.LastOffset() || st.Err != nil
	})
}

func summaries(t *testing.T, j *journal.Journal, id string) []Summary {
	t.Helper()
	evs, err := j.ReadEntity("car-summary", id, 1, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []Summary
	for i, e := range evs {
		if e.SeqNr != uint64(i+1) || e.EventType != "Summarized" {
			t.Fatalf("summary %d of %s: seqNr %d, event type %q", i+1, id, e.SeqNr, e.EventType)
		}
		var s Summary
		if err := json.Unmarshal(e.Payload, &s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func f(x float64) *float64 { return &x }

// Windows are cut by the payload's time; a window closes when an event
// grace past its end arrives; an event of a closed window is late.
func TestWindowsGroupsAndValues(t *testing.T) {
	j := openJournal(t)
	publish(t, j,
		reading("c1", "sports", 1000, 10),
		reading("c2", "sports", 1400, 30),
		reading("c3", "truck", 1999, 5),
		&streamdv1.Event{EntityType: "bike", EntityId: "b1", EventType: "Sampled", Tags: []string{"sports"}, Payload: []byte(`{"t":1000,"speed":99}`)},
		reading("c1", "sports", 2100, 50), // window 2; window 1 waits for its grace
		reading("c2", "sports", 1800, 20), // still in window 1's grace
		reading("c1", "sports", 2500, 70), // watermark 2500: window 1 closes
		reading("c2", "sports", 1900, 80), // late
	)
	s, stop := start(t, carOptions(j))
	caughtUp(t, s)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	sports := summaries(t, j, "eu/sports")
	want := []Summary{{Stage: "cars", StartMs: 1000, EndMs: 2000, Group: map[string]string{"tag": "sports"}, Count: 3,
		Values: map[string]map[Op]*float64{
			"speed":      {OpCount: f(3), OpSum: f(60), OpMin: f(10), OpMax: f(30), OpAvg: f(20), OpLast: f(20)},
			"engine.rpm": {OpMax: f(300)},
		}}}
	if !reflect.DeepEqual(sports, want) {
		t.Errorf("sports summaries\n%s\nwant\n%s", jsonOf(sports), jsonOf(want))
	}
	if truck := summaries(t, j, "eu/truck"); len(truck) != 1 || truck[0].Count != 1 || *truck[0].Values["speed"][OpMax] != 5 {
		t.Errorf("truck summaries %s, want one of 1 event", jsonOf(truck))
	}
	st := s.Status()
	c := st.Counters
	if c.Read != 7 || c.Aggregated != 6 || c.Late != 1 || c.Summaries != 2 || c.Skipped() != 0 || st.OpenWindows != 1 {
		t.Errorf("status %+v, want 7 read, 6 aggregated, 1 late, 2 summaries, window 2 of sports open", st)
	}
	if st.Last.StartMs != 1000 || st.Last.Summaries != 2 || st.Last.Events != 4 {
		t.Errorf("last window %+v, want [1000, 2000) with 2 summaries of 4 events", st.Last)
	}
}

func jsonOf(v any) string { b, _ := json.Marshal(v); return string(b) }

// Payloads that are not JSON, lack a field or carry a non-number are
// counted and skipped; the stage goes on.
func TestBadPayloadsAreCountedAndSkipped(t *testing.T) {
	j := openJournal(t)
	bad := func(payload string) *streamdv1.Event {
		return &streamdv1.Event{EntityType: "car", EntityId: "c9", EventType: "Sampled", Tags: []string{"sports"}, Payload: []byte(payload)}
	}
	publish(t, j, reading("c1", "sports", 1000, 10),
		bad("not json"), bad(`[1,2]`), bad(`{"t":1100}`), bad(`{"t":1100,"speed":"fast","engine":{"rpm":1}}`),
		bad(`{"speed":1,"engine":{"rpm":1}}`), bad(`{"t":1100,"speed":1,"engine":7}`),
		&streamdv1.Event{EntityType: "car", EntityId: "c8", EventType: "Sampled", Payload: []byte(`{"t":1100,"speed":1,"engine":{"rpm":1}}`)}, // no tag
		reading("c1", "sports", 3000, 20))
	s, stop := start(t, carOptions(j))
	caughtUp(t, s)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	c := s.Status().Counters
	if c.NotJSON != 2 || c.MissingField != 4 || c.NotNumber != 1 || c.Aggregated != 2 {
		t.Errorf("counters %+v, want 2 not JSON, 4 missing a field, 1 not a number, 2 aggregated", c)
	}
	if got := summaries(t, j, "eu/sports"); len(got) != 1 || got[0].Count != 1 {
		t.Errorf("summaries %s, want one of the first reading", jsonOf(got))
	}
}

// A stopped stage resumes from its checkpoint: windows open at the stop
// are closed later with the events of both runs, nothing is written twice.
func TestResumesFromCheckpoint(t *testing.T) {
	j := openJournal(t)
	o := carOptions(j)
	publish(t, j, reading("c1", "sports", 1000, 10), reading("c1", "sports", 1500, 20))
	s, stop := start(t, o)
	caughtUp(t, s)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	saved, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := saved.load(); err != nil || saved.cp.Next != 3 || len(saved.open) != 1 || saved.cp.Counters.Read != 2 {
		t.Fatalf("checkpoint after the stop: %v, next %d, %d open windows, %d read; want 3, 1, 2", err, saved.cp.Next, len(saved.open), saved.cp.Counters.Read)
	}
	publish(t, j, reading("c1", "sports", 1600, 30), reading("c1", "sports", 2600, 1), reading("c1", "sports", 3600, 1))
	s, stop = start(t, o)
	caughtUp(t, s)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got := summaries(t, j, "eu/sports")
	if len(got) != 2 || got[0].Count != 3 || *got[0].Values["speed"][OpSum] != 60 || got[1].StartMs != 2000 {
		t.Errorf("summaries %s, want [1000,2000) of 3 readings and [2000,3000)", jsonOf(got))
	}
	if c := s.Status().Counters; c.Read != 5 || c.Summaries != 2 {
		t.Errorf("counters %+v, want 5 read and 2 summaries over both runs", c)
	}
}

// With the journal's time, a window closes on the clock once the stage has
// read everything, without waiting for another event.
func TestJournalTimeClosesIdleWindows(t *testing.T) {
	j := openJournal(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	o := carOptions(j)
	o.TimeField, o.Now = "", func() time.Time { return time.Unix(0, now.Load()) }
	publish(t, j, reading("c1", "sports", 0, 10), reading("c2", "sports", 0, 20))
	s, _ := start(t, o)
	caughtUp(t, s)
	if got := summaries(t, j, "eu/sports"); len(got) != 0 {
		t.Fatalf("summaries %s before the window's end", jsonOf(got))
	}
	now.Add(int64(time.Second + o.Grace + idleMargin + time.Millisecond))
	testwait.For(t, 10*time.Second, "the idle window to close", func() bool { return s.Status().Counters.Summaries == 1 })
	if got := summaries(t, j, "eu/sports"); len(got) != 1 || got[0].Count != 2 {
		t.Errorf("summaries %s, want one of 2 readings", jsonOf(got))
	}
}

// Another writer in a summary entity stops the stage with an error that
// says so, and nothing is written twice.
func TestAnotherWriterInTheSummaryEntity(t *testing.T) {
	j := openJournal(t)
	publish(t, j, &streamdv1.Event{EntityType: "car-summary", EntityId: "eu/sports", EventType: "X", Payload: []byte("{}")},
		reading("c1", "sports", 1000, 10), reading("c1", "sports", 5000, 10))
	s, err := New(carOptions(j))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run(context.Background())
	var conflict *journal.SeqNrConflictError
	if !errors.As(err, &conflict) || !strings.Contains(err.Error(), "another writer") {
		t.Fatalf("Run: %v, want a seqNr conflict naming another writer", err)
	}
	if st := s.Status(); st.Running || st.Err == nil {
		t.Errorf("status %+v, want stopped with the error", st)
	}
	if evs, _ := j.ReadEntity("car-summary", "eu/sports", 1, 10, nil); len(evs) != 1 {
		t.Errorf("the summary entity holds %d events, want only the other writer's", len(evs))
	}
}

func TestOptionsValidate(t *testing.T) {
	j := openJournal(t)
	for _, tc := range []struct {
		change func(*Options)
		want   string
	}{
		{func(o *Options) { o.Name = "" }, "name is empty"},
		{func(o *Options) { o.Window = 1500 * time.Microsecond }, "window 1.5ms"},
		{func(o *Options) { o.Grace = -time.Second }, "grace"},
		{func(o *Options) { o.GroupBy = []string{"colour"} }, `group_by[0] "colour": want entity_type, tag, topic[N] or payload.FIELD`},
		{func(o *Options) { o.GroupBy = []string{"topic[x]"} }, "topic level"},
		{func(o *Options) { o.GroupBy = []string{"tag", "tag"} }, "listed twice"},
		{func(o *Options) { o.Values = []Value{{Field: "speed", Ops: []Op{"p99"}}} }, `op "p99"`},
		{func(o *Options) { o.Values = []Value{{Field: "speed"}} }, "no ops"},
		{func(o *Options) { o.Values = []Value{{Field: "a..b", Ops: ops}} }, "empty part"},
		{func(o *Options) { o.Output.EntityID = "{colour}" }, "{colour} is not a group_by key"},
		{func(o *Options) { o.Output.EntityID = "{tag" }, "a { without }"},
		{func(o *Options) { o.Output.EntityType = "" }, "output entity_type is empty"},
		{func(o *Options) {
			o.Filter = []*streamdv1.FilterCriterion{{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE}}
		}, "filter"},
	} {
		o := carOptions(j)
		tc.change(&o)
		err := o.Validate()
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate: %v, want an ErrInvalidOptions with %q", err, tc.want)
		}
	}
	if err := carOptions(j).Validate(); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

// Keys of every kind, and the default entity id template.
func TestGroupByKeys(t *testing.T) {
	j := openJournal(t)
	o := carOptions(j)
	o.GroupBy, o.Output.EntityID = []string{"entity_type", "topic[1]", "payload.model"}, ""
	publish(t, j, reading("c1", "truck", 1000, 10), reading("c1", "truck", 9000, 10))
	s, stop := start(t, o)
	caughtUp(t, s)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	got := summaries(t, j, "car/truck/m-truck")
	if len(got) != 1 || !reflect.DeepEqual(got[0].Group, map[string]string{"entity_type": "car", "topic[1]": "truck", "payload.model": "m-truck"}) {
		t.Errorf("summaries of car/truck/m-truck: %s", jsonOf(got))
	}
}

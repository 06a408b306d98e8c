package e2e

// Regression tests for dynamic-filter replays: a replay asked while
// disconnected, a replay cut short by a producer restart, and excludes
// during a replay.

import (
	"context"
	"testing"
	"time"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// An include with replay=1 made while no stream is open is stored, and the
// reconnect's Init replays it: car-7 #1..50 are applied before #51, no gap.
func TestReplayWhileDisconnected(t *testing.T) {
	dir := t.TempDir()
	srv := serve(t, dir, "127.0.0.1:0")
	addr := srv.addr
	defer func() { srv.stop() }()
	store := openStore(t, t.TempDir())
	c := newExactlyOnce(t, addr, store, "include type=bike")
	runConsumer(t, c)
	bikes := publishCars(t, srv.p, "car-7", 1, 50)
	testwait.For(t, 30*time.Second, "every bike applied", func() bool { a, _, _ := counters(t, store); return a == uint64(bikes) })
	srv.stop()
	testwait.For(t, 30*time.Second, "the consumer disconnected", func() bool { return !c.Status()[0].Connected })
	inc := mustParse(t, "include entity=car-7 replay=1", time.Now())
	if err := c.UpdateFilter(context.Background(), []*streamdv1.FilterCriterion{inc}, nil); err != nil {
		t.Fatal(err) // returns nil: "stored, sent in the next Init"
	}
	srv = serve(t, dir, addr)
	bikes += publishCars(t, srv.p, "car-7", 51, 5)
	testwait.For(t, 30*time.Second, "every bike applied after the restart", func() bool { a, _, _ := counters(t, store); return a >= uint64(bikes) })
	testwait.For(t, 30*time.Second, "car-7 replayed up to seqNr 55", func() bool { return lastApplied(t, store, "car", "car-7") == 55 })
	if a, d, g := counters(t, store); a != uint64(bikes+55) || d != 0 || g != 0 {
		t.Fatalf("applied %d, want %d bikes + 55 of car-7; %d duplicates, %d gaps", a, bikes, d, g)
	}
}

// The producer restarts while it replays car-7 (3000 events, 30 chunks),
// after the consumer's offset moved past car-7's history: the Init of the
// reconnect asks for the replay again, and the history completes, once.
func TestReplayInterruptedByRestart(t *testing.T) {
	dir := t.TempDir()
	srv := serve(t, dir, "127.0.0.1:0")
	addr := srv.addr
	defer func() { srv.stop() }()
	store := openStore(t, t.TempDir())
	c := newExactlyOnce(t, addr, store, "include type=bike")
	runConsumer(t, c)
	bikes := publishCars(t, srv.p, "car-7", 1, 3000)
	testwait.For(t, 30*time.Second, "every bike applied", func() bool { a, _, _ := counters(t, store); return a == uint64(bikes) })
	inc := mustParse(t, "include entity=car-7 replay=1", time.Now())
	if err := c.UpdateFilter(context.Background(), []*streamdv1.FilterCriterion{inc}, nil); err != nil {
		t.Fatal(err)
	}
	srv.stop() // mid-replay
	t.Logf("car-7 applied up to %d when the producer stopped", lastApplied(t, store, "car", "car-7"))
	srv = serve(t, dir, addr)
	bikes += publishCars(t, srv.p, "car-7", 3001, 5)
	testwait.For(t, 30*time.Second, "car-7 replayed up to seqNr 3005", func() bool { return lastApplied(t, store, "car", "car-7") == 3005 })
	testwait.For(t, 30*time.Second, "every bike applied", func() bool { a, _, _ := counters(t, store); return a >= uint64(bikes) })
	if a, d, g := counters(t, store); a != uint64(bikes+3005) || d != 0 || g != 0 {
		t.Fatalf("applied %d, want %d bikes + 3005 of car-7; %d duplicates, %d gaps", a, bikes, d, g)
	}
}

// A replay passes the consumer's own excludes like live events do: car-7's
// Debug events are excluded from its history as from its live events.
func TestReplayIgnoresExclude(t *testing.T) {
	srv := serve(t, t.TempDir(), "127.0.0.1:0")
	defer srv.stop()
	rec := newRecorder()
	var criteria []*streamdv1.FilterCriterion
	for _, f := range []string{"include type=bike", "exclude event=Debug"} {
		criteria = append(criteria, mustParse(t, f, time.Now()))
	}
	c, err := consumer.New(consumer.Options{Producers: []string{srv.addr}, Name: "p", Store: openStore(t, t.TempDir()),
		Filter: criteria, Handler: rec.handle, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runConsumer(t, c)
	car7 := func(payload string) {
		for i := range 10 {
			et := []string{"Moved", "Debug"}[i%2]
			if _, err := srv.p.Publish(context.Background(), &streamdv1.Event{EntityType: "car", EntityId: "car-7",
				EventType: et, Tags: []string{et}, Payload: []byte(payload)}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := srv.p.Publish(context.Background(), &streamdv1.Event{EntityType: "bike", EntityId: "b",
			EventType: "Moved", Payload: []byte("bike-" + payload)}); err != nil {
			t.Fatal(err)
		}
		testwait.For(t, 30*time.Second, "bike-"+payload+" delivered", func() bool { return rec.delivered("bike-" + payload) })
	}
	car7("history")
	inc := mustParse(t, "include entity=car-7 replay=1", time.Now())
	if err := c.UpdateFilter(context.Background(), []*streamdv1.FilterCriterion{inc}, nil); err != nil {
		t.Fatal(err)
	}
	car7("live")
	testwait.For(t, 30*time.Second, "the 5 history events of car-7 replayed", func() bool { return rec.times("history") >= 5 })
	if n := rec.count("Debug"); n != 0 {
		t.Fatalf("%d events excluded by exclude event=Debug delivered (history %d of 10, live %d of 10)",
			n, rec.times("history"), rec.times("live"))
	}
}

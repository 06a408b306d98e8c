package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// A consumer asks for summaries plus, for half an hour, the raw events
// tagged sports. The producer's clock passes the expiry with no word from
// the consumer: from then on no sports event crosses the wire (counted by
// the producer's observer and by a stats handler on the consumer's
// connection), while summaries keep coming. An update with the same
// criterion re-arms it, and it runs out again on its own.
func TestFilterExpiryAtProducer(t *testing.T) {
	clock := newFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	const name = "dashboard"
	obs := &sentCounter{consumer: name}
	srv := serveWith(t, t.TempDir(), "127.0.0.1:0", producer.Options{Server: producer.ServerOptions{
		Now: clock.Now, Observer: obs,
	}})
	defer srv.stop()

	summaries := mustParse(t, "include type=summary", clock.Now())
	sports := mustParse(t, "include tag=sports ttl=30m", clock.Now())
	expiry := time.Unix(0, sports.ExpiresAtUnixNano)
	if want := clock.Now().Add(30 * time.Minute); !expiry.Equal(want) {
		t.Fatalf("ttl=30m expires at %v, want %v", expiry, want)
	}
	tap := newWireTap(func(e *streamdv1.Event) string {
		if e.EntityType == "summary" {
			return "summary"
		}
		return strings.Join(e.Tags, ",")
	})
	rec := newRecorder()
	c, err := consumer.New(consumer.Options{
		Producers: []string{srv.addr}, Name: name, Store: openStore(t, t.TempDir()),
		Filter:      []*streamdv1.FilterCriterion{summaries, sports},
		Handler:     rec.handle,
		DialOptions: []grpc.DialOption{grpc.WithStatsHandler(tap)},
		MinBackoff:  10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	runConsumer(t, c)

	// publishRound publishes, interleaved, n sports and n family events of
	// cars and s summaries, a summary last.
	round := 0
	publishRound := func(n, s int) {
		t.Helper()
		round++
		var evs []*streamdv1.Event
		for i := range n {
			evs = append(evs,
				taggedCar(fmt.Sprint("car-", i%4), "sports", fmt.Sprintf("r%d-sports-%d", round, i)),
				taggedCar(fmt.Sprint("car-", 10+i%4), "family", fmt.Sprintf("r%d-family-%d", round, i)))
			if i%(n/s) == n/s-1 {
				evs = append(evs, &streamdv1.Event{EntityType: "summary", EntityId: "region-1", EventType: "Summarised",
					Payload: fmt.Appendf(nil, "r%d-summary-%d", round, i)})
			}
		}
		for _, e := range evs {
			if _, err := srv.p.Publish(context.Background(), e); err != nil {
				t.Fatal(err)
			}
		}
		if evs[len(evs)-1].EntityType != "summary" {
			t.Fatal("test bug: a round must end with a summary")
		}
	}
	// settle waits until the handler has the summaries and the producer has
	// accounted for every event published (sent or filtered), then checks
	// both sides of the wire.
	published := 0
	settle := func(phase string, wantSports, wantSummaries int) {
		t.Helper()
		testwait.For(t, 30*time.Second, "the summaries delivered", func() bool { return rec.count("summary") == wantSummaries })
		testwait.For(t, 30*time.Second, "every published event sent or filtered", func() bool { ev, filtered := obs.totals(); return ev+filtered == published })
		ev, filtered := obs.totals()
		if ev != wantSports+wantSummaries || filtered != published-ev {
			t.Fatalf("%s: the producer sent %d events and filtered %d, want %d sent (%d sports + %d summaries)",
				phase, ev, filtered, wantSports+wantSummaries, wantSports, wantSummaries)
		}
		if got := tap.count("sports"); got != wantSports {
			t.Fatalf("%s: %d sports events crossed the wire, want %d", phase, got, wantSports)
		}
		if got := tap.count("family"); got != 0 {
			t.Fatalf("%s: %d family events crossed the wire, want 0", phase, got)
		}
		if got := tap.count("summary"); got != wantSummaries {
			t.Fatalf("%s: %d summaries crossed the wire, want %d", phase, got, wantSummaries)
		}
		if got := rec.count("sports"); got != wantSports {
			t.Fatalf("%s: the handler got %d sports events, want %d", phase, got, wantSports)
		}
	}

	// Before the expiry (one nanosecond before it, at the end).
	publishRound(20, 4)
	published += 44
	settle("before the expiry", 20, 4)
	clock.Set(expiry.Add(-time.Nanosecond))
	publishRound(8, 2)
	published += 18
	settle("1ns before the expiry", 28, 6)

	// At the expiry the criterion is inactive (expires_at <= now). The
	// consumer says nothing: the producer narrows the stream on its own.
	clock.Set(expiry)
	publishRound(20, 4)
	published += 44
	settle("at the expiry", 28, 10)
	clock.Set(expiry.Add(time.Hour))
	publishRound(20, 4)
	published += 44
	settle("an hour after the expiry", 28, 14)
	if len(obs.openedStreams()) != 1 {
		t.Fatalf("streams opened %v, want one (no reconnect was needed)", obs.openedStreams())
	}

	// Re-armed by an update of the same criterion (same identity: the
	// expiry is replaced), then expired again.
	rearm := mustParse(t, "include tag=sports ttl=10m", clock.Now())
	if err := c.UpdateFilter(context.Background(), []*streamdv1.FilterCriterion{rearm}, nil); err != nil {
		t.Fatal(err)
	}
	if got := c.Filter(); len(got) != 2 || !proto.Equal(got[1], rearm) {
		t.Fatalf("filter after re-arming: %v", got)
	}
	publishRound(8, 2)
	published += 18
	settle("re-armed", 36, 16)
	clock.Set(time.Unix(0, rearm.ExpiresAtUnixNano))
	publishRound(8, 2)
	published += 18
	settle("re-armed, expired", 36, 18)
}

// A filter set at run time (UpdateFilter, not Options.Filter) holds across
// a producer restart, a consumer restart whose Options.Filter says
// something else, and both at once: after each, of the events published,
// exactly those the filter includes are delivered.
func TestFiltersSurviveRestarts(t *testing.T) {
	dir := t.TempDir()
	srv := serve(t, dir, "127.0.0.1:0")
	defer func() { srv.stop() }()
	addr := srv.addr
	storeDir := t.TempDir()
	store := openStore(t, storeDir) // reopened in (c)
	rec := newRecorder()
	const name = "orders-view"
	newConsumer := func(filter []*streamdv1.FilterCriterion) *consumer.Consumer {
		c, err := consumer.New(consumer.Options{
			Producers: []string{addr}, Name: name, Store: store, Filter: filter, Handler: rec.handle,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// mix publishes, per round, orders (included), orders tagged test
	// (excluded) and audits (not included), an included order last; it
	// returns the payloads of the included ones.
	mix := func(round string) (included []string) {
		t.Helper()
		var evs []*streamdv1.Event
		for i := range 12 {
			var e *streamdv1.Event
			switch i % 3 {
			case 0:
				e = &streamdv1.Event{EntityType: "audit", EntityId: fmt.Sprint("u-", i%2), EventType: "Logged"}
			case 1:
				e = &streamdv1.Event{EntityType: "order", EntityId: fmt.Sprint("o-", i%4), EventType: "Placed", Tags: []string{"test"}}
			case 2:
				e = &streamdv1.Event{EntityType: "order", EntityId: fmt.Sprint("o-", i%4), EventType: "Placed"}
				included = append(included, fmt.Sprintf("%s-%d", round, i))
			}
			e.Payload = fmt.Appendf(nil, "%s-%d", round, i)
			evs = append(evs, e)
		}
		for _, e := range evs {
			if _, err := srv.p.Publish(context.Background(), e); err != nil {
				t.Fatal(err)
			}
		}
		return included
	}
	check := func(round string, want []string) {
		t.Helper()
		testwait.For(t, 30*time.Second, "the round's last event delivered", func() bool { return rec.delivered(want[len(want)-1]) })
		if got := rec.withPrefix(round + "-"); !slices.Equal(got, want) {
			t.Fatalf("%s: delivered %v, want exactly %v", round, got, want)
		}
	}

	c := newConsumer(nil)
	stop := runConsumer(t, c)
	// No filter yet: everything arrives.
	mix("unfiltered")
	testwait.For(t, 30*time.Second, "12 unfiltered events delivered", func() bool { return len(rec.withPrefix("unfiltered-")) == 12 })

	filter := []*streamdv1.FilterCriterion{
		mustParse(t, "include type=order", time.Now()), mustParse(t, "exclude tag=test", time.Now()),
	}
	if err := c.UpdateFilter(context.Background(), filter, nil); err != nil {
		t.Fatal(err)
	}
	check("live", mix("live"))

	// (a) The producer restarts on the same directory and address; the
	// consumer reconnects with the stored filter in its Init.
	srv.stop()
	srv = serve(t, dir, addr)
	check("producer-restart", mix("producer-restart"))

	// (b) A new Consumer on the same store, whose Options.Filter says the
	// opposite: the stored filter wins.
	stop()
	c = newConsumer([]*streamdv1.FilterCriterion{mustParse(t, "include type=audit", time.Now())})
	if got := c.Filter(); !sameCriteria(got, filter) {
		t.Fatalf("a new consumer's filter is %v, want the stored %v", got, filter)
	}
	stop = runConsumer(t, c)
	check("consumer-restart", mix("consumer-restart"))

	// (c) Both restart, the consumer's store is closed and reopened; the
	// events are published while the consumer is down and read in catch-up.
	stop()
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	store = openStore(t, storeDir)
	srv.stop()
	srv = serve(t, dir, addr)
	want := mix("both-restart")
	c = newConsumer(nil)
	if got := c.Filter(); !sameCriteria(got, filter) {
		t.Fatalf("a new consumer's filter is %v, want the stored %v", got, filter)
	}
	stop = runConsumer(t, c)
	check("both-restart", want)
	stop()

	for _, p := range rec.all() {
		if n := rec.times(p); n != 1 {
			t.Fatalf("%s delivered %d times", p, n)
		}
	}
}

// An exactly-once consumer includes an entity it never received, with a
// replay from seqNr 1, while that entity's events keep being published:
// every one of them is applied once, in order. Then an entity that was
// applied up to some seqNr is excluded, misses events, and is included
// again with a replay from the last applied seqNr: the missed events are
// applied once, no duplicate, no gap.
func TestReplayOnIncludeEachEventOnce(t *testing.T) {
	t.Run("from seqNr 1", func(t *testing.T) {
		srv := serve(t, t.TempDir(), "127.0.0.1:0")
		defer srv.stop()
		store := openStore(t, t.TempDir())
		c := newExactlyOnce(t, srv.addr, store, "include type=bike")
		runConsumer(t, c)

		// car-7 (and car-8) are outside the filter; bikes flow, so once the
		// last bike is applied the offset is past car-7's events.
		bikes := publishCars(t, srv.p, "car-7", 1, 600)
		bikes += publishCars(t, srv.p, "car-8", 1, 30)
		testwait.For(t, 30*time.Second, "every bike applied", func() bool { a, _, _ := counters(t, store); return a == uint64(bikes) })
		if got := lastApplied(t, store, "car", "car-7"); got != 0 {
			t.Fatalf("car-7 applied up to %d before it was included", got)
		}

		// Publish car-7 #601..900 while the include with replay=1 runs.
		live := make(chan int, 1)
		started := make(chan struct{})
		go func() {
			n := publishCars(t, srv.p, "car-7", 601, 20)
			close(started)
			live <- n + publishCars(t, srv.p, "car-7", 621, 280)
		}()
		<-started
		include := mustParse(t, "include entity=car-7 replay=1", time.Now())
		err := c.UpdateFilter(context.Background(), []*streamdv1.FilterCriterion{include}, nil)
		bikes += <-live
		if err != nil {
			t.Fatal(err)
		}
		waitForEntity(t, store, "car-7", 900)
		testwait.For(t, 30*time.Second, "the bikes and 900 events of car-7 applied", func() bool { a, _, _ := counters(t, store); return a >= uint64(bikes+900) })
		applied, dups, gaps := counters(t, store)
		if applied != uint64(bikes+900) || dups != 0 || gaps != 0 {
			t.Fatalf("applied %d (want %d bikes + 900 of car-7), %d duplicates, %d gaps", applied, bikes, dups, gaps)
		}
		if got := lastApplied(t, store, "car", "car-8"); got != 0 {
			t.Fatalf("car-8, never included, applied up to %d", got)
		}
	})

	t.Run("from the last applied seqNr", func(t *testing.T) {
		srv := serve(t, t.TempDir(), "127.0.0.1:0")
		defer srv.stop()
		store := openStore(t, t.TempDir())
		c := newExactlyOnce(t, srv.addr, store, "include type=bike", "include entity=car-9")
		runConsumer(t, c)

		bikes := publishCars(t, srv.p, "car-9", 1, 150)
		testwait.For(t, 30*time.Second, "car-9 applied up to seqNr 150", func() bool { return lastApplied(t, store, "car", "car-9") == 150 })

		remove := mustParse(t, "include entity=car-9", time.Now())
		if err := c.UpdateFilter(context.Background(), nil, []*streamdv1.FilterCriterion{remove}); err != nil {
			t.Fatal(err)
		}
		bikes += publishCars(t, srv.p, "car-9", 151, 250)
		testwait.For(t, 30*time.Second, "the bikes and 150 events of car-9 applied", func() bool { a, _, _ := counters(t, store); return a == uint64(bikes+150) })
		if got := lastApplied(t, store, "car", "car-9"); got != 150 {
			t.Fatalf("car-9 applied up to %d while excluded, want 150", got)
		}

		live := make(chan int, 1)
		started := make(chan struct{})
		go func() {
			n := publishCars(t, srv.p, "car-9", 401, 20)
			close(started)
			live <- n + publishCars(t, srv.p, "car-9", 421, 180)
		}()
		<-started
		include := &streamdv1.FilterCriterion{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE,
			Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_ID, Value: "car-9"}
		err := c.UpdateFilter(context.Background(), []*streamdv1.FilterCriterion{include}, nil,
			consumer.ReplayFromLastApplied("car"))
		bikes += <-live
		if err != nil {
			t.Fatal(err)
		}
		waitForEntity(t, store, "car-9", 600)
		testwait.For(t, 30*time.Second, "the bikes and 600 events of car-9 applied", func() bool { a, _, _ := counters(t, store); return a >= uint64(bikes+600) })
		applied, dups, gaps := counters(t, store)
		if applied != uint64(bikes+600) || dups != 0 || gaps != 0 {
			t.Fatalf("applied %d (want %d bikes + 600 of car-9), %d duplicates, %d gaps", applied, bikes, dups, gaps)
		}
	})
}

var filteredBytesEvents = flag.Int("filtered-bytes.events", 100_000, "events published for BenchmarkFilteredBytes")

// BenchmarkFilteredBytes: N stored events (128-byte payloads, 100 entity
// types) streamed from EARLIEST over loopback TCP once unfiltered and once
// with a filter selecting 1% (one entity type); the bytes received by the
// client's gRPC stats handler for each Subscribe stream, their ratio, and
// how fast the filtered stream covers the journal.
func BenchmarkFilteredBytes(b *testing.B) {
	n := *filteredBytesEvents
	if n < 100 {
		b.Fatalf("-filtered-bytes.events=%d: want at least 100", n)
	}
	srv := serveWith(b, b.TempDir(), "127.0.0.1:0", producer.Options{
		Journal: journal.Options{Durability: journal.DurabilityAsync},
	})
	defer srv.stop()
	payload := bytes.Repeat([]byte{'x'}, 128)
	for i := 0; i < n; i += 1000 {
		batch := make([]*streamdv1.Event, 0, 1000)
		for k := i; k < min(n, i+1000); k++ {
			batch = append(batch, &streamdv1.Event{
				EntityType: fmt.Sprintf("type-%02d", k%100), EntityId: fmt.Sprint("e-", k%1000),
				EventType: "Sampled", Payload: payload,
			})
		}
		if _, err := srv.p.Publish(context.Background(), batch...); err != nil {
			b.Fatal(err)
		}
	}
	last := srv.p.Journal().Info().LastOffset
	wantFiltered := (n + 100 - 1 - 42) / 100 // k%100 == 42 for k < n

	tap := newWireTap(nil)
	conn, err := grpc.NewClient(srv.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithStatsHandler(tap))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	client := streamdv1.NewEventStreamServiceClient(conn)
	onePercent := []*streamdv1.FilterCriterion{mustParse(b, "include type=type-42", time.Now())}

	var unfilteredBytes, filteredBytes int
	var filteredTime time.Duration
	iterations := 0
	for b.Loop() {
		tap.reset()
		if got := streamToEnd(b, client, last, nil); got != n {
			b.Fatalf("unfiltered stream delivered %d events, want %d", got, n)
		}
		unfilteredBytes = tap.bytesTotal()

		tap.reset()
		start := time.Now()
		if got := streamToEnd(b, client, last, onePercent); got != wantFiltered {
			b.Fatalf("filtered stream delivered %d events, want %d", got, wantFiltered)
		}
		filteredTime += time.Since(start)
		filteredBytes = tap.bytesTotal()
		iterations++
	}
	b.ReportMetric(float64(unfilteredBytes), "bytes-unfiltered")
	b.ReportMetric(float64(filteredBytes), "bytes-filtered")
	b.ReportMetric(100*float64(filteredBytes)/float64(unfilteredBytes), "ratio-%")
	// events/s: journal events the filtered stream gets through per second
	// (what a catch-up takes); delivered-events/s: those it sends.
	b.ReportMetric(float64(n*iterations)/filteredTime.Seconds(), "events/s")
	b.ReportMetric(float64(wantFiltered*iterations)/filteredTime.Seconds(), "delivered-events/s")
}

// streamToEnd subscribes from EARLIEST with filter and reads until the
// stream has covered offset last (by events or Progress); it returns how
// many events it received.
func streamToEnd(b *testing.B, client streamdv1.EventStreamServiceClient, last uint64, filter []*streamdv1.FilterCriterion) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := client.Subscribe(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
		ConsumerName: "bench", StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST, Filter: filter,
	}}}); err != nil {
		b.Fatal(err)
	}
	got := 0
	for covered := uint64(0); covered < last; {
		m, err := st.Recv()
		if err != nil {
			b.Fatal(err)
		}
		if evs := m.GetEvents().GetEvents(); len(evs) > 0 {
			got += len(evs)
			covered = max(covered, evs[len(evs)-1].Offset)
		}
		covered = max(covered, m.GetProgress().GetOffset())
	}
	return got
}

// serveWith is serve with producer options.
func serveWith(tb testing.TB, dir, addr string, opts producer.Options) *server {
	tb.Helper()
	p, err := producer.Open(dir, opts)
	if err != nil {
		tb.Fatal(err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		p.Close()
		tb.Fatal(err)
	}
	g := grpc.NewServer()
	streamdv1.RegisterEventStreamServiceServer(g, p.Server())
	s := &server{p: p, g: g, addr: lis.Addr().String(), done: make(chan struct{})}
	go func() { defer close(s.done); g.Serve(lis) }()
	return s
}

// runConsumer runs c until the returned stop (also called at cleanup).
func runConsumer(t *testing.T, c *consumer.Consumer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("consumer Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func newExactlyOnce(t *testing.T, addr string, store *offsets.Store, filter ...string) *consumer.Consumer {
	t.Helper()
	var criteria []*streamdv1.FilterCriterion
	for _, f := range filter {
		criteria = append(criteria, mustParse(t, f, time.Now()))
	}
	c, err := consumer.New(consumer.Options{
		Producers: []string{addr}, Name: "fleet", Store: store, Filter: criteria,
		TxHandler:  exactlyOnceHandler,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// publishCars publishes events from..from+n-1 of car/id, each followed by a
// bike event, in appends of ten events; it returns how many bike events.
func publishCars(t *testing.T, p *producer.Producer, id string, from, n int) (bikes int) {
	var batch []*streamdv1.Event
	for seq := from; seq < from+n; seq++ {
		batch = append(batch,
			&streamdv1.Event{EntityType: "car", EntityId: id, EventType: "Moved", SeqNr: uint64(seq), Payload: []byte("c")},
			&streamdv1.Event{EntityType: "bike", EntityId: fmt.Sprint("b-", seq%5), EventType: "Moved", Payload: []byte("b")})
		bikes++
		if len(batch) == 10 || seq == from+n-1 {
			// SeqNr set: the append fails unless it is car's next one, so the
			// test's numbering is the journal's.
			if _, err := p.Publish(context.Background(), batch...); err != nil {
				t.Error(err)
				return bikes
			}
			batch = batch[:0]
		}
	}
	return bikes
}

// waitForEntity waits until car/id is applied up to seqNr last, failing at
// once if the exactly-once handler counted a duplicate or a gap on the way.
func waitForEntity(t *testing.T, store *offsets.Store, id string, last uint64) {
	t.Helper()
	testwait.For(t, 30*time.Second, "car/"+id+" applied up to its last seqNr", func() bool {
		_, dups, gaps := counters(t, store)
		return dups > 0 || gaps > 0 || lastApplied(t, store, "car", id) == last
	})
	if _, dups, gaps := counters(t, store); dups > 0 || gaps > 0 {
		t.Fatalf("car/%s applied up to %d of %d with %d duplicates and %d gaps", id, lastApplied(t, store, "car", id), last, dups, gaps)
	}
}

// lastApplied is the last seqNr exactlyOnceHandler applied of an entity.
func lastApplied(t *testing.T, s *offsets.Store, typ, id string) uint64 {
	t.Helper()
	var seq uint64
	err := s.DB().View(func(txn *badger.Txn) error {
		item, err := txn.Get(fmt.Appendf(nil, "test/last/%s/%s", typ, id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		v, err := item.ValueCopy(nil)
		seq = binary.BigEndian.Uint64(v)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func mustParse(tb testing.TB, text string, now time.Time) *streamdv1.FilterCriterion {
	tb.Helper()
	c, err := filters.Parse(text, now)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func sameCriteria(a, b []*streamdv1.FilterCriterion) bool {
	return slices.EqualFunc(a, b, func(x, y *streamdv1.FilterCriterion) bool { return proto.Equal(x, y) })
}

func taggedCar(id, tag, payload string) *streamdv1.Event {
	return &streamdv1.Event{EntityType: "car", EntityId: id, EventType: "SpeedSampled", Tags: []string{tag}, Payload: []byte(payload)}
}

// fakeClock is the producer's clock in a test.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.Set(t)
	return c
}

func (c *fakeClock) Now() time.Time  { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }

// sentCounter is a producer.StreamObserver summing the events one consumer
// was sent and those filtered away for it.
type sentCounter struct {
	consumer string

	mu               sync.Mutex
	opened           []string
	events, filtered int
}

func (o *sentCounter) StreamOpened(stream, consumer string) {
	if consumer == o.consumer {
		o.mu.Lock()
		o.opened = append(o.opened, stream)
		o.mu.Unlock()
	}
}

func (o *sentCounter) StreamClosed(stream, consumer string)              {}
func (o *sentCounter) Progressed(stream, consumer string, offset uint64) {}

func (o *sentCounter) Sent(stream, consumer string, events, bytes, filtered int) {
	if consumer != o.consumer {
		return
	}
	o.mu.Lock()
	o.events += events
	o.filtered += filtered
	o.mu.Unlock()
}

func (o *sentCounter) totals() (events, filtered int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.events, o.filtered
}

func (o *sentCounter) openedStreams() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.opened)
}

// wireTap is a client-side gRPC stats.Handler: it sums the payload bytes
// (gRPC framing included) of the Subscribe responses received and, with a
// classify function, counts their events by class.
type wireTap struct {
	classify func(*streamdv1.Event) string

	mu      sync.Mutex
	bytes   int
	classes map[string]int
}

func newWireTap(classify func(*streamdv1.Event) string) *wireTap {
	return &wireTap{classify: classify, classes: map[string]int{}}
}

type methodKey struct{}

func (w *wireTap) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, methodKey{}, info.FullMethodName)
}

func (w *wireTap) HandleRPC(ctx context.Context, s stats.RPCStats) {
	in, ok := s.(*stats.InPayload)
	if !ok || !in.Client || ctx.Value(methodKey{}) != streamdv1.EventStreamService_Subscribe_FullMethodName {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bytes += in.WireLength
	if m, ok := in.Payload.(*streamdv1.SubscribeResponse); ok && w.classify != nil {
		for _, e := range m.GetEvents().GetEvents() {
			w.classes[w.classify(e)]++
		}
	}
}

func (w *wireTap) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (w *wireTap) HandleConn(context.Context, stats.ConnStats)                       {}

func (w *wireTap) count(class string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.classes[class]
}

func (w *wireTap) bytesTotal() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.bytes
}

func (w *wireTap) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.bytes = 0
	clear(w.classes)
}

// recorder is an at-least-once handler that remembers the payloads it got,
// in order, and counts events by class (entity type "summary", or tags).
type recorder struct {
	mu         sync.Mutex
	order      []string
	deliveries map[string]int
	classes    map[string]int
}

func newRecorder() *recorder {
	return &recorder{deliveries: map[string]int{}, classes: map[string]int{}}
}

func (r *recorder) handle(_ context.Context, e *streamdv1.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := string(e.Payload)
	if r.deliveries[p] == 0 {
		r.order = append(r.order, p)
	}
	r.deliveries[p]++
	if e.EntityType == "summary" {
		r.classes["summary"]++
	} else {
		r.classes[strings.Join(e.Tags, ",")]++
	}
	return nil
}

func (r *recorder) count(class string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.classes[class]
}

func (r *recorder) delivered(payload string) bool { return r.times(payload) > 0 }

func (r *recorder) times(payload string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deliveries[payload]
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.order)
}

// withPrefix: the distinct payloads with prefix, in delivery order.
func (r *recorder) withPrefix(prefix string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, p := range r.order {
		if strings.HasPrefix(p, prefix) {
			out = append(out, p)
		}
	}
	return out
}

package topology_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/internal/regiontest"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
)

// interestClock is the one clock of the source's filter expiry and of
// Interest.
type interestClock struct{ ns atomic.Int64 }

func (c *interestClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *interestClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// Summaries replicate always; an auction's bids only while eu has
// interest in it: its history arrives after Touch, new bids follow, and
// after the inactivity period nothing more of it crosses until the next
// Touch.
func TestInterestReplicatesOnDemand(t *testing.T) {
	clock := &interestClock{}
	clock.ns.Store(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC).UnixNano())
	summaries := &streamdv1.FilterCriterion{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE, Value: "auction-summary"}
	us, eu, repl := startInterestRegions(t, clock, summaries)
	ctx := t.Context()
	interest, err := topology.NewInterest(repl, time.Minute, clock.Now)
	if err != nil {
		t.Fatal(err)
	}

	bid := func(auction string) {
		t.Helper()
		for _, e := range []*streamdv1.Event{
			{EntityType: "auction", EntityId: auction, EventType: "BidPlaced"},
			{EntityType: "auction-summary", EntityId: auction, EventType: "HighestBidChanged"},
		} {
			if _, err := us.Producer.Publish(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	// held counts eu's events of each type for an auction, once eu's
	// replication has passed everything us wrote (so what is missing was
	// not sent).
	held := func(auction string) (bids, sums int) {
		t.Helper()
		last := us.Producer.Journal().LastOffset()
		testwait.For(t, 20*time.Second, fmt.Sprintf("the replication to reach us's offset %d", last),
			func() bool { return repl.Status()[0].Offset >= last })
		evs, err := eu.Producer.Journal().Read(1, 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.GetEntityId() == auction {
				if e.GetEntityType() == "auction" {
					bids++
				} else {
					sums++
				}
			}
		}
		return bids, sums
	}
	waitBids := func(auction string, want int) {
		t.Helper()
		var bids int
		if !testwait.Until(10*time.Second, func() bool { bids, _ = held(auction); return bids == want }) {
			t.Fatalf("eu holds %d bids of %s, want %d", bids, auction, want)
		}
	}

	for range 3 {
		bid("a7")
		bid("a8")
	}
	if bids, sums := held("a7"); bids != 0 || sums != 3 {
		t.Fatalf("before interest eu holds %d bids, %d summaries of a7; want 0, 3", bids, sums)
	}
	if err := interest.Touch(ctx, "a7"); err != nil {
		t.Fatal(err)
	}
	waitBids("a7", 3) // the history
	bid("a7")
	waitBids("a7", 4) // and what follows
	if bids, _ := held("a8"); bids != 0 {
		t.Fatalf("a8 bids crossed without interest: %d", bids)
	}

	// A touch within the period keeps it; past the period it stops.
	clock.Advance(40 * time.Second)
	if err := interest.Touch(ctx, "a7"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(50 * time.Second) // 50s after the last touch: still active
	bid("a7")
	waitBids("a7", 5)
	clock.Advance(11 * time.Second) // inactive for a minute
	bid("a7")
	bid("a7")
	if bids, sums := held("a7"); bids != 5 || sums != 7 {
		t.Fatalf("after the inactivity period eu holds %d bids, %d summaries of a7; want 5 (no new ones), 7", bids, sums)
	}

	// Interest again: the missed bids come as history, in order.
	if err := interest.Touch(ctx, "a7"); err != nil {
		t.Fatal(err)
	}
	waitBids("a7", 7)
	w := &world{&regiontest.World{T: t, Regions: map[string]*regiontest.Region{"eu": eu}}}
	w.check("eu") // no duplicate, origin order kept
}

// Use with a fetch: the history is in the local journal when Use returns,
// new events follow through the replication, Entries shows the interest
// (also to an Interest made again over the same replication, as after a
// restart), and a fetch that fails leaves the history to a replay.
func TestInterestUseFetchesHistory(t *testing.T) {
	clock := &interestClock{}
	start := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clock.ns.Store(start.UnixNano())
	keepIncludeMode := &streamdv1.FilterCriterion{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ORIGIN, Value: "eu"}
	us, eu, repl := startInterestRegions(t, clock, keepIncludeMode)
	ctx := t.Context()
	testwait.For(t, 10*time.Second, "the replication to connect", func() bool { return repl.Status()[0].Connected })
	conn, err := grpc.NewClient(us.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fetch := func(id string) func(context.Context) error {
		return func(ctx context.Context) error {
			return topology.FetchEntity(ctx, conn, "us", eu.Producer.Journal(), "auction", id)
		}
	}
	bid := func(id string) {
		t.Helper()
		if _, err := us.Producer.Publish(ctx, &streamdv1.Event{EntityType: "auction", EntityId: id, EventType: "BidPlaced"}); err != nil {
			t.Fatal(err)
		}
	}
	bids := func(id string) int {
		t.Helper()
		evs, err := eu.Producer.Journal().ReadEntity("auction", id, 1, 100, nil)
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}
	for range 3 {
		bid("a7")
		bid("a8")
	}
	interest, err := topology.NewInterest(repl, time.Minute, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	began, err := interest.Use(ctx, "auction", "a7", 0, fetch("a7"))
	if err != nil || !began {
		t.Fatalf("Use = %v, %v; want a new interest", began, err)
	}
	if n := bids("a7"); n != 3 {
		t.Fatalf("eu holds %d bids of a7 when Use returns, want 3", n)
	}
	bid("a7")
	testwait.For(t, 10*time.Second, "the new bid of a7 to follow", func() bool { return bids("a7") == 4 })

	if got := interest.Entries(); len(got) != 1 || got[0].EntityID != "a7" || !reflect.DeepEqual(got[0].EntityTypes, []string{"auction"}) ||
		!got[0].Since.Equal(start) || !got[0].Expires.Equal(start.Add(time.Minute)) {
		t.Fatalf("Entries = %+v, want a7 (auction) since %v, expiring a minute later", got, start)
	}
	// A use moves the expiry only once it would move by more than a tenth
	// of the period.
	clock.Advance(5 * time.Second)
	if began, err := interest.Use(ctx, "auction", "a7", 0, fetch("a7")); began || err != nil {
		t.Fatalf("Use within the period = %v, %v", began, err)
	}
	if got := interest.Entries()[0].Expires; !got.Equal(start.Add(time.Minute)) {
		t.Fatalf("expiry moved to %v after 5s of a 1m period", got)
	}
	clock.Advance(2 * time.Second)
	if _, err := interest.Use(ctx, "auction", "a7", 0, fetch("a7")); err != nil {
		t.Fatal(err)
	}
	if got := interest.Entries()[0].Expires; !got.Equal(start.Add(67 * time.Second)) {
		t.Fatalf("expiry %v after a use 7s in, want %v", got, start.Add(67*time.Second))
	}
	again, err := topology.NewInterest(repl, time.Minute, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	if got := again.Entries(); len(got) != 1 || got[0].EntityID != "a7" || !got[0].Since.IsZero() || !got[0].Expires.Equal(start.Add(67*time.Second)) {
		t.Fatalf("Entries from the stored filter = %+v", got)
	}

	// A fetch that fails: Use says so, and the include asks for a replay.
	failed := errors.New("region away")
	_, err = interest.Use(ctx, "auction", "a8", 0, func(context.Context) error { return failed })
	if !errors.Is(err, failed) {
		t.Fatalf("Use with a failing fetch = %v, want %v", err, failed)
	}
	testwait.For(t, 10*time.Second, "a8's history through the replication", func() bool { return bids("a8") == 3 })

	// Fetches of two entities run at once (a9's waits for a10's to start);
	// a second use of a9 returns only once a9's fetch has ended.
	a9Started, a10Started, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var a9Fetched atomic.Bool
	first := make(chan error, 1)
	go func() {
		_, err := interest.Use(ctx, "auction", "a9", 0, func(context.Context) error {
			close(a9Started)
			select {
			case <-a10Started:
			case <-time.After(10 * time.Second):
				return errors.New("a10's fetch did not start while a9's ran")
			}
			<-release
			a9Fetched.Store(true)
			return nil
		})
		first <- err
	}()
	second := make(chan bool, 1)
	go func() {
		<-a9Started
		if _, err := interest.Use(ctx, "auction", "a10", 0, func(context.Context) error { close(a10Started); return nil }); err != nil {
			t.Error(err)
		}
		go func() {
			_, err := interest.Use(ctx, "auction", "a9", 0, nil)
			second <- err == nil && a9Fetched.Load()
		}()
		close(release)
	}()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if !<-second {
		t.Fatal("a second use of a9 returned before a9's history was fetched")
	}

	// Past the period, a7 is no longer listed, and its bids stop.
	clock.Advance(61 * time.Second)
	if got := interest.Entries(); len(got) != 0 {
		t.Fatalf("Entries after the period = %+v", got)
	}
	bid("a7")
	last := us.Producer.Journal().LastOffset()
	testwait.For(t, 10*time.Second, "the replication to pass us's last offset", func() bool { return repl.Status()[0].Offset >= last })
	if n := bids("a7"); n != 4 {
		t.Fatalf("eu holds %d bids of a7 after the period, want 4", n)
	}
}

// startInterestRegions starts regions us (on clock) and eu, and a
// replication from us into eu with filter, run until the test ends.
func startInterestRegions(t *testing.T, clock *interestClock, filter *streamdv1.FilterCriterion) (us, eu *regiontest.Region, repl *consumer.Consumer) {
	t.Helper()
	us = regiontest.StartWith(t, t.TempDir(), "127.0.0.1:0", producer.Options{Journal: journal.Options{Region: "us"}, Server: producer.ServerOptions{Now: clock.Now}})
	t.Cleanup(us.Stop)
	eu = regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	t.Cleanup(eu.Stop)
	repl, err := topology.NewReplication(topology.ReplicationOptions{
		From: topology.Region{Name: "us", Addrs: []string{us.Addr}}, Journal: eu.Producer.Journal(),
		Filter: []*streamdv1.FilterCriterion{filter}, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- repl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return us, eu, repl
}

package topology_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

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
	us := regiontest.StartWith(t, t.TempDir(), "127.0.0.1:0", producer.Options{Journal: journal.Options{Region: "us"}, Server: producer.ServerOptions{Now: clock.Now}})
	defer us.Stop()
	eu := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	defer eu.Stop()
	summaries := &streamdv1.FilterCriterion{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE, Value: "auction-summary"}
	repl, err := topology.NewReplication(topology.ReplicationOptions{
		From: topology.Region{Name: "us", Addrs: []string{us.Addr}}, Journal: eu.Producer.Journal(),
		Filter: []*streamdv1.FilterCriterion{summaries}, MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- repl.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
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

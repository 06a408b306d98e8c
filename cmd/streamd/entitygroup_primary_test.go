package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Single-writer and replicated entity types in a region over pods (real
// streamd processes: us, and eu as two pods of a group): each entity has
// one history, versions 1, 2, 3…, whichever pod or region a write enters
// at; a pin or a failover written at one pod steers the writes of every
// pod; a failover from the grouped region (both pods killed) and back to
// it (run at either pod) moves every entity.
func TestEntityGroupPrimaries(t *testing.T) {
	p := startGroupedProject(t, `default_primary: eu
entity_types:
  - {name: order, mode: pinned, primary: eu}
  - {name: account, mode: request-region, home: eu}
  - {name: cart, mode: replicated}
`)
	us, pods := p.us, p.pods
	ids := []string{"eu-0", "eu-1"}
	ctx := context.Background()
	const entities = 24
	version := map[string]uint64{} // the last written, by "type/id"
	// write publishes one event of every entity of typ through d and
	// expects each to land in region want at a version after the last
	// (the next, or after the handover a takeover appends),
	// asking again while the answer is Unavailable (a region or pod is
	// learning a pin, a failover or a slice move).
	write := func(what string, d *daemon, typ, want string) {
		t.Helper()
		for i := range entities {
			id := fmt.Sprint(typ[:1], i)
			var a *streamdv1.Appended
			var err error
			if !testwait.Until(60*time.Second, func() bool {
				var resp *streamdv1.PublishResponse
				resp, err = streamdv1.NewEventStreamServiceClient(d.conn).Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: typ, EntityId: id, EventType: "Changed"}}})
				if err == nil {
					a = resp.GetAppended()[0]
				}
				return status.Code(err) != codes.Unavailable
			}) || err != nil {
				t.Fatalf("%s: publish of %s/%s: %v", what, typ, id, err)
			}
			k := typ + "/" + id
			if a.GetRegion() != want || a.GetVersion() <= version[k] {
				t.Fatalf("%s: %s/%s landed at version %d in %q, want a version after %d in %s", what, typ, id, a.GetVersion(), a.GetRegion(), version[k], want)
			}
			version[k] = a.GetVersion()
		}
	}
	// pinned waits until each of ds knows the primary of order as want.
	pinned := func(what, want string, ds ...*daemon) {
		t.Helper()
		for _, d := range ds {
			var got *streamdv1.GetPrimaryResponse
			if !testwait.Until(30*time.Second, func() bool {
				var err error
				got, err = streamdv1.NewPrimaryServiceClient(d.conn).GetPrimary(ctx, &streamdv1.GetPrimaryRequest{EntityType: "order"})
				return err == nil && got.GetPrimary() == want
			}) {
				t.Fatalf("%s: the primary of order reads %v at %s, want %s", what, got, d.Addr, want)
			}
		}
	}
	// owned waits until every entity of typ reads through d as owned by
	// owner at its last version.
	owned := func(what string, d *daemon, typ, owner string) {
		t.Helper()
		for i := range entities {
			id := fmt.Sprint(typ[:1], i)
			var got *streamdv1.GetPrimaryResponse
			if !testwait.Until(30*time.Second, func() bool {
				var err error
				got, err = streamdv1.NewPrimaryServiceClient(d.conn).GetPrimary(ctx, &streamdv1.GetPrimaryRequest{EntityType: typ, EntityId: id})
				return err == nil && got.GetOwner() == owner && got.GetVersion() == version[typ+"/"+id]
			}) {
				t.Fatalf("%s: %s/%s reads %v, want owner %s at version %d", what, typ, id, got, owner, version[typ+"/"+id])
			}
		}
	}

	// Pinned to eu: writes through us and through either pod land in the
	// pod that writes the entity's slice, one history each.
	write("pinned", us, "order", "eu")
	write("pinned", pods["eu-0"], "order", "eu")
	write("pinned", pods["eu-1"], "order", "eu")
	for _, id := range ids {
		owned("pinned", pods[id], "order", "eu")
	}
	// Request-region: us takes each account over (asking the pod of eu that
	// holds it), then either pod takes it back.
	write("request-region", us, "account", "us")
	write("request-region", pods["eu-1"], "account", "eu")
	write("request-region", pods["eu-0"], "account", "eu")
	owned("request-region", us, "account", "eu")
	// Replicated: operations through us and either pod merge in the pod
	// that holds the entity.
	for _, d := range []*daemon{us, pods["eu-0"], pods["eu-1"]} {
		for i := range entities {
			_, err := streamdv1.NewEventStreamServiceClient(d.conn).Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: "cart", EntityId: fmt.Sprint("c", i),
				CrdtOps: []*streamdv1.CrdtOp{{Field: "qty", Op: &streamdv1.CrdtOp_AddCounter{AddCounter: 1}}}}}})
			if err != nil {
				t.Fatalf("cart c%d: %v", i, err)
			}
		}
	}
	for _, id := range ids {
		for i := range entities {
			var st *streamdv1.StateResponse
			if !testwait.Until(30*time.Second, func() bool {
				var err error
				st, err = streamdv1.NewPrimaryServiceClient(pods[id].conn).State(ctx, &streamdv1.StateRequest{EntityType: "cart", EntityId: fmt.Sprint("c", i)})
				return err == nil && st.GetCounters()["qty"] == 3
			}) {
				t.Fatalf("cart c%d through %s: %v, want qty 3", i, id, st)
			}
		}
	}

	// A pin set at one pod (written by the pod of the pin's slice) steers
	// the writes of every pod: each forwards its entities to us.
	if _, err := streamdv1.NewPrimaryServiceClient(pods["eu-0"].conn).SetPrimary(ctx, &streamdv1.SetPrimaryRequest{EntityType: "order", Primary: "us"}); err != nil {
		t.Fatal(err)
	}
	pinned("pinned to us", "us", us, pods["eu-0"], pods["eu-1"])
	write("pinned to us", pods["eu-1"], "order", "us")
	write("pinned to us", pods["eu-0"], "order", "us")
	if _, err := streamdv1.NewPrimaryServiceClient(us.conn).SetPrimary(ctx, &streamdv1.SetPrimaryRequest{EntityType: "order", Primary: "eu"}); err != nil {
		t.Fatal(err)
	}
	pinned("pinned back to eu", "eu", us, pods["eu-0"], pods["eu-1"])
	write("pinned back to eu", pods["eu-0"], "order", "eu")
	owned("pinned back to eu", us, "order", "eu")

	// Failover from the grouped region: both pods killed, us takes over.
	for _, id := range ids {
		if err := pods[id].stop(t, syscall.SIGKILL); err == nil {
			t.Fatalf("%s exited cleanly on SIGKILL", id)
		}
	}
	usPrimary := streamdv1.NewPrimaryServiceClient(us.conn)
	plan, err := usPrimary.Failover(ctx, &streamdv1.FailoverRequest{From: "eu", To: "us"})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.GetProgress()) != 1 || plan.GetProgress()[0].GetRegion() != "us" || len(plan.GetProgress()[0].GetJournals()) != 2 {
		t.Fatalf("dry run of the failover from eu: %v, want us's progress in both journals of eu", plan)
	}
	if _, err := usPrimary.Failover(ctx, &streamdv1.FailoverRequest{From: "eu", To: "us", Execute: true}); err != nil {
		t.Fatal(err)
	}
	write("failed over to us", us, "order", "us")
	write("failed over to us", us, "account", "us")

	// Back, each pod learns the failover and forwards to us.
	for _, id := range ids {
		p.start(id)
	}
	for id, d := range pods {
		waitWriting(t, "back", id, d, 512)
	}
	pinned("eu back", "us", pods["eu-0"], pods["eu-1"])
	write("eu back", pods["eu-0"], "order", "us")
	write("eu back", pods["eu-1"], "order", "us")

	// Failing back, run at either pod: the failover records are written by
	// the pod of their slice, and every pod follows them.
	for _, id := range ids {
		plan, err := streamdv1.NewPrimaryServiceClient(pods[id].conn).Failover(ctx, &streamdv1.FailoverRequest{From: "us", To: "eu"})
		if err != nil {
			t.Fatalf("dry run of the failback through %s: %v", id, err)
		}
		if len(plan.GetProgress()) != 1 || plan.GetProgress()[0].GetRegion() != "eu" || len(plan.GetProgress()[0].GetJournals()) != 1 {
			t.Fatalf("dry run of the failback through %s: %v, want eu's progress in us's journal", id, plan)
		}
	}
	if _, err := streamdv1.NewPrimaryServiceClient(pods["eu-1"].conn).Failover(ctx, &streamdv1.FailoverRequest{From: "us", To: "eu", Execute: true}); err != nil {
		t.Fatal(err)
	}
	pinned("failed back to eu", "eu", us, pods["eu-0"], pods["eu-1"])
	write("failed back to eu", us, "order", "eu")
	write("failed back to eu", pods["eu-0"], "order", "eu")
	write("failed back to eu", pods["eu-1"], "account", "eu")
	for _, id := range ids {
		owned("failed back to eu", pods[id], "order", "eu")
	}
}

// An entity type replicated on demand into a region over pods: a read
// through either pod registers the interest at the pod that holds the
// entity, which copies its history from us before answering and then
// follows it live; after a slice moves, the pod that took it registers
// the interest again on the next use, history first.
func TestEntityGroupOnDemand(t *testing.T) {
	p := startGroupedProject(t, `default_primary: us
entity_types:
  - {name: note, mode: local, replication: on-demand, inactivity: 1h}
`)
	us, pods := p.us, p.pods
	ids := []string{"eu-0", "eu-1"}
	ctx := context.Background()
	const notes = 16
	publish := func(ev string) {
		t.Helper()
		for i := range notes {
			if _, err := streamdv1.NewEventStreamServiceClient(us.conn).Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: "note", EntityId: fmt.Sprint("n", i), EventType: ev}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// history is what EntityEvents of note id answers through d.
	history := func(d *daemon, id string) []string {
		t.Helper()
		var evs []string
		if !testwait.Until(60*time.Second, func() bool {
			evs = nil
			st, err := streamdv1.NewEventStreamServiceClient(d.conn).EntityEvents(ctx, &streamdv1.EntityEventsRequest{EntityType: "note", EntityId: id, FromSeqNr: 1})
			if err != nil {
				return false
			}
			for {
				resp, err := st.Recv()
				if err != nil {
					return errors.Is(err, io.EOF)
				}
				for _, e := range resp.GetEvents() {
					evs = append(evs, fmt.Sprintf("%d %s %s", e.GetSeqNr(), e.GetEventType(), e.GetOrigin()))
				}
			}
		}) {
			t.Fatalf("EntityEvents of %s through %s: %v", id, d.Addr, evs)
		}
		return evs
	}
	publish("Written")
	publish("Edited")
	want := []string{"1 Written us", "2 Edited us"}
	for i := range notes {
		id := fmt.Sprint("n", i)
		if evs := history(pods[ids[i%2]], id); !slices.Equal(evs, want) {
			t.Fatalf("first read of %s: %v, want %v", id, evs, want)
		}
	}
	// Each pod has the interest in the notes of its slices, which together
	// are every note; either pod lists them all.
	var interested []string
	for _, id := range ids {
		resp, err := streamdv1.NewInterestServiceClient(pods[id].conn).ListInterests(ctx, &streamdv1.ListInterestsRequest{Pod: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range resp.GetInterests() {
			interested = append(interested, x.GetEntityId())
		}
	}
	if slices.Sort(interested); len(interested) != notes || len(slices.Compact(interested)) != notes {
		t.Fatalf("the pods have interest in %v, want each of the %d notes once", interested, notes)
	}
	for _, id := range ids {
		resp, err := streamdv1.NewInterestServiceClient(pods[id].conn).ListInterests(ctx, &streamdv1.ListInterestsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetInterests(); len(got) != notes || got[0].GetRegions()[0] != "us" {
			t.Fatalf("the interests listed through %s: %v, want the %d notes from us", id, got, notes)
		}
	}
	// Later changes follow live into the pod that holds each note.
	publish("Moved")
	want = append(want, "3 Moved us")
	for i := range notes {
		id := fmt.Sprint("n", i)
		var evs []string
		if !testwait.Until(30*time.Second, func() bool {
			evs = history(pods[ids[(i+1)%2]], id)
			return slices.Equal(evs, want)
		}) {
			t.Fatalf("%s after a change in us: %v, want %v", id, evs, want)
		}
	}
	// eu-1 leaves: eu-0 copies its slices' history and, at the next use of
	// a note, registers its interest, history first.
	if err := pods["eu-1"].stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("eu-1 stopped with %v", err)
	}
	publish("Closed")
	want = append(want, "4 Closed us")
	for i := range notes {
		id := fmt.Sprint("n", i)
		if evs := history(pods["eu-0"], id); !slices.Equal(evs, want) {
			t.Fatalf("%s through eu-0 alone: %v, want %v", id, evs, want)
		}
	}
}

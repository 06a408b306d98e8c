package topology_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamd/streamd/internal/regiontest"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/crdt"
)

// world is a regiontest.World with the checks of replicated journals.
type world struct{ *regiontest.World }

func newWorld(t *testing.T, names ...string) *world {
	return &world{regiontest.NewWorld(t, names...)}
}

// publish writes n events of each entity in region r, concurrently with
// whatever else runs.
func (w *world) publish(r string, entities []string, n int) {
	w.T.Helper()
	for i := range n {
		for _, id := range entities {
			e := &streamdv1.Event{EntityType: "cart", EntityId: id, EventType: "ItemAdded", Payload: fmt.Appendf(nil, "%s-%d", r, i)}
			if _, err := w.Regions[r].Producer.Publish(context.Background(), e); err != nil {
				w.T.Fatal(err)
			}
		}
	}
}

type originEvent struct {
	origin, entity string // entity: type/id
	originSeqNr    uint64
}

// check reads region r's journal and fails on a duplicate or an origin
// sequence out of order; it returns the set of events held.
func (w *world) check(r string) map[originEvent]bool {
	w.T.Helper()
	held := map[originEvent]bool{}
	last := map[[2]string]uint64{}
	recs, err := w.Regions[r].Producer.Journal().Read(1, 1<<20, nil)
	if err != nil && !errors.Is(err, journal.ErrNotFound) {
		w.T.Fatal(err)
	}
	for _, e := range recs {
		k := originEvent{e.GetOrigin(), e.GetEntityType() + "/" + e.GetEntityId(), e.GetOriginSeqNr()}
		if e.GetOrigin() == "" || e.GetOriginSeqNr() == 0 {
			w.T.Fatalf("region %s: event at offset %d has no origin", r, e.GetOffset())
		}
		if held[k] {
			w.T.Fatalf("region %s holds %v twice", r, k)
		}
		held[k] = true
		ok := [2]string{k.origin, k.entity}
		if k.originSeqNr != last[ok]+1 {
			w.T.Fatalf("region %s: %s/%s origin seqNr %d follows %d", r, k.origin, k.entity, k.originSeqNr, last[ok])
		}
		last[ok] = k.originSeqNr
	}
	return held
}

// converge waits until every region holds want events, checking each read.
func (w *world) converge(want int) {
	w.T.Helper()
	var sets []map[originEvent]bool
	if !testwait.Until(30*time.Second, func() bool {
		sets = sets[:0]
		done := true
		for name := range w.Regions {
			s := w.check(name)
			sets = append(sets, s)
			done = done && len(s) == want
		}
		return done
	}) {
		counts := map[string]int{}
		for name := range w.Regions {
			counts[name] = len(w.check(name))
		}
		w.T.Fatalf("no convergence to %d events: %v", want, counts)
	}
	for _, s := range sets[1:] {
		for k := range s {
			if !sets[0][k] {
				w.T.Fatalf("regions differ on %v", k)
			}
		}
	}
}

// editCRDTCart writes n edits of the replicated-write entity crdt-cart/c1
// in region r.
func (w *world) editCRDTCart(r string, n int) {
	rep, err := topology.NewReplicated(w.Regions[r].Producer.Journal(), topology.ReplicatedOptions{Region: r})
	if err != nil {
		w.T.Error(err)
		return
	}
	for i := range n {
		changes := []crdt.Change{crdt.AddElement("items", fmt.Sprintf("%s-%d", r, i)), crdt.Increment("quantity", 1)}
		if i == n-1 {
			changes = []crdt.Change{crdt.SetRegister("address", r), crdt.RemoveElement("items", fmt.Sprintf("%s-0", r))}
		}
		if _, err := rep.Apply(context.Background(), "crdt-cart", "c1", changes...); err != nil {
			w.T.Error(err)
			return
		}
	}
}

// sameCRDTCart checks that every region folds crdt-cart/c1 to one state.
func (w *world) sameCRDTCart() {
	w.T.Helper()
	var first *crdt.State
	for name, r := range w.Regions {
		rep, err := topology.NewReplicated(r.Producer.Journal(), topology.ReplicatedOptions{Region: name})
		if err != nil {
			w.T.Fatal(err)
		}
		st, err := rep.State(context.Background(), "crdt-cart", "c1")
		if err != nil {
			w.T.Fatal(err)
		}
		if first == nil {
			first = st
			continue
		}
		if !st.Equal(first) {
			w.T.Fatalf("region %s folds crdt-cart/c1 to %v, another region to %v", name, st, first)
		}
	}
	if got := first.Counter("quantity"); got != 3*4 {
		w.T.Fatalf("quantity %d, want 12", got)
	}
	if got := len(first.Elements("items")); got != 3*3 {
		w.T.Fatalf("%d items %v, want 9 (each region added 4 and removed its first)", got, first.Elements("items"))
	}
}

// Three regions replicating to each other converge with every event once,
// in origin order, also when one direct link is down (relay through the
// third region), when it comes back, when replications restart and when a
// region restarts.
func TestThreeRegionsConverge(t *testing.T) {
	w := newWorld(t, "eu", "us", "ap")
	w.Links[[2]string{"eu", "ap"}].Proxy.Cut() // ap cannot reach eu directly
	w.StartAll()

	// Besides plain events, every region writes one replicated-write
	// entity: 3 regions x 5 edits of 2 ops = 30 more events.
	var wg sync.WaitGroup
	for _, r := range []string{"eu", "us", "ap"} {
		wg.Go(func() { w.publish(r, []string{r + "-cart", "shared-cart"}, 20) })
		wg.Go(func() { w.editCRDTCart(r, 5) })
	}
	wg.Wait()
	w.converge(3*2*20 + 30)
	w.sameCRDTCart()

	// eu's events reached ap through us.
	w.publish("eu", []string{"eu-cart"}, 10)
	w.converge(3*2*20 + 10 + 30)

	// The direct link comes back: what ap now gets twice is dropped.
	w.Links[[2]string{"eu", "ap"}].Proxy.Restore()
	w.publish("eu", []string{"eu-cart", "shared-cart"}, 10)
	w.converge(3*2*20 + 10 + 20 + 30)

	// Replications restart mid-stream, links are cut and restored while
	// events are written.
	for k := range w.Links {
		w.StopLink(k[0], k[1])
	}
	w.publish("us", []string{"us-cart"}, 10)
	w.StartAll()
	w.Links[[2]string{"us", "eu"}].Proxy.Cut()
	w.publish("ap", []string{"shared-cart"}, 10)
	w.Links[[2]string{"us", "eu"}].Proxy.Restore()
	w.converge(3*2*20 + 10 + 20 + 10 + 10 + 30)

	// us restarts (same data, same address): nothing lost, nothing twice.
	us := w.Regions["us"]
	for k := range w.Links {
		if k[1] == "us" {
			w.StopLink(k[0], k[1])
		}
	}
	us.Stop()
	w.Regions["us"] = regiontest.Start(t, "us", us.Dir, us.Addr)
	for k := range w.Links {
		if k[1] == "us" {
			w.StartLink(k[0], k[1])
		}
	}
	w.publish("us", []string{"us-cart"}, 5)
	w.converge(3*2*20 + 10 + 20 + 10 + 10 + 5 + 30)
	w.sameCRDTCart()
}

func TestReplicationRefusesNonsense(t *testing.T) {
	r := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	defer r.Stop()
	store, err := offsets.Open(t.TempDir(), offsets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for name, opts := range map[string]topology.ReplicationOptions{
		"into itself":      {From: topology.Region{Name: "eu", Addrs: []string{r.Addr}}, Journal: r.Producer.Journal()},
		"no address":       {From: topology.Region{Name: "us"}, Journal: r.Producer.Journal()},
		"no name":          {From: topology.Region{Addrs: []string{r.Addr}}, Journal: r.Producer.Journal()},
		"store of its own": {From: topology.Region{Name: "us", Addrs: []string{r.Addr}}, Journal: r.Producer.Journal(), Store: store},
		"slices reversed":  {From: topology.Region{Name: "us", Addrs: []string{r.Addr}}, Journal: r.Producer.Journal(), Slices: offsets.SliceRange{First: 9, Last: 3}},
		"streams > slices": {From: topology.Region{Name: "us", Addrs: []string{r.Addr}}, Journal: r.Producer.Journal(), Slices: offsets.SliceRange{First: 0, Last: 3}, Streams: 5},
	} {
		if _, err := topology.NewReplication(opts); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !errors.Is(err, topology.ErrInvalidOptions) {
			t.Errorf("%s: %v, want ErrInvalidOptions", name, err)
		}
	}
	// Every nonsensical field is reported.
	err = topology.ReplicationOptions{}.Validate()
	for _, msg := range []string{"From.Name is empty", "has no addresses", "Journal is nil"} {
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("Validate = %v, want it to name %q", err, msg)
		}
	}
	plain, err := producer.Open(t.TempDir(), producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	_, err = topology.NewReplication(topology.ReplicationOptions{From: topology.Region{Name: "us", Addrs: []string{r.Addr}}, Journal: plain.Journal()})
	if err == nil {
		t.Error("a journal without region was accepted")
	}
}

// An entity whose first events were filtered out arrives with a gap in its
// origin sequence: the replication asks for its history and applies it in
// order, without holding back other entities.
func TestGapAsksForHistory(t *testing.T) {
	src := regiontest.Start(t, "us", t.TempDir(), "127.0.0.1:0")
	dst := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	defer src.Stop()
	defer dst.Stop()
	hidden := &streamdv1.FilterCriterion{Action: streamdv1.FilterAction_FILTER_ACTION_EXCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_ID, Value: "late"}
	c, err := topology.NewReplication(topology.ReplicationOptions{
		From:    topology.Region{Name: "us", Addrs: []string{src.Addr}},
		Journal: dst.Producer.Journal(), Filter: []*streamdv1.FilterCriterion{hidden},
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	w := &world{&regiontest.World{T: t, Regions: map[string]*regiontest.Region{"us": src, "eu": dst}}}
	w.publish("us", []string{"late"}, 3)
	w.publish("us", []string{"early"}, 1)
	waitHeld := func(want map[originEvent]bool) {
		t.Helper()
		var held map[originEvent]bool
		if !testwait.Until(20*time.Second, func() bool {
			held = w.check("eu") // fails on a duplicate or an origin order violation
			missing := 0
			for k := range want {
				if !held[k] {
					missing++
				}
			}
			return missing == 0 && len(held) == len(want)
		}) {
			t.Fatalf("eu holds %v, want %v", held, want)
		}
	}
	waitHeld(map[originEvent]bool{{"us", "cart/early", 1}: true})

	if err := c.UpdateFilter(ctx, nil, []*streamdv1.FilterCriterion{hidden}); err != nil {
		t.Fatal(err)
	}
	w.publish("us", []string{"late", "early"}, 1) // late/4 arrives with a gap
	waitHeld(map[originEvent]bool{
		{"us", "cart/early", 1}: true, {"us", "cart/early", 2}: true,
		{"us", "cart/late", 1}: true, {"us", "cart/late", 2}: true, {"us", "cart/late", 3}: true, {"us", "cart/late", 4}: true,
	})
}

// histories reads j: per (origin, entity id), the origin seqNrs of the
// events in part, in the order j holds them, and how many events j holds
// in all.
func histories(t *testing.T, j *journal.Journal, part offsets.SliceRange) (map[[2]string][]uint64, int) {
	t.Helper()
	recs, err := j.Read(1, 1<<20, nil)
	if err != nil && !errors.Is(err, journal.ErrNotFound) {
		t.Fatal(err)
	}
	out := map[[2]string][]uint64{}
	for _, e := range recs {
		if part.Contains(e.GetSlice()) {
			k := [2]string{e.GetOrigin(), e.GetEntityId()}
			out[k] = append(out[k], e.GetOriginSeqNr())
		}
	}
	return out, len(recs)
}

func appendEvents(t *testing.T, j *journal.Journal, events ...*streamdv1.Event) []journal.Appended {
	t.Helper()
	app, err := j.Append(context.Background(), events...)
	if err != nil {
		t.Fatal(err)
	}
	return app
}

func cartEvent(id string) *streamdv1.Event {
	return &streamdv1.Event{EntityType: "cart", EntityId: id, EventType: "ItemAdded"}
}

// The replication from another region never copies this region's own
// events, even those this region does not hold: they were written here.
func TestReplicationSkipsLocalOrigin(t *testing.T) {
	us := regiontest.Start(t, "us", t.TempDir(), "127.0.0.1:0")
	eu := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	defer us.Stop()
	defer eu.Stop()
	var back []*streamdv1.Event
	for seq := range uint64(3) {
		e := cartEvent("back")
		e.Origin, e.OriginSeqNr = "eu", seq+1
		back = append(back, e)
	}
	appendEvents(t, us.Producer.Journal(), back...)
	appendEvents(t, us.Producer.Journal(), cartEvent("marker"))

	c, err := topology.NewReplication(topology.ReplicationOptions{
		From: topology.Region{Name: "us", Addrs: []string{us.Addr}}, Journal: eu.Producer.Journal(),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	testwait.For(t, 30*time.Second, "eu to copy us's marker event", func() bool {
		held, _ := histories(t, eu.Producer.Journal(), offsets.AllSlices)
		return len(held[[2]string{"us", "marker"}]) == 1
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The marker came after eu's events, over one stream: they were passed.
	if held, _ := histories(t, eu.Producer.Journal(), offsets.AllSlices); len(held[[2]string{"eu", "back"}]) > 0 {
		t.Fatalf("eu copied its own events back from us: origin seqNrs %v", held[[2]string{"eu", "back"}])
	}
}

// Copying from this region is refused unless the source is a member (a
// pod of this region), and a member must be of this region.
func TestReplicationMemberOptions(t *testing.T) {
	eu := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	defer eu.Stop()
	j := eu.Producer.Journal()
	pod := topology.Region{Name: "eu", Addrs: []string{eu.Addr}}
	if err := (topology.ReplicationOptions{From: pod, Journal: j}).Validate(); !errors.Is(err, topology.ErrInvalidOptions) || !strings.Contains(err.Error(), "ReplicationOptions.Member") {
		t.Errorf("from this region without Member: %v, want ErrInvalidOptions naming ReplicationOptions.Member", err)
	}
	if err := (topology.ReplicationOptions{From: pod, Journal: j, Member: true}).Validate(); err != nil {
		t.Errorf("from another pod of this region with Member: %v", err)
	}
	if _, err := topology.NewReplication(topology.ReplicationOptions{From: pod, Journal: j, Member: true}); err != nil {
		t.Errorf("NewReplication of a member: %v", err)
	}
	us := topology.Region{Name: "us", Addrs: []string{eu.Addr}}
	if err := (topology.ReplicationOptions{From: us, Journal: j, Member: true}).Validate(); !errors.Is(err, topology.ErrInvalidOptions) {
		t.Errorf("a member of region us into eu: %v, want ErrInvalidOptions", err)
	}
}

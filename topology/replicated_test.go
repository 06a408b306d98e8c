package topology_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/crdt"
)

// fakeClock is a settable clock for LWW timestamps.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// fatalHelper is what the helpers need of *testing.T and *rapid.T alike.
type fatalHelper interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

// crdtRegion is one region of a test: its journal and its replicated-writes API.
type crdtRegion struct {
	name    string
	j       *journal.Journal
	r       *topology.Replicated
	clock   *fakeClock
	dir     string
	options topology.ReplicatedOptions
}

func newCRDTRegion(t testing.TB, name string, opts topology.ReplicatedOptions) *crdtRegion {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	j, err := journal.Open(dir, journal.Options{Region: name, Durability: journal.DurabilityAsync})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	reg := &crdtRegion{name: name, j: j, clock: &fakeClock{}, dir: dir}
	reg.clock.ns.Store(1_000)
	opts.Region, opts.Now = name, reg.clock.Now
	reg.options = opts
	if reg.r, err = topology.NewReplicated(j, opts); err != nil {
		t.Fatal(err)
	}
	return reg
}

// restarted is the region's API as a new process has it: nothing cached.
func (reg *crdtRegion) restarted(t fatalHelper) *topology.Replicated {
	t.Helper()
	r, err := topology.NewReplicated(reg.j, reg.options)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (reg *crdtRegion) apply(t fatalHelper, id string, changes ...crdt.Change) *crdt.State {
	t.Helper()
	s, err := reg.r.Apply(context.Background(), cartType, id, changes...)
	if err != nil {
		t.Fatalf("%s: Apply(%v): %v", reg.name, changes, err)
	}
	return s
}

func (reg *crdtRegion) state(t fatalHelper, id string) *crdt.State {
	t.Helper()
	s, err := reg.r.State(context.Background(), cartType, id)
	if err != nil {
		t.Fatalf("%s: State: %v", reg.name, err)
	}
	return s
}

// appendAll appends events one append each and counts the duplicates the
// journal dropped.
func appendAll(t fatalHelper, to *journal.Journal, events []*streamdv1.Event) (duplicates int) {
	t.Helper()
	for _, e := range events {
		res, err := to.Append(context.Background(), e)
		if err != nil {
			t.Fatalf("append %s/%d: %v", e.Origin, e.OriginSeqNr, err)
		}
		if res[0].Duplicate {
			duplicates++
		}
	}
	return duplicates
}

func mustReplicationEvents(t fatalHelper, from *journal.Journal, toRegion string) []*streamdv1.Event {
	t.Helper()
	events, err := replicationEvents(from, toRegion)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

func entityEvents(t fatalHelper, j *journal.Journal, id string) []*streamdv1.Event {
	t.Helper()
	events, err := j.ReadEntity(cartType, id, 1, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

func checkEqual(t fatalHelper, what string, a, b *crdt.State) {
	t.Helper()
	if !a.Equal(b) {
		t.Fatalf("%s differ:\n%v\n%v", what, a, b)
	}
}

// TestReplicatedTwoRegionsConverge: a cart written in eu and us at once,
// replicated between two real journals by hand, in different orders and with
// duplicates, folds to the same state in both, also after a restart.
func TestReplicatedTwoRegionsConverge(t *testing.T) {
	eu, us := newCRDTRegion(t, "eu", topology.ReplicatedOptions{}), newCRDTRegion(t, "us", topology.ReplicatedOptions{})
	const id = "cart-1"

	// Both regions write before hearing from the other; clocks read alike.
	eu.apply(t, id, addItem("sku-1", 2)...)
	eu.apply(t, id, setAddress("Paris")...)
	us.apply(t, id, addItem("sku-2", 1)...)
	us.apply(t, id, addItem("sku-1", 1)...)
	us.apply(t, id, setAddress("New York")...)
	if got := cart(eu.state(t, id)); got != "sku-1×2 → Paris" {
		t.Fatalf("eu before replication: %s", got)
	}

	// eu's events reach us one by one, each twice; us's reach eu in one append,
	// then all of them again.
	toUS := mustReplicationEvents(t, eu.j, "us")
	if dups := appendAll(t, us.j, append(toUS, mustReplicationEvents(t, eu.j, "us")...)); dups != len(toUS) {
		t.Fatalf("the journal dropped %d duplicates, want %d", dups, len(toUS))
	}
	toEU := mustReplicationEvents(t, us.j, "eu")
	if _, err := eu.j.Append(context.Background(), toEU...); err != nil {
		t.Fatal(err)
	}
	if dups := appendAll(t, eu.j, mustReplicationEvents(t, us.j, "eu")); dups != len(toEU) {
		t.Fatalf("eu dropped %d duplicates, want %d: us relayed eu's own events back", dups, len(toEU))
	}
	euState, usState := eu.state(t, id), us.state(t, id)
	checkEqual(t, "eu and us after replication", euState, usState)
	// Equal timestamps: the greater region name wins the address.
	if got := cart(euState); got != "sku-1×3 sku-2×1 → New York" {
		t.Fatalf("converged cart %s", got)
	}

	// eu removes sku-1 while us, not knowing, adds one more: add wins, and the
	// quantity is what us added after the quantity eu saw.
	eu.apply(t, id, removeItem("sku-1")...)
	us.apply(t, id, addItem("sku-1", 1)...)
	appendAll(t, eu.j, mustReplicationEvents(t, us.j, "eu"))
	appendAll(t, us.j, mustReplicationEvents(t, eu.j, "us"))
	euState, usState = eu.state(t, id), us.state(t, id)
	checkEqual(t, "eu and us after concurrent remove and add", euState, usState)
	if got := cart(euState); got != "sku-1×1 sku-2×1 → New York" {
		t.Fatalf("after a remove concurrent with an add: %s", got)
	}

	// A new process folds the journal to what the cache holds.
	for _, reg := range []*crdtRegion{eu, us} {
		s, err := reg.restarted(t).State(context.Background(), cartType, id)
		if err != nil {
			t.Fatal(err)
		}
		checkEqual(t, reg.name+" cached and folded after restart", euState, s)
	}
}

// TestReplicatedEventsCarryOriginAndVersionVector: each op is one event named
// after it, with this region as origin, origin seqNrs counting this region's
// events of the entity, and the version vector of what the region had seen.
func TestReplicatedEventsCarryOriginAndVersionVector(t *testing.T) {
	eu, us := newCRDTRegion(t, "eu", topology.ReplicatedOptions{}), newCRDTRegion(t, "us", topology.ReplicatedOptions{})
	const id = "cart-vv"
	us.apply(t, id, addItem("sku-1", 1)...)                      // us 1, 2
	us.apply(t, id, setAddress("Boston")...)                     // us 3
	eu.clock.ns.Store(42_000)                                    //
	eu.apply(t, id, addItem("sku-2", 5)...)                      // eu 1, 2
	appendAll(t, eu.j, mustReplicationEvents(t, us.j, "eu")[:2]) // eu has seen us 1, 2
	eu.apply(t, id, removeItem("sku-1")...)                      // eu 3, 4

	type want struct {
		eventType   string
		origin      string
		originSeqNr uint64
		vv          map[string]uint64
	}
	wants := []want{
		{crdt.EventElementAdded, "eu", 1, map[string]uint64{"eu": 1}},
		{crdt.EventCounterUpdated, "eu", 2, map[string]uint64{"eu": 2}},
		{crdt.EventElementAdded, "us", 1, map[string]uint64{"us": 1}},
		{crdt.EventCounterUpdated, "us", 2, map[string]uint64{"us": 2}},
		{crdt.EventElementRemoved, "eu", 3, map[string]uint64{"eu": 3, "us": 2}},
		{crdt.EventCounterUpdated, "eu", 4, map[string]uint64{"eu": 4, "us": 2}},
	}
	got := entityEvents(t, eu.j, id)
	if len(got) != len(wants) {
		t.Fatalf("%d events in eu, want %d", len(got), len(wants))
	}
	for i, e := range got {
		w := wants[i]
		if e.EventType != w.eventType || e.Origin != w.origin || e.OriginSeqNr != w.originSeqNr || !maps.Equal(e.VersionVector, w.vv) {
			t.Errorf("event %d: %s from %s/%d vv %v, want %s from %s/%d vv %v",
				i, e.EventType, e.Origin, e.OriginSeqNr, e.VersionVector, w.eventType, w.origin, w.originSeqNr, w.vv)
		}
		if e.Origin == "eu" && e.OriginTimestampUnixNano != 42_000 {
			t.Errorf("event %d: origin timestamp %d, want eu's clock 42000", i, e.OriginTimestampUnixNano)
		}
		if _, err := crdt.Decode(e.EventType, e.Payload); err != nil {
			t.Errorf("event %d: %v", i, err)
		}
	}
	// The remove named the tag of us's add that eu had seen: its dot.
	op, _ := crdt.Decode(got[4].EventType, got[4].Payload)
	if op.Remove == nil || !slices.Equal(op.Remove.Tags, []crdt.Dot{{Region: "us", Counter: 1}}) {
		t.Fatalf("remove op %+v, want the tag us:1", op.Remove)
	}
}

// TestReplicatedRetriesWhenAReplicatedEventIntervenes: a replicated event
// appended between the fold and the append takes the seqNr Apply expected;
// Apply folds it and decides again, and its op reflects it.
func TestReplicatedRetriesWhenAReplicatedEventIntervenes(t *testing.T) {
	eu, us := newCRDTRegion(t, "eu", topology.ReplicatedOptions{}), newCRDTRegion(t, "us", topology.ReplicatedOptions{})
	const id = "cart-race"
	us.apply(t, id, crdt.AddElement("items", "sku-us"))
	fromUS := mustReplicationEvents(t, us.j, "eu")
	eu.apply(t, id, crdt.AddElement("items", "sku-eu"))

	calls := 0
	s, err := eu.r.Update(context.Background(), cartType, id, func(s *crdt.State) ([]crdt.Change, error) {
		calls++
		if calls == 1 {
			if s.Contains("items", "sku-us") {
				t.Error("the first decision saw sku-us before it was replicated")
			}
			appendAll(t, eu.j, fromUS) // the replicator wins the race
		}
		// Remove whatever is in the cart.
		var changes []crdt.Change
		for _, sku := range s.Elements("items") {
			changes = append(changes, crdt.RemoveElement("items", sku))
		}
		return changes, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2 {
		t.Fatalf("decide ran %d times, want 2", calls)
	}
	if len(s.Elements("items")) != 0 {
		t.Fatalf("items %q left: the retry did not see the replicated add", s.Elements("items"))
	}
	events := entityEvents(t, eu.j, id)
	for i, e := range events {
		if e.SeqNr != uint64(i+1) {
			t.Fatalf("seqNrs %d at %d", e.SeqNr, i)
		}
	}
	if last := events[len(events)-1]; last.Origin != "eu" || last.VersionVector["us"] != 1 {
		t.Fatalf("last event from %s with vv %v, want eu having seen us:1", last.Origin, last.VersionVector)
	}
	checkEqual(t, "Update's result and State", s, eu.state(t, id))
}

// TestReplicatedConcurrentWritersAndReplication: writers in one region and a
// replicator appending to the same entity at once; every write lands once,
// with a dot of its own, and nothing is lost.
func TestReplicatedConcurrentWritersAndReplication(t *testing.T) {
	eu, us := newCRDTRegion(t, "eu", topology.ReplicatedOptions{}), newCRDTRegion(t, "us", topology.ReplicatedOptions{})
	const id, writers, writes = "cart-busy", 4, 15
	for i := range 40 {
		us.apply(t, id, crdt.AddElement("items", fmt.Sprintf("us-%d", i)), crdt.Increment("n", 1))
	}
	fromUS := mustReplicationEvents(t, us.j, "eu")

	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	for w := range writers {
		wg.Go(func() {
			for i := range writes {
				_, err := eu.r.Apply(ctx, cartType, id, crdt.AddElement("items", fmt.Sprintf("eu-%d-%d", w, i)), crdt.Increment("n", 1))
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for _, e := range fromUS {
			if _, err := eu.j.Append(ctx, e); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	s := eu.state(t, id)
	if n, want := s.Counter("n"), int64(writers*writes+40); n != want {
		t.Fatalf("n = %d, want %d", n, want)
	}
	if got, want := len(s.Elements("items")), writers*writes+40; got != want {
		t.Fatalf("%d items, want %d", got, want)
	}
	// eu's origin seqNrs are 1..n, each once, equal to the vv entry.
	var seqs []uint64
	for _, e := range entityEvents(t, eu.j, id) {
		if e.Origin == "eu" {
			if e.VersionVector["eu"] != e.OriginSeqNr {
				t.Fatalf("origin seqNr %d with vv %v", e.OriginSeqNr, e.VersionVector)
			}
			seqs = append(seqs, e.OriginSeqNr)
		}
	}
	for i, seq := range seqs {
		if seq != uint64(i+1) {
			t.Fatalf("eu's origin seqNrs are not 1..%d: %v", len(seqs), seqs)
		}
	}
	if len(seqs) != 2*writers*writes {
		t.Fatalf("%d eu events, want %d", len(seqs), 2*writers*writes)
	}
	checkEqual(t, "cached and folded", s, func() *crdt.State {
		f, err := eu.restarted(t).State(ctx, cartType, id)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}())
}

// TestReplicatedCacheBound: with room for one entity, alternating entities
// fold from the journal and still see every event, including replicated ones
// appended behind the API's back.
func TestReplicatedCacheBound(t *testing.T) {
	eu := newCRDTRegion(t, "eu", topology.ReplicatedOptions{CachedEntities: 1})
	us := newCRDTRegion(t, "us", topology.ReplicatedOptions{})
	for i := range 3 {
		for _, id := range []string{"a", "b"} {
			eu.apply(t, id, crdt.Increment("n", int64(i+1)))
			us.apply(t, id, crdt.Increment("n", 10))
		}
	}
	appendAll(t, eu.j, mustReplicationEvents(t, us.j, "eu"))
	for _, id := range []string{"a", "b", "a"} {
		if n := eu.state(t, id).Counter("n"); n != 36 {
			t.Fatalf("%s: n = %d, want 1+2+3 + 3×10", id, n)
		}
	}
}

func TestReplicatedRefuses(t *testing.T) {
	ctx := context.Background()
	t.Run("options", func(t *testing.T) {
		eu := newCRDTRegion(t, "eu", topology.ReplicatedOptions{})
		for _, tc := range []struct {
			opts topology.ReplicatedOptions
			msg  string
		}{
			{topology.ReplicatedOptions{}, "Region is empty"},
			{topology.ReplicatedOptions{Region: "eu", CachedEntities: -1}, "CachedEntities is -1"},
			{topology.ReplicatedOptions{Region: "eu", MaxAttempts: -2}, "MaxAttempts is -2"},
		} {
			if _, err := topology.NewReplicated(eu.j, tc.opts); err == nil || !strings.Contains(err.Error(), tc.msg) ||
				!errors.Is(err, topology.ErrInvalidOptions) || !strings.HasPrefix(err.Error(), "topology: invalid options: ") {
				t.Errorf("NewReplicated(%+v) = %v, want ErrInvalidOptions naming %q", tc.opts, err, tc.msg)
			}
		}
		// Every nonsensical field is reported.
		err := topology.ReplicatedOptions{CachedEntities: -1, MaxAttempts: -2}.Validate()
		for _, msg := range []string{"Region is empty", "CachedEntities is -1", "MaxAttempts is -2"} {
			if err == nil || !strings.Contains(err.Error(), msg) {
				t.Errorf("Validate = %v, want it to name %q", err, msg)
			}
		}
		if _, err := topology.NewReplicated(nil, topology.ReplicatedOptions{Region: "eu"}); err == nil {
			t.Error("NewReplicated(nil journal) succeeded")
		}
	})
	t.Run("bad input appends nothing", func(t *testing.T) {
		eu := newCRDTRegion(t, "eu", topology.ReplicatedOptions{})
		eu.apply(t, "c", crdt.Increment("n", 1))
		before := eu.j.LastOffset()
		decideErr := errors.New("cart is checked out")
		for _, tc := range []struct {
			name string
			call func() error
			is   error
			msg  string
		}{
			{"empty entity id", func() error { _, err := eu.r.Apply(ctx, cartType, "", crdt.Increment("n", 1)); return err }, nil, "both are required"},
			{"empty entity type", func() error { _, err := eu.r.State(ctx, "", "c"); return err }, nil, "both are required"},
			{"invalid change after a valid one", func() error {
				_, err := eu.r.Apply(ctx, cartType, "c", crdt.Increment("n", 1), crdt.AddElement("", "x"))
				return err
			}, crdt.ErrInvalidChange, "change 1"},
			{"decide fails", func() error {
				_, err := eu.r.Update(ctx, cartType, "c", func(*crdt.State) ([]crdt.Change, error) { return nil, decideErr })
				return err
			}, decideErr, "checked out"},
			{"no decide", func() error { _, err := eu.r.Update(ctx, cartType, "c", nil); return err }, nil, "needs a decide"},
			{"cancelled", func() error {
				cctx, cancel := context.WithCancel(ctx)
				cancel()
				_, err := eu.r.Apply(cctx, cartType, "c", crdt.Increment("n", 1))
				return err
			}, context.Canceled, "canceled"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := tc.call()
				if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("error %v, want %v saying %q", err, tc.is, tc.msg)
				}
				if eu.j.LastOffset() != before {
					t.Fatal("something was appended")
				}
			})
		}
		if n := eu.state(t, "c").Counter("n"); n != 1 {
			t.Fatalf("n = %d after refused changes, want 1", n)
		}
	})
	t.Run("an event that is not an op", func(t *testing.T) {
		eu := newCRDTRegion(t, "eu", topology.ReplicatedOptions{})
		eu.apply(t, "c", crdt.Increment("n", 1))
		if _, err := eu.j.Append(ctx, &streamdv1.Event{EntityType: cartType, EntityId: "c", EventType: "ItemAdded", Payload: []byte("sku-1")}); err != nil {
			t.Fatal(err)
		}
		if _, err := eu.r.State(ctx, cartType, "c"); !errors.Is(err, crdt.ErrInvalidOp) || !strings.Contains(err.Error(), "seqNr 2") {
			t.Fatalf("State = %v, want crdt.ErrInvalidOp naming seqNr 2", err)
		}
	})
	t.Run("history cut by retention", func(t *testing.T) {
		var now atomic.Int64
		now.Store(time.Hour.Nanoseconds())
		j, err := journal.Open(t.TempDir(), journal.Options{Region: "eu", Durability: journal.DurabilityAsync,
			RetentionMaxAge: time.Minute, RetentionInterval: time.Hour, Now: func() time.Time { return time.Unix(0, now.Load()) }})
		if err != nil {
			t.Fatal(err)
		}
		defer j.Close()
		r, err := topology.NewReplicated(j, topology.ReplicatedOptions{Region: "eu"})
		if err != nil {
			t.Fatal(err)
		}
		apply := func(id string) error { _, err := r.Apply(ctx, cartType, id, crdt.Increment("n", 1)); return err }
		// "cut" loses its first event to retention, "gone" its only one, and
		// "lost" the two us wrote.
		if err := errors.Join(apply("cut"), apply("gone")); err != nil {
			t.Fatal(err)
		}
		fromUS := []*streamdv1.Event{
			{EntityType: cartType, EntityId: "lost", EventType: crdt.EventCounterUpdated, Payload: []byte(`{"field":"n","region":"us","inc":1}`), Origin: "us", OriginSeqNr: 1},
			{EntityType: cartType, EntityId: "lost", EventType: crdt.EventCounterUpdated, Payload: []byte(`{"field":"n","region":"us","inc":2}`), Origin: "us", OriginSeqNr: 2},
		}
		if _, err := j.Append(ctx, fromUS...); err != nil {
			t.Fatal(err)
		}
		now.Add(time.Hour.Nanoseconds())
		if err := apply("cut"); err != nil {
			t.Fatal(err)
		}
		if n, err := j.EnforceRetention(); err != nil || n != 4 {
			t.Fatalf("retention deleted %d events (%v), want the 4 older ones", n, err)
		}
		fresh, err := topology.NewReplicated(j, topology.ReplicatedOptions{Region: "eu"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fresh.State(ctx, cartType, "cut"); !errors.Is(err, topology.ErrIncompleteHistory) {
			t.Fatalf("State over a cut history = %v, want ErrIncompleteHistory", err)
		}
		// With nothing left to fold, the state looks empty; a write is refused,
		// since the journal holds eu's origin seqNr 1 of the entity already.
		if _, err := fresh.Apply(ctx, cartType, "gone", crdt.Increment("n", 1)); err == nil || !strings.Contains(err.Error(), "retention") {
			t.Fatalf("Apply over a deleted history = %v, want a refusal that names retention", err)
		}
		// "lost" looks empty too; a write expects seqNr 1, is told 3 is next,
		// and waits for seqNrs 1 and 2 to become readable: over MaxAttempts
		// commits (of another entity here) it gives up.
		bounded, err := topology.NewReplicated(j, topology.ReplicatedOptions{Region: "eu", MaxAttempts: 3})
		if err != nil {
			t.Fatal(err)
		}
		stop, busy := make(chan struct{}), make(chan error, 1)
		go func() {
			for {
				select {
				case <-stop:
					busy <- nil
					return
				default:
				}
				if _, err := j.Append(ctx, &streamdv1.Event{EntityType: "other", EntityId: "x"}); err != nil {
					busy <- err
					return
				}
			}
		}()
		_, err = bounded.Apply(ctx, cartType, "lost", crdt.Increment("n", 1))
		close(stop)
		if err := <-busy; err != nil {
			t.Fatal(err)
		}
		if !errors.Is(err, topology.ErrIncompleteHistory) || !strings.Contains(err.Error(), "seqNr 2") {
			t.Fatalf("Apply over deleted replicated events = %v, want ErrIncompleteHistory naming seqNr 2", err)
		}
	})
}

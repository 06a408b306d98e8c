package main

import (
	"cmp"
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology/crdt"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// runWorld runs the example with o in t.TempDir(), its output in the test's.
func runWorld(t *testing.T, o options) (*world, *result) {
	t.Helper()
	o.dir = t.TempDir()
	o.log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	w, err := openWorld(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.close(); err != nil {
			t.Error(err)
		}
	})
	res, err := w.run(context.Background(), t.Output())
	if err != nil {
		t.Fatal(err)
	}
	if err := res.print(t.Output(), w); err != nil {
		t.Error(err)
	}
	return w, res
}

// Users edit the same carts in every region while one region is cut off
// for a while. The partition holds the regions apart (the carts differ at
// its end); once the link is back every region holds every acknowledged
// edit exactly once, the carts are Equal everywhere, and each field is what
// the ops say, recomputed here from the journal without the crdt package:
// an item is in the cart iff some add of it has a tag that no remove named
// (so every add that no remove observed is present, and a remove concurrent
// with an add keeps the item), the address is the write with the greatest
// (timestamp, region, value), a quantity is the sum over regions of their
// last totals.
func TestPartitionedEditsConverge(t *testing.T) {
	for _, tc := range []struct {
		name    string
		regions []string
		isolate string
	}{
		{"two regions", []string{"eu", "us"}, "eu"},
		// us is cut off; eu and ap go on replicating to each other.
		{"three regions", []string{"eu", "us", "ap"}, "us"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := options{
				regions: tc.regions, isolate: tc.isolate,
				carts: 3, users: 2, rate: 40, seed: 7,
				duration: 2 * time.Second, cutAfter: 300 * time.Millisecond, cutFor: time.Second,
				convergeTimeout: 20 * time.Second,
			}
			w, res := runWorld(t, o)
			checkPartition(t, w, res)
			acked := w.ledger.ackedEvents()
			for _, cart := range res.carts {
				var want map[dot]*streamdv1.Event
				for i, r := range w.regions {
					evs, err := r.events(cart)
					if err != nil {
						t.Fatal(err)
					}
					got := checkAcknowledged(t, r.name, cart, evs, acked)
					if i == 0 {
						want = got
					}
					for d, e := range got {
						if want[d].EventType != e.EventType || string(want[d].Payload) != string(e.Payload) {
							t.Fatalf("%s: %s holds %v as %s %s, %s as %s %s", cart, r.name, d, e.EventType, e.Payload, w.regions[0].name, want[d].EventType, want[d].Payload)
						}
					}
					s := res.final[cart][i]
					if !s.Equal(res.final[cart][0]) {
						t.Errorf("%s: %s and %s differ:\n%v\n%v", cart, r.name, w.regions[0].name, s, res.final[cart][0])
					}
					checkFields(t, r.name, cart, s, evs)
				}
			}
			checkScriptedConflict(t, w, res)
		})
	}
}

// checkPartition checks that the partition held the regions apart: at its
// end the isolated region had not seen the other's gift card, nor the other
// its remove, and some of the users' carts differed too.
func checkPartition(t *testing.T, w *world, res *result) {
	t.Helper()
	if res.partitioned == nil || res.conflict == nil {
		t.Fatal("no partition, or no scripted conflict, in the run")
	}
	c := res.conflict
	states := res.partitioned[conflictCart]
	isolated, other := states[slices.Index(w.regions, c.isolated)], states[slices.Index(w.regions, c.other)]
	if isolated.Contains(itemsField, conflictSKU) {
		t.Errorf("%s at the end of the partition: %s still shows %s: %v", conflictCart, c.isolated.name, conflictSKU, isolated)
	}
	if want := c.initialGiftCards + c.addedByOther; !other.Contains(itemsField, conflictSKU) || other.Counter(quantityField(conflictSKU)) != want {
		t.Errorf("%s at the end of the partition: %s shows %s, want %s×%d", conflictCart, c.other.name, items(other), conflictSKU, want)
	}
	if n := res.partitioned.differing(); n < 2 {
		t.Errorf("at the end of the partition %d carts differed: the users' edits did not diverge", n)
	}
}

// dot is an op's (origin, origin seqNr): its identity, and an add's tag.
type dot struct {
	origin string
	seq    uint64
}

// checkAcknowledged checks that a region's journal holds, of the cart, the
// origin seqNrs 1..n of each region that acknowledged n events of it, each
// once, and nothing else; it returns the events by dot.
func checkAcknowledged(t *testing.T, region, cart string, evs []*streamdv1.Event, acked map[string]map[string]uint64) map[dot]*streamdv1.Event {
	t.Helper()
	held := map[dot]*streamdv1.Event{}
	for _, e := range evs {
		d := dot{e.Origin, e.OriginSeqNr}
		if held[d] != nil {
			t.Fatalf("%s: %s holds %v twice", cart, region, d)
		}
		held[d] = e
	}
	total := 0
	for origin, carts := range acked {
		for seq := uint64(1); seq <= carts[cart]; seq++ {
			if held[dot{origin, seq}] == nil {
				t.Fatalf("%s: %s lacks the acknowledged event %d of %s (of %d)", cart, region, seq, origin, carts[cart])
			}
		}
		total += int(carts[cart])
	}
	if len(held) != total {
		t.Fatalf("%s: %s holds %d events, %d were acknowledged", cart, region, len(held), total)
	}
	return held
}

// checkFields recomputes the cart's fields from its ops and compares them
// with the folded state.
func checkFields(t *testing.T, region, cart string, s *crdt.State, evs []*streamdv1.Event) {
	t.Helper()
	var adds []crdt.ElementAdd
	removed := map[crdt.Dot]bool{}
	var address *crdt.RegisterSet
	totals := map[string]map[string]crdt.PN{} // counter → region → its last totals
	for _, e := range evs {
		op, err := crdt.Decode(e.EventType, e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case op.Add != nil:
			if op.Add.Tag != (crdt.Dot{Region: e.Origin, Counter: e.OriginSeqNr}) {
				t.Fatalf("%s: add %v is tagged %v", cart, dot{e.Origin, e.OriginSeqNr}, op.Add.Tag)
			}
			adds = append(adds, *op.Add)
		case op.Remove != nil:
			for _, tag := range op.Remove.Tags {
				removed[tag] = true
			}
		case op.Register != nil:
			if address == nil || cmp.Or(cmp.Compare(op.Register.Timestamp, address.Timestamp),
				strings.Compare(op.Register.Region, address.Region), strings.Compare(op.Register.Value, address.Value)) > 0 {
				address = op.Register
			}
		case op.Counter != nil:
			if totals[op.Field] == nil {
				totals[op.Field] = map[string]crdt.PN{}
			}
			pn := totals[op.Field][op.Counter.Region]
			totals[op.Field][op.Counter.Region] = crdt.PN{Inc: max(pn.Inc, op.Counter.Inc), Dec: max(pn.Dec, op.Counter.Dec)}
		}
	}
	var want []string
	for _, a := range adds {
		if !removed[a.Tag] && !slices.Contains(want, a.Element) {
			want = append(want, a.Element)
		}
	}
	slices.Sort(want)
	if got := s.Elements(itemsField); !slices.Equal(got, want) {
		t.Errorf("%s in %s: items %v, want those with an add no remove named: %v", cart, region, got, want)
	}
	if address != nil {
		if got, _ := s.Register(addressField); got != address.Value {
			t.Errorf("%s in %s: address %q, want the greatest write's %q", cart, region, got, address.Value)
		}
	}
	for field, byRegion := range totals {
		var want int64
		for _, pn := range byRegion {
			want += int64(pn.Inc) - int64(pn.Dec)
		}
		if got := s.Counter(field); got != want {
			t.Errorf("%s in %s: %s is %d, want %d", cart, region, field, got, want)
		}
	}
}

// checkScriptedConflict checks the outcome of the conflicting edits of the
// scripted cart: the isolated region's remove did not name the other's add
// (they were concurrent), so the gift card stays with the quantity the other
// added; the address is the later of the two concurrent writes.
func checkScriptedConflict(t *testing.T, w *world, res *result) {
	t.Helper()
	c := res.conflict
	evs, err := c.isolated.events(conflictCart)
	if err != nil {
		t.Fatal(err)
	}
	var otherAdds []crdt.Dot
	var removes []crdt.ElementRemove
	for _, e := range evs {
		op, err := crdt.Decode(e.EventType, e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case op.Add != nil && e.Origin == c.other.name:
			otherAdds = append(otherAdds, op.Add.Tag)
		case op.Remove != nil && e.Origin == c.isolated.name:
			removes = append(removes, *op.Remove)
		}
	}
	if len(otherAdds) != 1 || len(removes) != 1 {
		t.Fatalf("%s holds %d adds by %s and %d removes by %s, want 1 and 1", conflictCart, len(otherAdds), c.other.name, len(removes), c.isolated.name)
	}
	if slices.Contains(removes[0].Tags, otherAdds[0]) {
		t.Fatalf("%s's remove names %s's add %v: they were not concurrent", c.isolated.name, c.other.name, otherAdds[0])
	}
	writes, err := lastAddressWrites(c.isolated)
	if err != nil {
		t.Fatal(err)
	}
	wi, wo := writes[c.isolated.name], writes[c.other.name]
	if wi.Value != c.addressIsolated || wo.Value != c.addressOther {
		t.Fatalf("the last address writes are %q by %s and %q by %s, want %q and %q", wi.Value, c.isolated.name, wo.Value, c.other.name, c.addressIsolated, c.addressOther)
	}
	later := wi
	if wo.Timestamp > wi.Timestamp || (wo.Timestamp == wi.Timestamp && wo.Region > wi.Region) {
		later = wo
	}
	for i, s := range res.final[conflictCart] {
		name := w.regions[i].name
		if got := s.Counter(quantityField(conflictSKU)); !s.Contains(itemsField, conflictSKU) || got != c.addedByOther {
			t.Errorf("%s in %s: %s, want %s×%d (the add concurrent with the remove wins)", conflictCart, name, items(s), conflictSKU, c.addedByOther)
		}
		if got, _ := s.Register(addressField); got != later.Value {
			t.Errorf("%s in %s: address %q, want the later write's %q", conflictCart, name, got, later.Value)
		}
	}
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		bad  string // in the error; "" for none
	}{
		{nil, ""},
		{[]string{"-regions", "eu,us,ap", "-isolate", "ap", "-durability", "async"}, ""},
		{[]string{"-regions", "eu"}, "want at least 2"},
		{[]string{"-regions", "eu,eu"}, "unique"},
		{[]string{"-regions", "eu,"}, "unique"},
		{[]string{"-isolate", "ap"}, `isolate "ap"`},
		{[]string{"-duration", "3s", "-cut-after", "2s", "-cut-for", "2s"}, "ends after the edits"},
		{[]string{"-carts", "0"}, "carts is 0"},
		{[]string{"-rate", "0"}, "rate is 0"},
		{[]string{"-durability", "maybe"}, "-durability"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		_, err := parseFlags(tc.args, io.Discard)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%q: %v", tc.args, err)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%q: error %v, want one saying %q", tc.args, err, tc.bad)
		}
	}
}

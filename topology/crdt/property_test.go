package crdt

import (
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// The property tests simulate 2–3 regions that write one entity concurrently,
// each from what it has received so far, while ops reach the other regions
// late, out of order and more than once.

var (
	registerNames = []string{"r1", "r2"}
	counterNames  = []string{"c1", "c2"}
	setNames      = []string{"s1", "s2"}
	elements      = []string{"a", "b", "c"}
	values        = []string{"x", "y", "z"}
)

var changeGen = rapid.Custom(func(t *rapid.T) Change {
	switch rapid.IntRange(0, 4).Draw(t, "kind") {
	case 0:
		return SetRegister(rapid.SampledFrom(registerNames).Draw(t, "register"), rapid.SampledFrom(values).Draw(t, "value"))
	case 1:
		return Increment(rapid.SampledFrom(counterNames).Draw(t, "counter"), rapid.Int64Range(-3, 3).Draw(t, "delta"))
	case 2:
		return ResetCounter(rapid.SampledFrom(counterNames).Draw(t, "counter"))
	case 3:
		return AddElement(rapid.SampledFrom(setNames).Draw(t, "set"), rapid.SampledFrom(elements).Draw(t, "element"))
	default:
		return RemoveElement(rapid.SampledFrom(setNames).Draw(t, "set"), rapid.SampledFrom(elements).Draw(t, "element"))
	}
})

type region struct {
	name     string
	state    State
	dots     uint64
	clock    int64
	received map[int]bool // indices of the ops applied here, its own included
}

// history is what a simulation produced: the regions and every op made, in
// the order made, and what the changes should add up to.
type history struct {
	regions []*region
	ops     []Op
	// counterSum is, per counter, the sum of the increments and of the
	// negated values the resetting region observed.
	counterSum map[string]int64
	// observed holds, for each remove (by op index), the tags of the adds of
	// its element that the removing region had received when it removed.
	observed map[int][]Dot
}

// wire is what a remote region receives: the op encoded and decoded again.
func wire(t *rapid.T, op Op) Op {
	et, payload, err := Encode(op)
	if err != nil {
		t.Fatalf("Encode(%+v): %v", op, err)
	}
	got, err := Decode(et, payload)
	if err != nil {
		t.Fatalf("Decode(%s, %s): %v", et, payload, err)
	}
	return got
}

func mustApply(t *rapid.T, s *State, op Op) {
	if err := s.Apply(op); err != nil {
		t.Fatalf("Apply(%+v): %v", op, err)
	}
}

// simulate runs random steps: a region makes a change against the state it
// has, or receives any op made so far (again, or before earlier ones).
// Regions' clocks are close, skewed, and sometimes go back, so equal
// timestamps across regions are common.
func simulate(t *rapid.T) *history {
	h := &history{counterSum: make(map[string]int64), observed: make(map[int][]Dot)}
	n := rapid.IntRange(2, 3).Draw(t, "regions")
	base := rapid.Int64Range(-5, 5).Draw(t, "clock")
	for _, name := range []string{"ap", "eu", "us"}[:n] {
		h.regions = append(h.regions, &region{name: name, clock: base, received: map[int]bool{}})
	}
	steps := rapid.IntRange(1, 80).Draw(t, "steps")
	for range steps {
		r := rapid.SampledFrom(h.regions).Draw(t, "region")
		if len(h.ops) > 0 && rapid.Bool().Draw(t, "receive") {
			i := rapid.IntRange(0, len(h.ops)-1).Draw(t, "op")
			mustApply(t, &r.state, wire(t, h.ops[i]))
			r.received[i] = true
			continue
		}
		c := changeGen.Draw(t, "change")
		r.clock += rapid.Int64Range(-1, 2).Draw(t, "tick")
		r.dots++
		before := r.state.Counter(c.field)
		op, err := r.state.Prepare(c, Dot{r.name, r.dots}, r.clock)
		if err != nil {
			t.Fatalf("Prepare(%v): %v", c, err)
		}
		if c.kind == changeRemoveElement {
			for i, add := range h.ops {
				if r.received[i] && add.Field == c.field && add.Add != nil && add.Add.Element == c.value {
					h.observed[len(h.ops)] = append(h.observed[len(h.ops)], add.Add.Tag)
				}
			}
		}
		mustApply(t, &r.state, op)
		r.received[len(h.ops)] = true
		h.ops = append(h.ops, op)
		checkLocalEffect(t, r, c, before)
		switch c.kind {
		case changeIncrement:
			h.counterSum[c.field] += c.delta
		case changeResetCounter:
			h.counterSum[c.field] -= before
		}
	}
	return h
}

// checkLocalEffect: the writing region sees its own change at once.
func checkLocalEffect(t *rapid.T, r *region, c Change, counterBefore int64) {
	s := &r.state
	switch c.kind {
	case changeSetRegister:
		if v, _ := s.Register(c.field); v != c.value {
			t.Fatalf("%s wrote %v but reads %q", r.name, c, v)
		}
	case changeIncrement:
		if got := s.Counter(c.field); got != counterBefore+c.delta {
			t.Fatalf("%s: %v took %s from %d to %d", r.name, c, c.field, counterBefore, got)
		}
	case changeResetCounter:
		if got := s.Counter(c.field); got != 0 {
			t.Fatalf("%s: %v left %d", r.name, c, got)
		}
	case changeAddElement:
		if !s.Contains(c.field, c.value) {
			t.Fatalf("%s: %v, yet the element is absent", r.name, c)
		}
	case changeRemoveElement:
		if s.Contains(c.field, c.value) {
			t.Fatalf("%s: %v, yet the element is present", r.name, c)
		}
	}
}

// deliverAll gives a region every op, in an order of its own, some twice.
func deliverAll(t *rapid.T, s *State, ops []Op) {
	all := make([]int, len(ops))
	for i := range all {
		all[i] = i
	}
	if len(ops) > 0 {
		all = append(all, rapid.SliceOfN(rapid.IntRange(0, len(ops)-1), 0, len(ops)).Draw(t, "duplicates")...)
	}
	for _, i := range rapid.Permutation(all).Draw(t, "delivery") {
		mustApply(t, s, wire(t, ops[i]))
	}
}

func TestPropertyRegionsConverge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		h := simulate(t)
		for _, r := range h.regions {
			deliverAll(t, &r.state, h.ops)
		}
		var reference State
		for _, op := range h.ops {
			mustApply(t, &reference, op)
		}
		for _, r := range h.regions {
			if !r.state.Equal(&reference) {
				t.Fatalf("%s did not converge:\n got %v\nwant %v", r.name, &r.state, &reference)
			}
		}
		checkSemantics(t, h, &reference)
	})
}

// checkSemantics compares the converged state with what the ops mean,
// computed from the ops alone.
func checkSemantics(t *rapid.T, h *history, s *State) {
	for _, name := range counterNames {
		if got, want := s.Counter(name), h.counterSum[name]; got != want {
			t.Fatalf("counter %s = %d, want the sum of the changes %d", name, got, want)
		}
	}
	for _, name := range registerNames {
		var win *RegisterSet
		for _, op := range h.ops {
			if op.Field == name && op.Register != nil && (win == nil || compareWrites(*op.Register, *win) > 0) {
				win = op.Register
			}
		}
		v, ok := s.Register(name)
		if (win != nil) != ok || (win != nil && v != win.Value) {
			t.Fatalf("register %s = %q (%v), want the greatest (ts, region, value) write %+v", name, v, ok, win)
		}
	}
	for _, name := range setNames {
		// Add wins: present when an add of the element was not observed by
		// any remove of it (by what the removing region had received, not
		// by what the remove op says).
		var want []string
		for _, e := range elements {
			removed := map[Dot]bool{}
			for i, op := range h.ops {
				if op.Field == name && op.Remove != nil && op.Remove.Element == e {
					for _, tag := range h.observed[i] {
						removed[tag] = true
					}
				}
			}
			for _, op := range h.ops {
				if op.Field == name && op.Add != nil && op.Add.Element == e && !removed[op.Add.Tag] {
					want = append(want, e)
					break
				}
			}
		}
		if got := s.Elements(name); !slices.Equal(got, want) {
			t.Fatalf("set %s = %q, want the elements with an add no remove observed %q", name, got, want)
		}
	}
}

func TestPropertyMergeLaws(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		h := simulate(t)
		// Three replicas, each having received an arbitrary subset of the ops
		// in an arbitrary order.
		var parts [3]State
		union := make([]bool, len(h.ops))
		for i := range parts {
			for _, k := range rapid.SliceOfDistinct(rapid.IntRange(0, max(len(h.ops)-1, 0)), rapid.ID).Draw(t, "received") {
				if k < len(h.ops) {
					mustApply(t, &parts[i], wire(t, h.ops[k]))
					union[k] = true
				}
			}
		}
		a, b, c := &parts[0], &parts[1], &parts[2]
		merge := func(x, y *State) *State { m := x.Clone(); m.Merge(y); return m }

		if ab, ba := merge(a, b), merge(b, a); !ab.Equal(ba) {
			t.Fatalf("not commutative:\n%v\n%v", ab, ba)
		}
		if l, r := merge(merge(a, b), c), merge(a, merge(b, c)); !l.Equal(r) {
			t.Fatalf("not associative:\n%v\n%v", l, r)
		}
		if aa := merge(a, a); !aa.Equal(a) {
			t.Fatalf("not idempotent:\n%v\n%v", aa, a)
		}
		var want State
		for k, in := range union {
			if in {
				mustApply(t, &want, h.ops[k])
			}
		}
		if all := merge(merge(a, b), c); !all.Equal(&want) {
			t.Fatalf("merged replicas differ from the union of their ops:\n got %v\nwant %v", all, &want)
		}
	})
}

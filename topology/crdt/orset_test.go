package crdt

import (
	"slices"
	"testing"
)

func TestORSetAddWins(t *testing.T) {
	eu1, eu2, us1 := Dot{"eu", 1}, Dot{"eu", 2}, Dot{"us", 1}
	for _, tc := range []struct {
		name string
		adds []ElementAdd
		rms  []ElementRemove
		want []string
	}{
		{"added", []ElementAdd{{"x", eu1}}, nil, []string{"x"}},
		{"removed after being observed", []ElementAdd{{"x", eu1}}, []ElementRemove{{"x", []Dot{eu1}}}, nil},
		{"a concurrent add (unobserved tag) wins over a remove",
			[]ElementAdd{{"x", eu1}, {"x", us1}}, []ElementRemove{{"x", []Dot{eu1}}}, []string{"x"}},
		{"a remove that observed both adds removes the element",
			[]ElementAdd{{"x", eu1}, {"x", us1}}, []ElementRemove{{"x", []Dot{eu1, us1}}}, nil},
		{"re-added after a remove, with a fresh tag",
			[]ElementAdd{{"x", eu1}, {"x", eu2}}, []ElementRemove{{"x", []Dot{eu1}}}, []string{"x"}},
		{"a remove of nothing observed removes nothing", []ElementAdd{{"x", us1}}, []ElementRemove{{"x", nil}}, []string{"x"}},
		{"a remove names tags of its own element only",
			[]ElementAdd{{"x", eu1}, {"y", eu1}}, []ElementRemove{{"x", []Dot{eu1}}}, []string{"y"}},
		{"elements are independent and sorted",
			[]ElementAdd{{"b", eu1}, {"a", eu2}, {"c", us1}}, []ElementRemove{{"c", []Dot{us1}}}, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := len(tc.adds) + len(tc.rms)
			forEachOrder(t, n, func(order []int) {
				var s ORSet
				for _, i := range order {
					if i < len(tc.adds) {
						s.ApplyAdd(tc.adds[i])
					} else {
						s.ApplyRemove(tc.rms[i-len(tc.adds)])
					}
				}
				if got := s.Elements(); !slices.Equal(got, tc.want) {
					t.Fatalf("order %v: elements %q, want %q", order, got, tc.want)
				}
				if s.Len() != len(tc.want) {
					t.Fatalf("order %v: Len %d, want %d", order, s.Len(), len(tc.want))
				}
				for _, e := range tc.want {
					if !s.Contains(e) {
						t.Fatalf("order %v: Contains(%q) is false", order, e)
					}
				}
			})
		})
	}
}

func TestORSetRemoveOpNamesObservedTags(t *testing.T) {
	var s ORSet
	s.ApplyAdd(s.AddOp("x", Dot{"us", 1}))
	s.ApplyAdd(s.AddOp("x", Dot{"eu", 4}))
	s.ApplyAdd(s.AddOp("y", Dot{"eu", 5}))
	rm := s.RemoveOp("x")
	if want := []Dot{{"eu", 4}, {"us", 1}}; !slices.Equal(rm.Tags, want) || rm.Element != "x" {
		t.Fatalf("RemoveOp(x) = %+v, want the tags %v of x, sorted", rm, want)
	}
	if !s.Contains("x") {
		t.Fatal("RemoveOp changed the set")
	}
	s.ApplyRemove(rm)
	if got := s.Elements(); !slices.Equal(got, []string{"y"}) {
		t.Fatalf("after removing x: %q", got)
	}
	if rm := s.RemoveOp("absent"); len(rm.Tags) != 0 {
		t.Fatalf("RemoveOp of an absent element names %v", rm.Tags)
	}
}

func TestORSetMerge(t *testing.T) {
	// eu saw x added by us and removed it; us meanwhile added x again and y.
	var eu, us ORSet
	eu.ApplyAdd(ElementAdd{"x", Dot{"us", 1}})
	us.ApplyAdd(ElementAdd{"x", Dot{"us", 1}})
	eu.ApplyRemove(eu.RemoveOp("x"))
	us.ApplyAdd(ElementAdd{"x", Dot{"us", 2}})
	us.ApplyAdd(ElementAdd{"y", Dot{"us", 3}})

	a, b := eu.Clone(), us.Clone()
	a.Merge(&us)
	b.Merge(&eu)
	if !a.Equal(b) {
		t.Fatalf("merge is not commutative: %+v vs %+v", a, b)
	}
	if got := a.Elements(); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("merged elements %q, want x (the unobserved add wins) and y", got)
	}
	a.Merge(a.Clone())
	if !a.Equal(b) {
		t.Fatal("merging with itself changed the set")
	}
	// A replica that only ever saw the remove keeps x's first tag removed.
	var late ORSet
	late.ApplyRemove(ElementRemove{"x", []Dot{{"us", 1}}})
	late.Merge(&ORSet{live: map[string]tagSet{"x": {{"us", 1}: {}}}})
	if late.Contains("x") {
		t.Fatal("an add merged after the remove that observed it came back")
	}
	if eu.Contains("x") || !us.Contains("x") {
		t.Fatal("Clone shares state with the original")
	}
}

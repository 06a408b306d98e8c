package crdt

import (
	"math"
	"testing"
)

func TestLWWRegisterWinner(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ops   []RegisterSet
		value string
		ts    int64
		from  string
	}{
		{"later timestamp wins", []RegisterSet{{"old", 1, "us"}, {"new", 2, "eu"}}, "new", 2, "eu"},
		{"equal timestamps: greater region wins", []RegisterSet{{"from-eu", 5, "eu"}, {"from-us", 5, "us"}}, "from-us", 5, "us"},
		{"equal timestamp and region: greater value wins", []RegisterSet{{"a", 5, "eu"}, {"b", 5, "eu"}}, "b", 5, "eu"},
		{"negative timestamps order too", []RegisterSet{{"x", -3, "us"}, {"y", -2, "ap"}}, "y", -2, "ap"},
		{"one write", []RegisterSet{{"only", 7, "ap"}}, "only", 7, "ap"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachOrder(t, len(tc.ops), func(order []int) {
				var r LWWRegister
				for _, i := range order {
					r.Apply(tc.ops[i])
				}
				v, ok := r.Value()
				if !ok || v != tc.value || r.Timestamp() != tc.ts || r.Region() != tc.from {
					t.Fatalf("order %v: got %q (set %v, ts %d, %s), want %q (ts %d, %s)",
						order, v, ok, r.Timestamp(), r.Region(), tc.value, tc.ts, tc.from)
				}
			})
		})
	}
}

func TestLWWRegisterSetOp(t *testing.T) {
	for _, tc := range []struct {
		name    string
		current []RegisterSet
		now     int64
		wantTS  int64
		wins    bool
	}{
		{"unset register takes the clock", nil, 10, 10, true},
		{"clock ahead of the winner", []RegisterSet{{"a", 5, "us"}}, 10, 10, true},
		{"clock behind the winner: one above it", []RegisterSet{{"a", 50, "us"}}, 10, 51, true},
		{"clock equal to the winner: one above it", []RegisterSet{{"a", 10, "us"}}, 10, 11, true},
		// Nothing is above it: the tie-break decides (us > eu).
		{"no overflow at the largest timestamp", []RegisterSet{{"a", math.MaxInt64, "us"}}, 0, math.MaxInt64, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r LWWRegister
			for _, op := range tc.current {
				r.Apply(op)
			}
			before := r
			op := r.SetOp("mine", tc.now, "eu")
			if r != before {
				t.Fatal("SetOp changed the register")
			}
			if op != (RegisterSet{Value: "mine", Timestamp: tc.wantTS, Region: "eu"}) {
				t.Fatalf("SetOp = %+v, want ts %d from eu", op, tc.wantTS)
			}
			r.Apply(op)
			if v, _ := r.Value(); (v == "mine") != tc.wins {
				t.Fatalf("after applying its own op the register holds %q; want the op to win: %v", v, tc.wins)
			}
		})
	}
}

func TestLWWRegisterMerge(t *testing.T) {
	var a, b, unset LWWRegister
	a.Apply(RegisterSet{"a", 3, "eu"})
	b.Apply(RegisterSet{"b", 3, "us"})
	ab, ba := a, b
	ab.Merge(&b)
	ba.Merge(&a)
	if !ab.Equal(&ba) {
		t.Fatalf("merge is not commutative: %+v vs %+v", ab, ba)
	}
	if v, _ := ab.Value(); v != "b" {
		t.Fatalf("merged value %q, want b (us > eu at equal timestamps)", v)
	}
	ab.Merge(&unset)
	if v, _ := ab.Value(); v != "b" {
		t.Fatalf("merging an unset register changed the value to %q", v)
	}
	unset.Merge(&a)
	if !unset.Equal(&a) {
		t.Fatalf("an unset register merged with a holds %+v", unset)
	}
}

// forEachOrder calls f with every permutation of 0..n-1, and with every
// permutation followed by a second pass in reverse (each op delivered twice).
func forEachOrder(t *testing.T, n int, f func(order []int)) {
	t.Helper()
	var perm func(prefix []int, rest []int)
	perm = func(prefix, rest []int) {
		if len(rest) == 0 {
			f(prefix)
			twice := append([]int(nil), prefix...)
			for i := len(prefix) - 1; i >= 0; i-- {
				twice = append(twice, prefix[i])
			}
			f(twice)
			return
		}
		for i := range rest {
			next := append(append([]int(nil), rest[:i]...), rest[i+1:]...)
			perm(append(append([]int(nil), prefix...), rest[i]), next)
		}
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	perm(nil, all)
}

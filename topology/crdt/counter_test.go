package crdt

import (
	"math"
	"testing"
)

func TestCounterValue(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []CounterUpdate
		want int64
	}{
		{"empty", nil, 0},
		{"one region", []CounterUpdate{{"eu", 5, 0}}, 5},
		{"totals of one region: the greater wins", []CounterUpdate{{"eu", 2, 0}, {"eu", 5, 1}, {"eu", 3, 1}}, 4},
		{"regions add up", []CounterUpdate{{"eu", 5, 1}, {"us", 2, 4}, {"ap", 0, 3}}, -1},
		{"increments and decrements grow apart", []CounterUpdate{{"eu", 0, 7}, {"eu", 4, 0}}, -3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachOrder(t, len(tc.ops), func(order []int) {
				var c Counter
				for _, i := range order {
					c.Apply(tc.ops[i])
				}
				if got := c.Value(); got != tc.want {
					t.Fatalf("order %v: value %d, want %d", order, got, tc.want)
				}
			})
		})
	}
}

func TestCounterAddOp(t *testing.T) {
	for _, tc := range []struct {
		name   string
		deltas []int64
		want   PN
	}{
		{"increments", []int64{1, 2, 3}, PN{Inc: 6}},
		{"decrements", []int64{-1, -4}, PN{Dec: 5}},
		{"both", []int64{5, -2, 1, -10}, PN{Inc: 6, Dec: 12}},
		{"zero changes nothing", []int64{0}, PN{}},
		{"most negative int64", []int64{math.MinInt64}, PN{Dec: 1 << 63}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c Counter
			var sum int64
			for _, d := range tc.deltas {
				before := c.Totals("eu")
				op := c.AddOp("eu", d)
				if c.Totals("eu") != before {
					t.Fatal("AddOp changed the counter")
				}
				c.Apply(op)
				c.Apply(op) // a duplicate changes nothing
				sum += d
			}
			if got := c.Totals("eu"); got != tc.want {
				t.Fatalf("totals %+v, want %+v", got, tc.want)
			}
			if c.Value() != sum {
				t.Fatalf("value %d, want %d", c.Value(), sum)
			}
		})
	}
}

func TestCounterMerge(t *testing.T) {
	var a, b Counter
	a.Apply(CounterUpdate{"eu", 3, 1})
	a.Apply(CounterUpdate{"us", 1, 0})
	b.Apply(CounterUpdate{"us", 4, 2})
	ab, ba := a.Clone(), b.Clone()
	ab.Merge(&b)
	ba.Merge(&a)
	if !ab.Equal(ba) || ab.Value() != 4 {
		t.Fatalf("merged: %v and %v (values %d, %d), want equal with value 4", ab.regions, ba.regions, ab.Value(), ba.Value())
	}
	ab.Merge(ab.Clone())
	if ab.Value() != 4 {
		t.Fatalf("merging with itself changed the value to %d", ab.Value())
	}
	if a.Value() != 3 {
		t.Fatalf("Clone shares state: a is %d after merging its clone", a.Value())
	}
}

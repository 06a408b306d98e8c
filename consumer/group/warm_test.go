package group

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamd/streamd/offsets"
)

// warmGate is an Options.Warm that records the ranges it is called with
// and returns once open (or when its ctx ends).
type warmGate struct {
	mu    sync.Mutex
	calls []offsets.SliceRange
	open  chan struct{}
}

func newWarmGate(open bool) *warmGate {
	g := &warmGate{open: make(chan struct{})}
	if open {
		close(g.open)
	}
	return g
}

func (g *warmGate) warm(ctx context.Context, r offsets.SliceRange) error {
	g.mu.Lock()
	g.calls = append(g.calls, r)
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *warmGate) shut() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *warmGate) unshut() {
	g.mu.Lock()
	close(g.open)
	g.mu.Unlock()
}

func (g *warmGate) called(r offsets.SliceRange) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Contains(g.calls, r)
}

// addWarmer adds a Runner member with Holds, Address, HoldWait and g as
// its Warm.
func (h *harness) addWarmer(id string, holdWait time.Duration, g *warmGate, log *slog.Logger) *tmember {
	h.t.Helper()
	return h.joinWith(id, true, func(tm *tmember, o *Options) {
		o.Holds, o.Address, o.HoldWait, o.Warm = true, address(id), holdWait, g.warm
		if log != nil {
			o.Logger = log
		}
	})
}

// A member whose target gains slices another owns warms for them first:
// the other keeps them, consuming, until the Lease of the first says it is
// warm; then they move.
func TestWarmBeforeHandOff(t *testing.T) {
	h := newHarness(t)
	a := h.addWarmer("a", 10*testD, newWarmGate(true), nil)
	h.converge("1 member")
	g := newWarmGate(false)
	b := h.addWarmer("b", 10*testD, g, nil)
	upper := Assign(1, 2)
	for range 4 {
		h.step()
		if st := a.m.Status(); st.Owned != offsets.AllSlices || st.Consuming != offsets.AllSlices {
			t.Fatalf("a owns %s and consumes %s before b is warm for %s; want all, still", st.Owned, st.Consuming, upper)
		}
		if w := h.lease("b").Annotations[AnnotationWarm]; w != "" {
			t.Fatalf("b's Lease says it is warm for %q before its Warm returned", w)
		}
	}
	if !g.called(upper) {
		t.Fatalf("b's Warm was not called with its gain %s: %v", upper, g.calls)
	}
	g.unshut()
	h.converge("2 members, b warm")
	if st := b.m.Status(); st.Owned != upper {
		t.Fatalf("b owns %s, want %s", st.Owned, upper)
	}
	h.leaveAll()
}

// A member not warm after HoldWait gets the slices all the same.
func TestWarmWaitsAtMostHoldWait(t *testing.T) {
	h := newHarness(t)
	var logs syncBuffer
	a := h.addWarmer("a", testD, newWarmGate(true), slog.New(slog.NewTextHandler(&logs, nil)))
	h.converge("1 member")
	h.addWarmer("b", testD, newWarmGate(false), nil)
	h.step()
	if st := a.m.Status(); st.Owned != offsets.AllSlices {
		t.Fatalf("a owns %s a step after b joined, before HoldWait; want all", st.Owned)
	}
	h.converge("2 members, b never warm")
	if s := logs.String(); !strings.Contains(s, "not warm for them after HoldWait") || !strings.Contains(s, "members=b") {
		t.Errorf("a did not say it gave slices up to b before it was warm:\n%s", s)
	}
	h.leaveAll()
}

// A member that leaves keeps its slices, consuming, its Lease marked
// leaving, until the member taking them is warm for them.
func TestLeavingWaitsForWarm(t *testing.T) {
	h := newHarness(t)
	a := h.addWarmer("a", 10*testD, newWarmGate(true), nil)
	h.converge("1 member")
	g := newWarmGate(true)
	h.addWarmer("b", 10*testD, g, nil)
	h.converge("2 members")
	lower := Assign(0, 2)
	g.shut()
	h.startLeaving("a") // until its first step of leaving
	for range 4 {
		h.stepLeaving(a)
		l := h.lease("a")
		if l == nil || l.Annotations[AnnotationLeaving] != "true" || l.Annotations[AnnotationSlices] != lower.String() {
			t.Fatalf("a's Lease while b is not warm: %v; want it leaving, owning %s", l, lower)
		}
		if st := a.m.Status(); st.Consuming != lower {
			t.Fatalf("a consumes %s while b is not warm for its slices; want %s", st.Consuming, lower)
		}
	}
	if !g.called(lower) {
		t.Fatalf("b's Warm was not called with a's slices %s: %v", lower, g.calls)
	}
	g.unshut()
	h.converge("b alone")
	h.left(a)
	h.leaveAll()
}

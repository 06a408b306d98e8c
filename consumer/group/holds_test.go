package group

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"

	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/offsets"
)

func address(id string) string { return id + ".orders:7000" }

// addHolder adds a Runner member with Holds and Address (holdWait 0: the
// default); its Runner reads Holders on every start, and calls Hold
// after while tm.hold is set.
func (h *harness) addHolder(id string, holdWait time.Duration, hold bool, log *slog.Logger) *tmember {
	h.t.Helper()
	return h.joinWith(id, true, func(tm *tmember, o *Options) {
		tm.hold.Store(hold)
		o.Holds, o.Address, o.HoldWait = true, address(id), holdWait
		if log != nil {
			o.Logger = log
		}
		stub := o.Runner
		o.Runner = func(ctx context.Context, r offsets.SliceRange) error {
			st := runnerStart{slices: r}
			st.holders, st.err = tm.m.Holders(ctx, r)
			if st.err == nil && tm.hold.Load() {
				st.held, st.holdErr = true, tm.m.Hold(ctx, r)
			}
			tm.mu.Lock()
			tm.starts = append(tm.starts, st)
			tm.mu.Unlock()
			return stub(ctx, r)
		}
	})
}

// started waits until tm's Runner has started over r and returns what it
// saw the last time.
func (h *harness) started(tm *tmember, r offsets.SliceRange) runnerStart {
	h.t.Helper()
	var st runnerStart
	testwait.For(h.t, 30*time.Second, fmt.Sprintf("%s's Runner to start over %s", tm.id, r), func() bool {
		tm.mu.Lock()
		defer tm.mu.Unlock()
		for _, s := range slices.Backward(tm.starts) {
			if s.slices == r {
				st = s
				return true
			}
		}
		return false
	})
	return st
}

// startLeaving ends id's Run and waits until it has handed its slices off
// and waits for its holdings to be taken over (or has returned).
func (h *harness) startLeaving(id string) *tmember {
	h.t.Helper()
	h.mu.Lock()
	tm := h.members[id]
	delete(h.members, id)
	h.mu.Unlock()
	tm.cancel()
	h.waitLeaving(time.Time{}, tm)
	return tm
}

// waitLeaving waits until each of tms has returned from Run or, leaving,
// has read the holdings at the time at (zero: at any time).
func (h *harness) waitLeaving(at time.Time, tms ...*tmember) {
	h.t.Helper()
	testwait.For(h.t, 30*time.Second, fmt.Sprintf("leaving members to step at %s", at), func() bool {
		for _, tm := range tms {
			tm.mu.Lock()
			w := tm.lastWaiting
			tm.mu.Unlock()
			if len(tm.done) == 0 && (w.IsZero() || !at.IsZero() && !w.Equal(at)) {
				return false
			}
		}
		return true
	})
}

// stepLeaving is step, waiting for the leaving members tms too.
func (h *harness) stepLeaving(tms ...*tmember) {
	h.t.Helper()
	h.step()
	h.waitLeaving(h.clock.Now(), tms...)
}

// left returns tm's Run's error; it must have returned.
func (h *harness) left(tm *tmember) {
	h.t.Helper()
	select {
	case err := <-tm.done:
		if err != nil {
			h.t.Errorf("member %s: Run: %v", tm.id, err)
		}
	case <-time.After(30 * time.Second):
		h.t.Fatalf("member %s: Run did not return", tm.id)
	}
}

// leaveAll ends the Run of every member, stepping the clock while some
// wait for their holdings to be taken over (at most their HoldWait).
func (h *harness) leaveAll() {
	h.t.Helper()
	h.mu.Lock()
	tms := slices.Collect(maps.Values(h.members))
	clear(h.members)
	h.mu.Unlock()
	for _, tm := range tms {
		tm.cancel()
	}
	h.waitLeaving(time.Time{}, tms...)
	for steps := 0; ; steps++ {
		running := 0
		for _, tm := range tms {
			running += 1 - len(tm.done)
		}
		if running == 0 {
			break
		}
		if steps == 20 {
			h.t.Fatalf("%d members still leaving after %d steps", running, steps)
		}
		h.step()
		h.waitLeaving(h.clock.Now(), tms...)
	}
	for _, tm := range tms {
		h.left(tm)
	}
}

func (h *harness) lease(id string) *coordinationv1.Lease {
	for _, l := range h.api.Snapshot().Leases {
		if l.Name == testGroup+"-"+id {
			return &l
		}
	}
	return nil
}

func (h *harness) state() *state {
	h.t.Helper()
	cms := h.api.Snapshot().ConfigMaps
	if len(cms) != 1 {
		h.t.Fatalf("%d ConfigMaps", len(cms))
	}
	st, err := decodeState(&cms[0])
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func fmtHoldings(hs []Holding) string {
	var s []string
	for _, h := range hs {
		s = append(s, fmt.Sprintf("%s %s %q", h.Identity, h.Slices, h.Address))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// TestHolds: the first member holds all slices; a second takes half and
// finds their history with the first, at its address; once it holds them
// the ConfigMap says so, and it cannot hold slices it does not own.
func TestHolds(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	a := h.addHolder("a", 0, true, nil)
	h.converge("1 member")
	if st := h.started(a, offsets.AllSlices); st.err != nil || len(st.holders) != 0 || !st.held || st.holdErr != nil {
		t.Fatalf("a's first Runner: Holders %s (%v), Hold: %v; want none, then Hold", fmtHoldings(st.holders), st.err, st.holdErr)
	}
	if got := h.state().holds; fmt.Sprint(got) != "map[a:[0-1023]]" {
		t.Fatalf("holds %v after a's Hold, want a: 0-1023", got)
	}

	b := h.addHolder("b", 0, true, nil)
	h.converge("2 members")
	lower, upper := Assign(0, 2), Assign(1, 2)
	st := h.started(b, upper)
	if want := fmtHoldings([]Holding{{"a", upper, address("a")}}); st.err != nil || fmtHoldings(st.holders) != want {
		t.Errorf("b's Runner over %s: Holders %s (%v), want %s", upper, fmtHoldings(st.holders), st.err, want)
	}
	if st.holdErr != nil {
		t.Errorf("b's Runner: Hold(%s): %v", upper, st.holdErr)
	}
	for _, c := range []struct {
		r    offsets.SliceRange
		want []Holding
	}{
		{offsets.AllSlices, []Holding{{"a", lower, address("a")}, {"b", upper, address("b")}}},
		{offsets.SliceRange{First: 500, Last: 600}, []Holding{{"a", offsets.SliceRange{First: 500, Last: 511}, address("a")}, {"b", offsets.SliceRange{First: 512, Last: 600}, address("b")}}},
		{offsets.SliceRange{First: 7, Last: 7}, []Holding{{"a", offsets.SliceRange{First: 7, Last: 7}, address("a")}}},
	} {
		got, err := a.m.Holders(ctx, c.r)
		if err != nil || fmtHoldings(got) != fmtHoldings(c.want) {
			t.Errorf("Holders(%s) = %s (%v), want %s", c.r, fmtHoldings(got), err, fmtHoldings(c.want))
		}
	}

	// Status: who owns what and where they are, as copies. (a wrote the
	// ConfigMap last before b took its slices: it reads it every step.)
	h.step()
	for _, tm := range []*tmember{a, b} {
		st := tm.m.Status()
		if want := map[string]offsets.SliceRange{"a": lower, "b": upper}; !maps.Equal(st.Owners, want) {
			t.Errorf("%s's Status().Owners = %v, want %v", tm.id, st.Owners, want)
		}
		if want := map[string]string{"a": address("a"), "b": address("b")}; !maps.Equal(st.Addresses, want) {
			t.Errorf("%s's Status().Addresses = %v, want %v", tm.id, st.Addresses, want)
		}
	}
	bs := b.m.Status()
	if bs.Owners != nil && bs.Addresses != nil {
		bs.Owners["x"], bs.Addresses["x"] = lower, "x"
		if bs = b.m.Status(); bs.Owners["x"] != (offsets.SliceRange{}) || bs.Addresses["x"] != "" {
			t.Errorf("Status() shares its maps with the caller")
		}
	}

	// Slices b does not own (all or in part): refused, nothing written.
	before := h.api.Snapshot().ConfigMaps[0]
	for _, r := range []offsets.SliceRange{lower, {First: 500, Last: 600}, offsets.AllSlices} {
		if err := b.m.Hold(ctx, r); !errors.Is(err, ErrNotOwner) {
			t.Errorf("b.Hold(%s) = %v, want ErrNotOwner", r, err)
		}
	}
	if after := h.api.Snapshot().ConfigMaps[0]; after.ResourceVersion != before.ResourceVersion || !maps.Equal(after.Data, before.Data) {
		t.Errorf("refused Holds changed the ConfigMap: %v, was %v", after.Data, before.Data)
	}
	if err := b.m.Hold(ctx, upper); err != nil {
		t.Errorf("b.Hold(%s) again: %v", upper, err)
	}
	if after := h.api.Snapshot().ConfigMaps[0]; after.ResourceVersion != before.ResourceVersion {
		t.Errorf("holding again what b holds wrote the ConfigMap")
	}
	h.leaveAll()
}

// TestLeavingHolderWaits: a member that leaves holding slices keeps its
// Lease, marked leaving, beyond its duration; it is no member any more, so
// the other takes all slices at once; its Lease goes once the other holds
// what it held.
func TestLeavingHolderWaits(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	h.addHolder("a", 10*testD, true, nil)
	h.converge("1 member")
	b := h.addHolder("b", 0, true, nil)
	h.converge("2 members")
	lower, upper := Assign(0, 2), Assign(1, 2)
	h.started(b, upper)
	testwait.For(t, 30*time.Second, "b to hold its slices", func() bool {
		return fmt.Sprint(h.state().holds) == fmt.Sprintf("map[a:[%s] b:[%s]]", lower, upper)
	})
	b.hold.Store(false)

	a := h.startLeaving("a")
	if l := h.lease("a"); l == nil || l.Annotations[AnnotationLeaving] != "true" || l.Annotations[AnnotationSlices] != "" {
		t.Fatalf("a's Lease while it waits: %v, want it marked leaving, owning nothing", l)
	}
	if _, ok := h.state().owners["a"]; ok {
		t.Fatalf("a waits for its holdings to be taken over before it released its slices")
	}
	h.stepLeaving(a)
	bs := b.m.Status()
	if !slices.Equal(bs.Members, []string{"b"}) || bs.Target != offsets.AllSlices {
		t.Errorf("b sees members %v, target %s with a leaving; want b alone, all slices", bs.Members, bs.Target)
	}
	st := h.started(b, offsets.AllSlices)
	if want := fmtHoldings([]Holding{{"a", lower, address("a")}, {"b", upper, address("b")}}); st.err != nil || fmtHoldings(st.holders) != want {
		t.Errorf("b's Runner over all: Holders %s (%v), want %s", fmtHoldings(st.holders), st.err, want)
	}
	for range 4 { // beyond the Lease's duration
		h.stepLeaving(a)
		if h.lease("a") == nil || len(a.done) > 0 {
			t.Fatalf("a left at %s, while it held %s nobody had taken over", h.clock.Now(), lower)
		}
	}
	bs = b.m.Status()
	if want := map[string]offsets.SliceRange{"b": offsets.AllSlices}; !maps.Equal(bs.Owners, want) || bs.Owned != offsets.AllSlices {
		t.Errorf("b's Status: owners %v, owned %s; want b owning all", bs.Owners, bs.Owned)
	}
	if want := map[string]string{"a": address("a"), "b": address("b")}; !maps.Equal(bs.Addresses, want) {
		t.Errorf("b's Status().Addresses = %v, want the leaving a too: %v", bs.Addresses, want)
	}

	if err := b.m.Hold(ctx, lower); err != nil {
		t.Fatalf("b.Hold(%s): %v", lower, err)
	}
	h.stepLeaving(a)
	h.left(a)
	if l := h.lease("a"); l != nil {
		t.Errorf("a's Lease is still there once b holds everything: %v", l.Annotations)
	}
	if got := h.state().holds; fmt.Sprint(got) != "map[b:[0-1023]]" {
		t.Errorf("holds %v, want b: 0-1023", got)
	}
	h.leaveAll()
}

// TestLeavingHolderGivesUp: a member that leaves holding slices nobody
// takes over deletes its Lease after HoldWait and says so; its holdings
// stay in the ConfigMap, without an address.
func TestLeavingHolderGivesUp(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	var logs syncBuffer
	a := h.addHolder("a", testD, true, slog.New(slog.NewTextHandler(&logs, nil)))
	h.converge("1 member")
	h.started(a, offsets.AllSlices)
	b := h.addHolder("b", 0, false, nil)
	h.converge("2 members")

	h.startLeaving("a")
	for range 2 { // HoldWait is 3 steps
		h.stepLeaving(a)
		if h.lease("a") == nil || len(a.done) > 0 {
			t.Fatalf("a left at %s, before its HoldWait", h.clock.Now())
		}
	}
	h.stepLeaving(a)
	h.left(a)
	if l := h.lease("a"); l != nil {
		t.Errorf("a's Lease is still there after HoldWait: %v", l.Annotations)
	}
	if got := h.state().holds; fmt.Sprint(got) != "map[a:[0-1023]]" {
		t.Errorf("holds %v after a left, want a: 0-1023 kept", got)
	}
	got, err := b.m.Holders(ctx, offsets.AllSlices)
	if want := fmtHoldings([]Holding{{"a", offsets.AllSlices, ""}}); err != nil || fmtHoldings(got) != want {
		t.Errorf("Holders(all) = %s (%v), want %s", fmtHoldings(got), err, want)
	}
	if s := logs.String(); !strings.Contains(s, "left holding slices nobody has taken over") || !strings.Contains(s, "slices=0-1023") {
		t.Errorf("a did not log the holdings it left:\n%s", s)
	}
	h.leaveAll()
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLastMemberLeavesAtOnce: a member that leaves holding slices while no
// other member is there to take them over (the last one, or the only one
// restarting) does not wait out HoldWait: its holdings stay, for the next
// member that owns them to copy from it once it is back.
func TestLastMemberLeavesAtOnce(t *testing.T) {
	h := newHarness(t)
	var logs syncBuffer
	a := h.addHolder("a", testD, true, slog.New(slog.NewTextHandler(&logs, nil)))
	h.converge("1 member")
	h.started(a, offsets.AllSlices)
	h.startLeaving("a")
	h.left(a) // without a step of the clock
	if l := h.lease("a"); l != nil {
		t.Errorf("a's Lease is still there: %v", l.Annotations)
	}
	if got := h.state().holds; fmt.Sprint(got) != "map[a:[0-1023]]" {
		t.Errorf("holds %v after a left, want a: 0-1023 kept", got)
	}
	if s := logs.String(); !strings.Contains(s, "no member to take them over") || !strings.Contains(s, "slices=0-1023") {
		t.Errorf("a did not log the holdings it left:\n%s", s)
	}
	h.leaveAll()
}

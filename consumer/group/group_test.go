package group

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/internal/kubetest"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testNS    = "apps"
	testGroup = "orders"
	testName  = "orders-projection" // the consumer's name in every store
	testD     = 15 * time.Second
)

// harness runs members with the fake clientset over one kubetest.API, a
// fake clock that the test steps D/3 at a time, and, instead of a consumer,
// a stub that "applies" two journals up to a head offset the test moves:
// it records, per slice, where each run started (from the offsets in its
// store) and where it stopped, and that no slice runs twice at once.
type harness struct {
	t        *testing.T
	api      *kubetest.API
	clock    *clocktesting.FakeClock
	journals [][]byte
	head     atomic.Uint64

	mu        sync.Mutex
	members   map[string]*tmember
	stores    map[string]*offsets.Store // by identity
	consuming [journal.Slices]string
	runs      []*stubRun
	writes    int
}

type tmember struct {
	id      string
	m       *Member
	store   *offsets.Store
	crashed atomic.Bool
	cancel  context.CancelFunc
	done    chan error

	hold atomic.Bool // with Holds: its Runner calls Hold on every start

	mu          sync.Mutex
	lastTick    time.Time
	lastWaiting time.Time     // of awaitTakeOver, leaving
	starts      []runnerStart // with Holds
}

// runnerStart is what a member's Runner saw when it started, with Holds.
type runnerStart struct {
	slices  offsets.SliceRange
	holders []Holding
	err     error // of Holders
	held    bool  // it called Hold
	holdErr error
}

// stubRun is one run of the stub consumer: per journal and slice, the
// offset it started after (from) and the one it stopped at (to).
type stubRun struct {
	member  string
	slices  offsets.SliceRange
	crashed bool // its member had lost the API when it stopped
	from    map[string][]uint64
	to      uint64
}

func newHarness(t *testing.T) *harness {
	h := &harness{
		t: t, api: kubetest.New(), clock: clocktesting.NewFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)),
		journals: [][]byte{[]byte("journal-one-0001"), []byte("journal-two-0002")},
		members:  map[string]*tmember{}, stores: map[string]*offsets.Store{},
	}
	h.head.Store(100)
	h.api.OnWrite(h.checkState)
	return h
}

// checkState runs on every write to the API: the slices on the Leases, and
// the owner entries of Leases still there, never overlap.
func (h *harness) checkState(s kubetest.State) {
	h.writes++
	var leased, owned []string
	uids := map[types.UID]bool{}
	for _, l := range s.Leases {
		uids[l.UID] = true
		r, err := parseRange(l.Annotations[AnnotationSlices])
		if err != nil {
			h.t.Errorf("lease %s: %v", l.Name, err)
		}
		leased = append(leased, l.Name+"="+formatRange(r))
	}
	for _, cm := range s.ConfigMaps {
		st, err := decodeState(&cm)
		if err != nil {
			h.t.Errorf("ConfigMap: %v", err)
			continue
		}
		for id, o := range st.owners {
			if uids[o.uid] {
				owned = append(owned, id+"="+o.slices.String())
			}
		}
	}
	for what, list := range map[string][]string{"lease annotations": leased, "owner entries": owned} {
		if err := disjoint(list); err != nil {
			h.t.Errorf("after API write %d, %s overlap: %v (%v)", h.writes, what, err, list)
		}
	}
}

// disjoint checks "name=first-last" entries ("name=" for none).
func disjoint(list []string) error {
	type e struct {
		name string
		r    offsets.SliceRange
	}
	var es []e
	for _, s := range list {
		name, rs, _ := strings.Cut(s, "=")
		r, err := parseRange(rs)
		if err != nil {
			return err
		}
		if !isNone(r) {
			es = append(es, e{name, r})
		}
	}
	sort.Slice(es, func(i, j int) bool { return es[i].r.First < es[j].r.First })
	for i := 1; i < len(es); i++ {
		if es[i].r.Overlaps(es[i-1].r) {
			return fmt.Errorf("%s %s and %s %s", es[i-1].name, es[i-1].r, es[i].name, es[i].r)
		}
	}
	return nil
}

func (h *harness) add(id string) *tmember { return h.join(id, false) }

// addRunner adds a member whose stub runs as its Options.Runner.
func (h *harness) addRunner(id string) *tmember { return h.join(id, true) }

func (h *harness) join(id string, runner bool) *tmember { return h.joinWith(id, runner, nil) }

// joinWith adds a member, adjust changing its options (and tm) first.
func (h *harness) joinWith(id string, runner bool, adjust func(*tmember, *Options)) *tmember {
	h.t.Helper()
	store := h.stores[id] // a member that joins again keeps its store (its volume)
	if store == nil {
		var err error
		if store, err = offsets.Open(h.t.TempDir(), offsets.Options{}); err != nil {
			h.t.Fatal(err)
		}
		h.t.Cleanup(func() { store.Close() })
		h.stores[id] = store
	}
	tm := &tmember{id: id, store: store, done: make(chan error, 1)}
	cs := h.api.Clientset()
	cs.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		if tm.crashed.Load() {
			return true, nil, errors.New("dial tcp: connection refused")
		}
		return false, nil, nil
	})
	o := Options{
		Client: cs, Namespace: testNS, Group: testGroup, Identity: id, LeaseDuration: testD, Clock: h.clock,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	stub := func(ctx context.Context, r offsets.SliceRange) error { return h.stub(ctx, tm, r) }
	if runner {
		o.Runner = stub
	} else {
		o.Consumer = consumer.Options{Producers: []string{"127.0.0.1:1"}, Name: testName, Store: store,
			Handler: func(context.Context, *streamdv1.Event) error { return nil }}
	}
	if adjust != nil {
		adjust(tm, &o)
	}
	m, err := New(o)
	if err != nil {
		h.t.Fatal(err)
	}
	if !runner {
		m.consume = stub
	}
	m.ticked = func(now time.Time, _ Status) {
		tm.mu.Lock()
		tm.lastTick = now
		tm.mu.Unlock()
	}
	m.waiting = func(now time.Time) {
		tm.mu.Lock()
		tm.lastWaiting = now
		tm.mu.Unlock()
	}
	tm.m = m
	ctx, cancel := context.WithCancel(context.Background())
	tm.cancel = cancel
	go func() { tm.done <- m.Run(ctx) }()
	h.mu.Lock()
	h.members[id] = tm
	h.mu.Unlock()
	h.waitTicks()
	return tm
}

// stop ends a member's Run (a graceful leave, or the end of a crashed one).
func (h *harness) stop(id string) {
	h.t.Helper()
	h.mu.Lock()
	tm := h.members[id]
	delete(h.members, id)
	h.mu.Unlock()
	tm.cancel()
	select {
	case err := <-tm.done:
		if err != nil {
			h.t.Errorf("member %s: Run: %v", id, err)
		}
	case <-time.After(30 * time.Second):
		h.t.Fatalf("member %s: Run did not return", id)
	}
}

func (h *harness) stub(ctx context.Context, tm *tmember, r offsets.SliceRange) error {
	h.mu.Lock()
	for s := r.First; s <= r.Last; s++ {
		if other := h.consuming[s]; other != "" {
			h.t.Errorf("%s starts consuming slice %d while %s consumes it", tm.id, s, other)
		}
		h.consuming[s] = tm.id
	}
	run := &stubRun{member: tm.id, slices: r, from: map[string][]uint64{}}
	h.runs = append(h.runs, run)
	h.mu.Unlock()

	head := h.head.Load()
	for _, j := range h.journals {
		k := offsets.Key{Consumer: testName, JournalID: j, Slices: r}
		res, err := tm.store.Resolve(k)
		if err != nil {
			return err
		}
		from := make([]uint64, r.Len())
		for i := range from {
			s := r.First + uint32(i)
			for _, src := range res.Sources {
				if src.Slices.Contains(s) {
					from[i] = src.Offset.Offset
				}
			}
		}
		run.from[string(j)] = from
		if err := tm.store.Save(k, head, nil); err != nil {
			return err
		}
	}
	<-ctx.Done()
	head = h.head.Load()
	for _, j := range h.journals {
		if err := tm.store.Save(offsets.Key{Consumer: testName, JournalID: j, Slices: r}, head, nil); err != nil {
			return err
		}
	}
	h.mu.Lock()
	run.to, run.crashed = head, tm.crashed.Load()
	for s := r.First; s <= r.Last; s++ {
		h.consuming[s] = ""
	}
	h.mu.Unlock()
	return nil
}

// step moves the head and the clock by D/3 and waits until every member
// has done its step.
func (h *harness) step() {
	h.t.Helper()
	h.head.Add(10)
	h.clock.Step(testD / 3)
	h.waitTicks()
}

func (h *harness) waitTicks() {
	h.t.Helper()
	now := h.clock.Now()
	var late []string
	if !testwait.Until(30*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		late = late[:0]
		for id, tm := range h.members {
			tm.mu.Lock()
			if !tm.lastTick.Equal(now) {
				late = append(late, id)
			}
			tm.mu.Unlock()
		}
		return len(late) == 0
	}) {
		h.t.Fatalf("members %v did not step at %s", late, now)
	}
}

// converge steps until the live members (all but the crashed) own and
// consume Assign of their rank, their Leases say so, the ConfigMap agrees,
// and the ranges cover 0..1023; it returns the steps it took.
func (h *harness) converge(what string) int {
	h.t.Helper()
	for steps := 0; steps <= 40; steps++ {
		if err := h.converged(); err == nil {
			h.t.Logf("%s: settled after %d steps of D/3", what, steps)
			return steps
		} else if steps == 40 {
			h.t.Fatalf("%s: not settled after %d steps: %v", what, steps, err)
		}
		h.step()
	}
	return 0
}

func (h *harness) converged() error {
	h.mu.Lock()
	var live []string
	for id, tm := range h.members {
		if !tm.crashed.Load() {
			live = append(live, id)
		}
	}
	h.mu.Unlock()
	slices.Sort(live)
	s := h.api.Snapshot()
	if len(s.Leases) != len(live) {
		return fmt.Errorf("%d leases for %d live members", len(s.Leases), len(live))
	}
	var st *state
	for _, cm := range s.ConfigMaps {
		var err error
		if st, err = decodeState(&cm); err != nil {
			return err
		}
	}
	if st == nil {
		return errors.New("no ConfigMap")
	}
	next := uint32(0)
	for k, id := range live {
		want := Assign(k, len(live))
		l := s.Leases[k]
		if *l.Spec.HolderIdentity != id || l.Annotations[AnnotationSlices] != want.String() {
			return fmt.Errorf("lease %s says %q, want %s for %s", l.Name, l.Annotations[AnnotationSlices], want, id)
		}
		if o := st.owners[id]; o.slices != want || o.uid != l.UID {
			return fmt.Errorf("ConfigMap: %s owns %s (lease %s), want %s (lease %s)", id, o.slices, o.uid, want, l.UID)
		}
		if got := h.members[id].m.Status(); got.Owned != want || got.Consuming != want {
			return fmt.Errorf("%s owns %s, consumes %s; want %s", id, formatRange(got.Owned), formatRange(got.Consuming), want)
		}
		if want.First != next {
			return fmt.Errorf("%s starts at %d, want %d", id, want.First, next)
		}
		next = want.Last + 1
	}
	if next != journal.Slices {
		return fmt.Errorf("the ranges end at %d", next-1)
	}
	return nil
}

// TestScaleSteps scales a group 1→4→2→3→1: members join, leave gracefully
// and one crashes (stops renewing). After each step every slice is owned
// exactly once; at no write to the API do two Leases' slices overlap; no
// slice is ever consumed by two members at once; and each slice's runs
// follow each other: a run starts exactly where the previous owner's
// stopped, except after a crash, where it starts no later.
func TestScaleSteps(t *testing.T) {
	h := newHarness(t)
	var steps []int
	h.add("a")
	steps = append(steps, h.converge("1 member"))
	h.add("b")
	h.add("c")
	h.add("d")
	steps = append(steps, h.converge("4 members"))
	h.stop("c")
	h.stop("d")
	steps = append(steps, h.converge("2 members (c, d left)"))
	h.add("e")
	steps = append(steps, h.converge("3 members (e joined)"))
	h.members["b"].crashed.Store(true)
	h.stop("e")
	steps = append(steps, h.converge("1 member (b crashed, e left)"))
	if !h.members["b"].m.Status().Fenced {
		t.Errorf("b lost the API and is not fenced")
	}
	h.stop("b")
	h.step()
	h.stop("a")
	final := h.head.Load()
	t.Logf("steps of D/3 to settle: %v; API writes: %d; consumer runs: %d", steps, h.writes, len(h.runs))

	h.checkRuns(final)

	// a left last: its hand-off is the whole stream, exactly.
	st, err := decodeState(&h.api.Snapshot().ConfigMaps[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(st.owners) != 0 {
		t.Errorf("owners left in the ConfigMap: %v", st.owners)
	}
	for _, j := range h.journals {
		frags := st.offsets[fmt.Sprintf("%x", j)]
		for _, f := range frags {
			if f.offset.Offset != final {
				t.Errorf("journal %s: handed off %s at %s, want offset %d", j, f.slices, f.offset, final)
			}
		}
		if cover := coverage(frags); cover != journal.Slices {
			t.Errorf("journal %s: the fragments cover %d slices: %v", j, cover, frags)
		}
	}
}

func coverage(frags []fragment) int {
	n := 0
	for _, f := range frags {
		n += f.slices.Len()
	}
	return n
}

// checkRuns checks, per journal and slice, that the runs chain without a
// gap, exactly after a graceful hand-off, and reach final.
func (h *harness) checkRuns(final uint64) {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	exact, crashed := 0, 0
	for _, j := range h.journals {
		for s := uint32(0); s < journal.Slices; s++ {
			var prev *stubRun
			for _, r := range h.runs {
				if !r.slices.Contains(s) {
					continue
				}
				from := r.from[string(j)][s-r.slices.First]
				switch {
				case prev == nil && from != 0:
					h.t.Errorf("journal %s slice %d: the first run (%s) starts after %d, want 0", j, s, r.member, from)
				case prev == nil:
				case prev.crashed && from > prev.to:
					h.t.Errorf("journal %s slice %d: %s starts after %d, %s (crashed) stopped at %d: lost", j, s, r.member, from, prev.member, prev.to)
				case prev.crashed:
					crashed++
				case from != prev.to:
					h.t.Errorf("journal %s slice %d: %s starts after %d, %s handed off at %d", j, s, r.member, from, prev.member, prev.to)
				default:
					exact++
				}
				prev = r
			}
			if prev == nil || prev.to != final {
				h.t.Errorf("journal %s slice %d: the last run does not reach %d", j, s, final)
				return
			}
		}
	}
	h.t.Logf("slice hand-offs: %d exact, %d after a crash (at-least-once)", exact, crashed)
	if crashed == 0 {
		h.t.Errorf("no slice was taken over from the crashed member")
	}
}

// TestRunnerKeepsItsOwnPositions scales a group of Runners 1→3→2→3 and
// crashes one: every run of a slice starts where the same member's
// previous run of it stopped (0 the first time), never from another
// member's offset, and the ConfigMap carries no offsets, only owners.
func TestRunnerKeepsItsOwnPositions(t *testing.T) {
	h := newHarness(t)
	h.addRunner("a")
	h.converge("1 member")
	h.addRunner("b")
	h.addRunner("c")
	h.converge("3 members")
	h.stop("c")
	h.converge("2 members (c left)")
	h.addRunner("c")
	h.converge("3 members (c back)")
	h.members["b"].crashed.Store(true)
	h.converge("2 members (b crashed)")
	h.stop("b")
	h.step()
	h.stop("a")
	h.stop("c")

	h.mu.Lock()
	defer h.mu.Unlock()
	moved, wrong := 0, 0
	for _, j := range h.journals {
		for s := uint32(0); s < journal.Slices; s++ {
			last := map[string]uint64{} // per member: where its last run of s stopped
			var prev *stubRun
			for _, r := range h.runs {
				if !r.slices.Contains(s) {
					continue
				}
				from := r.from[string(j)][s-r.slices.First]
				if want := last[r.member]; from != want {
					if wrong++; wrong <= 5 {
						t.Errorf("journal %s slice %d: %s starts after %d, want %d (where it stopped itself)", j, s, r.member, from, want)
					}
				}
				if prev != nil && prev.member != r.member {
					moved++
				}
				last[r.member], prev = r.to, r
			}
		}
	}
	if wrong > 5 {
		t.Errorf("... %d runs of a slice in all start elsewhere than where their member stopped", wrong)
	}
	if moved == 0 {
		t.Errorf("no slice moved between members")
	}
	for _, cm := range h.api.Snapshot().ConfigMaps {
		for k := range cm.Data {
			if strings.HasPrefix(k, journalKeyPrefix) {
				t.Errorf("ConfigMap %s holds offsets (%s): Runners hand none over", cm.Name, k)
			}
		}
	}
}

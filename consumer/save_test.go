package consumer

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/offsets"
)

// gatedDB is an offsets.Shared over an in-memory Badger whose commits can
// be held at a gate, or made to fail, as a slow or broken disk would.
type gatedDB struct {
	db      *badger.DB
	mu      sync.Mutex
	gate    chan struct{} // non-nil: Update waits until it is closed
	fail    error         // non-nil: Update returns it
	waiting atomic.Int32  // Updates held at the gate
}

func newGatedStore(t *testing.T) (*gatedDB, *offsets.Store) {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	g := &gatedDB{db: db}
	store, err := offsets.Wrap(g, offsets.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return g, store
}

func (g *gatedDB) DB() *badger.DB { return g.db }

func (g *gatedDB) View(fn func(*badger.Txn) error) error { return g.db.View(fn) }

func (g *gatedDB) Update(fn func(*badger.Txn) error) error {
	g.mu.Lock()
	gate, fail := g.gate, g.fail
	g.mu.Unlock()
	if gate != nil {
		g.waiting.Add(1)
		<-gate
		g.waiting.Add(-1)
	}
	if fail != nil {
		return fail
	}
	return g.db.Update(fn)
}

func (g *gatedDB) set(gate chan struct{}, fail error) {
	g.mu.Lock()
	g.gate, g.fail = gate, fail
	g.mu.Unlock()
}

// hold holds the saves from now on at a gate, until release (at the
// test's end at the latest, before Run's cleanup waits for the last save).
func (g *gatedDB) hold(t *testing.T) (release func()) {
	gate := make(chan struct{})
	release = sync.OnceFunc(func() { g.set(nil, nil); close(gate) })
	t.Cleanup(release)
	g.set(gate, nil)
	return release
}

// gatedRun is a consumer of one fake producer that saves every 10 events
// (never on a timer) into the harness's store, a gated one, running in the
// background.
type gatedRun struct {
	*harness
	g    *gatedDB
	fake *fakeProducer
	rec  *recorder
	c    *Consumer
	r    *running
}

// runGated starts a gatedRun and waits until it stored its start offset.
func runGated(t *testing.T) *gatedRun {
	t.Helper()
	h := newHarness(t, 1)
	gr := &gatedRun{harness: h, fake: h.fake(0), rec: &recorder{}}
	gr.g, h.store = newGatedStore(t)
	o := h.options()
	o.Handler, o.SaveEvery, o.SaveInterval = gr.rec.handle, 10, time.Hour
	gr.c = newConsumer(t, o)
	gr.r = runBG(t, gr.c)
	testwait.For(t, 10*time.Second, "start offset stored", func() bool {
		_, found, err := h.store.Get(h.key(gr.fake.jid()))
		return err == nil && found
	})
	return gr
}

// entityIDs returns n entity ids, a to z over and over.
func entityIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = string(rune('a' + i%26))
	}
	return out
}

// The handler goes on while a save waits for the disk; the stored offset
// never passes what the handler finished, and catches up once the disk
// answers.
func TestSaveInFlightDoesNotHoldUpHandler(t *testing.T) {
	gr := runGated(t)
	gr.fake.publish(entityIDs(10)...)
	testwait.For(t, 10*time.Second, "offset 10 stored", func() bool { return gr.stored(gr.fake.jid()) == 10 })

	release := gr.g.hold(t)
	gr.fake.publish(entityIDs(10)...)
	testwait.For(t, 10*time.Second, "a save held at the gate", func() bool { return gr.g.waiting.Load() == 1 })
	gr.fake.publish(entityIDs(30)...)
	testwait.For(t, 10*time.Second, "50 events handled while the save waits", func() bool { return gr.rec.count() == 50 })
	if got := gr.stored(gr.fake.jid()); got != 10 {
		t.Fatalf("stored offset %d while the save waits, want 10", got)
	}
	if st := gr.c.Status()[0]; st.Offset != 50 {
		t.Fatalf("Status offset %d, want 50", st.Offset)
	}

	release()
	testwait.For(t, 10*time.Second, "offset 50 stored", func() bool { return gr.stored(gr.fake.jid()) == 50 })
	seq, err := gr.store.AppliedSeqNr(nil, "c1", gr.fake.jid(), "car", "a")
	if err != nil {
		t.Fatal(err)
	}
	if seq != 4 { // car/a is at offsets 1, 11, 21 and 47
		t.Fatalf("applied seqNr of car/a = %d, want 4", seq)
	}
	if err := gr.r.stop(t); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
}

// A save that fails in the background stops Run with the store's error.
func TestFailedBackgroundSaveStopsRun(t *testing.T) {
	gr := runGated(t)
	disk := errors.New("disk on fire")
	gr.g.set(nil, disk)
	gr.fake.publish(entityIDs(11)...)
	err := gr.r.wait(t)
	var se *storeError
	if !errors.Is(err, disk) || !errors.As(err, &se) {
		t.Fatalf("Run = %v, want the store's error", err)
	}
	if p, found, gerr := gr.store.Get(gr.key(gr.fake.jid())); gerr != nil || (found && p.Offset != 0) {
		t.Fatalf("stored offset %+v, %v after failed saves, want none", p, gerr)
	}
}

// While a save waits for the disk, the handler goes on for at most
// unsavedSaves×SaveEvery events, then waits for it: what a crash would
// re-deliver stays bounded.
func TestHandlerWaitsForASaveFarBehind(t *testing.T) {
	gr := runGated(t)
	release := gr.g.hold(t)
	limit := 10 + unsavedSaves*10
	ids := entityIDs(limit + 200)
	gr.fake.publish(ids...)
	// The save of the first 10 starts at event 10 and waits; the handler
	// goes on for unsavedSaves×SaveEvery more events and waits for it.
	testwait.For(t, 10*time.Second, "the handler at the bound", func() bool { return gr.rec.count() >= limit })
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n := gr.rec.count(); n > limit {
			t.Fatalf("handled %d events while the save of the first 10 waits, want at most %d", n, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	release()
	testwait.For(t, 10*time.Second, "every event handled", func() bool { return gr.rec.count() == len(ids) })
	testwait.For(t, 10*time.Second, "the last offset stored", func() bool { return gr.stored(gr.fake.jid()) == uint64(len(ids)) })
	if err := gr.r.stop(t); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
}

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

// The handler goes on while a save waits for the disk; the stored offset
// never passes what the handler finished, and catches up once the disk
// answers.
func TestSaveInFlightDoesNotHoldUpHandler(t *testing.T) {
	h := newHarness(t, 1)
	g, store := newGatedStore(t)
	fake := h.fake(0)
	rec := &recorder{}
	o := h.options()
	o.Store, o.Handler, o.SaveEvery, o.SaveInterval = store, rec.handle, 10, time.Hour
	c := newConsumer(t, o)
	r := runBG(t, c)
	stored := func() uint64 {
		p, found, err := store.Get(h.key(fake.jid()))
		if err != nil {
			t.Fatal(err)
		}
		if !found {
			return 0
		}
		return p.Offset
	}
	ids := func(n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = string(rune('a' + i%26))
		}
		return out
	}
	fake.publish(ids(10)...)
	testwait.For(t, 10*time.Second, "offset 10 stored", func() bool { return stored() == 10 })

	gate := make(chan struct{})
	release := sync.OnceFunc(func() { g.set(nil, nil); close(gate) })
	t.Cleanup(release) // before Run's cleanup waits for the last save
	g.set(gate, nil)
	fake.publish(ids(10)...)
	testwait.For(t, 10*time.Second, "a save held at the gate", func() bool { return g.waiting.Load() == 1 })
	fake.publish(ids(30)...)
	testwait.For(t, 10*time.Second, "50 events handled while the save waits", func() bool { return rec.count() == 50 })
	if got := stored(); got != 10 {
		t.Fatalf("stored offset %d while the save waits, want 10", got)
	}
	if st := c.Status()[0]; st.Offset != 50 {
		t.Fatalf("Status offset %d, want 50", st.Offset)
	}

	release()
	testwait.For(t, 10*time.Second, "offset 50 stored", func() bool { return stored() == 50 })
	seq, err := store.AppliedSeqNr(nil, "c1", fake.jid(), "car", "a")
	if err != nil {
		t.Fatal(err)
	}
	if seq != 4 { // car/a is at offsets 1, 11, 21 and 47
		t.Fatalf("applied seqNr of car/a = %d, want 4", seq)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
}

// A save that fails in the background stops Run with the store's error.
func TestFailedBackgroundSaveStopsRun(t *testing.T) {
	h := newHarness(t, 1)
	g, store := newGatedStore(t)
	fake := h.fake(0)
	rec := &recorder{}
	o := h.options()
	o.Store, o.Handler, o.SaveEvery, o.SaveInterval = store, rec.handle, 10, time.Hour
	c := newConsumer(t, o)
	r := runBG(t, c)
	testwait.For(t, 10*time.Second, "start offset stored", func() bool {
		_, found, err := store.Get(h.key(fake.jid()))
		return err == nil && found
	})
	disk := errors.New("disk on fire")
	g.set(nil, disk)
	fake.publish("a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k")
	err := r.wait(t)
	var se *storeError
	if !errors.Is(err, disk) || !errors.As(err, &se) {
		t.Fatalf("Run = %v, want the store's error", err)
	}
	if p, found, gerr := store.Get(h.key(fake.jid())); gerr != nil || (found && p.Offset != 0) {
		t.Fatalf("stored offset %+v, %v after failed saves, want none", p, gerr)
	}
}

// While a save waits for the disk, the handler goes on for at most
// unsavedSaves×SaveEvery events, then waits for it: what a crash would
// re-deliver stays bounded.
func TestHandlerWaitsForASaveFarBehind(t *testing.T) {
	h := newHarness(t, 1)
	g, store := newGatedStore(t)
	fake := h.fake(0)
	rec := &recorder{}
	o := h.options()
	o.Store, o.Handler, o.SaveEvery, o.SaveInterval = store, rec.handle, 10, time.Hour
	c := newConsumer(t, o)
	r := runBG(t, c)
	testwait.For(t, 10*time.Second, "start offset stored", func() bool {
		_, found, err := store.Get(h.key(fake.jid()))
		return err == nil && found
	})
	gate := make(chan struct{})
	release := sync.OnceFunc(func() { g.set(nil, nil); close(gate) })
	t.Cleanup(release)
	g.set(gate, nil)
	limit := 10 + unsavedSaves*10
	ids := make([]string, limit+200)
	for i := range ids {
		ids[i] = string(rune('a' + i%26))
	}
	fake.publish(ids...)
	// The save of the first 10 starts at event 10 and waits; the handler
	// goes on for unsavedSaves×SaveEvery more events and waits for it.
	testwait.For(t, 10*time.Second, "the handler at the bound", func() bool { return rec.count() >= limit })
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n := rec.count(); n > limit {
			t.Fatalf("handled %d events while the save of the first 10 waits, want at most %d", n, limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	release()
	testwait.For(t, 10*time.Second, "every event handled", func() bool { return rec.count() == len(ids) })
	testwait.For(t, 10*time.Second, "the last offset stored", func() bool {
		p, _, err := store.Get(h.key(fake.jid()))
		return err == nil && p.Offset == uint64(len(ids))
	})
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel = %v", err)
	}
}

package journal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// runKeys counts the index runs Badger holds, and those whose events are
// all below the floor.
func runKeys(t *testing.T, j *Journal) (runs, deleted int) {
	t.Helper()
	floor := j.Info().FirstOffset
	err := j.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixRun})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			runs++
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			offs, err := decodeRun(v, nil)
			if err != nil {
				return err
			}
			if offs[len(offs)-1] < floor {
				deleted++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return runs, deleted
}

// Appends write no index entry per event: the pending index is flushed in
// runs, and reads by entity, running all the while, see every append
// answered before they began, in order and without a gap, whether its
// index entry is pending, being flushed or in Badger. Retention deletes the
// runs whose events it deleted, and seqNrs continue after it.
func TestIndexRuns(t *testing.T) {
	defer func(n int) { indexFlushEvents = n }(indexFlushEvents)
	indexFlushEvents = 100
	dir := t.TempDir()
	j := open(t, dir, Options{RetentionInterval: time.Hour})
	const entities, appends = 7, 600
	var acked [entities]atomic.Uint64 // the last seqNr answered per entity
	ctx, cancel := context.WithCancel(context.Background())
	var readers sync.WaitGroup
	var reads atomic.Int64
	for range 2 {
		readers.Go(func() {
			for ctx.Err() == nil {
				k := rand.IntN(entities)
				want := acked[k].Load()
				from := 1 + rand.Uint64N(want+1)
				evs, err := j.ReadEntity("car", fmt.Sprint("c", k), from, 1<<20, nil)
				if err != nil {
					t.Error(err)
					return
				}
				for i, e := range evs {
					if e.SeqNr != from+uint64(i) {
						t.Errorf("c%d from %d: event %d has seqNr %d", k, from, i, e.SeqNr)
						return
					}
				}
				if got := from + uint64(len(evs)) - 1; got < want {
					t.Errorf("c%d from %d: read up to seqNr %d, %d was answered before", k, from, got, want)
					return
				}
				reads.Add(1)
			}
		})
	}
	var events int
	for i := range appends {
		k := i % entities
		batch := make([]*streamdv1.Event, 1+i%5)
		for b := range batch {
			batch[b] = ev("car", fmt.Sprint("c", k), fmt.Sprint(i))
		}
		res, err := j.Append(context.Background(), batch...)
		if err != nil {
			t.Fatal(err)
		}
		acked[k].Store(res[len(res)-1].SeqNr)
		events += len(batch)
	}
	cancel()
	readers.Wait()
	if j.index.applied.Load() < 10 {
		t.Fatalf("%d flushes of the index for %d events, want one per %d", j.index.applied.Load(), events, indexFlushEvents)
	}
	if runs, _ := runKeys(t, j); runs == 0 || runs > events/10 {
		t.Fatalf("%d runs in Badger for %d events", runs, events)
	}
	t.Logf("%d events, %d flushes, %d reads", events, j.index.applied.Load(), reads.Load())

	// Retention deletes runs; the next seqNrs follow the deleted ones.
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{RetentionMaxBytes: 1, RetentionInterval: time.Hour})
	if _, err := j.EnforceRetention(); err != nil {
		t.Fatal(err)
	}
	if info := j.Info(); info.Events != 0 {
		t.Fatalf("retention kept %d events", info.Events)
	}
	if runs, _ := runKeys(t, j); runs != 0 {
		t.Fatalf("%d runs left after retention deleted every event", runs)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{})
	for k := range entities {
		res, err := j.Append(context.Background(), ev("car", fmt.Sprint("c", k), "after"))
		if err != nil || res[0].SeqNr != acked[k].Load()+1 {
			t.Fatalf("c%d after retention: %+v, %v; want seqNr %d", k, res, err, acked[k].Load()+1)
		}
	}
}

// A run holds at most maxRunEvents offsets: a longer history is split over
// several keys, read across them from any seqNr.
func TestIndexRunsSplit(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	const n = maxRunEvents + 904
	for i := 0; i < n; i += 10 {
		batch := make([]*streamdv1.Event, 10)
		for b := range batch {
			batch[b] = ev("car", "c1", fmt.Sprint(i+b))
		}
		if _, err := j.Append(context.Background(), batch...); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil { // flushes the pending index
		t.Fatal(err)
	}
	j = open(t, dir, Options{})
	if runs, _ := runKeys(t, j); runs != 2 {
		t.Fatalf("%d runs for %d events of one entity, want 2", runs, n)
	}
	for _, from := range []uint64{1, maxRunEvents - 5, maxRunEvents, maxRunEvents + 1, n} {
		evs, err := j.ReadEntity("car", "c1", from, 1<<20, nil)
		if err != nil || uint64(len(evs)) != n-from+1 {
			t.Fatalf("from %d: %d events, %v", from, len(evs), err)
		}
		for i, e := range evs {
			if e.SeqNr != from+uint64(i) || e.Offset != e.SeqNr || !bytes.Equal(e.Payload, fmt.Append(nil, e.SeqNr-1)) {
				t.Fatalf("from %d: event %d is %v", from, i, e)
			}
		}
	}
}

// A run whose encoding is damaged is ErrCorrupt, never a short history.
func TestDecodeRun(t *testing.T) {
	offs := []uint64{3, 4, 9, 1 << 40}
	v := encodeRun(offs)
	got, err := decodeRun(v, nil)
	if err != nil || fmt.Sprint(got) != fmt.Sprint(offs) {
		t.Fatalf("decodeRun = %v, %v", got, err)
	}
	for cut := range len(v) {
		if _, err := decodeRun(v[:cut], nil); err == nil {
			t.Fatalf("a run cut at byte %d decoded", cut)
		}
	}
	if _, err := decodeRun(append(v, 1), nil); err == nil {
		t.Fatal("a run with a trailing byte decoded")
	}
	if _, err := decodeRun(encodeRun([]uint64{5, 5}), nil); err == nil {
		t.Fatal("a run not increasing decoded")
	}
}

// The largest append a journal takes, its index pending empty, commits and
// is read.
func TestLargestAppendWithNothingPending(t *testing.T) {
	j := open(t, t.TempDir(), Options{MemTableSize: minMemTableSize})
	// Events of cost 2*(1+100)+128 = 330 each (txnCost), as many as fit
	// with the blocks' references; then the last one's id longer, so that
	// the append's cost is within 2 of j.groupCost.
	k := (j.groupCost - 8*(2+8+refBytes+64)) / 330
	events := make([]*streamdv1.Event, k)
	for i := range events {
		events[i] = &streamdv1.Event{EntityType: "t", EntityId: fmt.Sprintf("%0100d", i)}
	}
	size, err := j.opts.Limits.validate(events)
	if err != nil {
		t.Fatal(err)
	}
	cost, _ := txnCost(events, size)
	last := events[k-1]
	last.EntityId += string(bytes.Repeat([]byte("x"), (j.groupCost-cost)/2))
	if size, err = j.opts.Limits.validate(events); err != nil {
		t.Fatal(err)
	}
	cost, entries := txnCost(events, size)
	if cost <= j.groupCost-128 || cost > j.groupCost || entries > j.groupEntries {
		t.Fatalf("append of cost %d and %d entries, want within 128 of %d and at most %d entries", cost, entries, j.groupCost, j.groupEntries)
	}
	if _, err := j.Append(context.Background(), events...); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Load("t", last.EntityId, 1); err != nil {
		t.Fatal(err)
	}
}

// A flush holds every run pending, however many Badger transactions they
// take: more entities than one transaction holds entries, each appended to
// twice in groups of their own, get one run each, with both seqNrs, read
// whole after a reopen.
func TestIndexFlushInGroups(t *testing.T) {
	defer func(n int) { indexFlushEvents = n }(indexFlushEvents)
	indexFlushEvents = 1 << 30 // only Close flushes
	dir := t.TempDir()
	j := open(t, dir, Options{MemTableSize: minMemTableSize})
	entities := j.groupEntries + 100
	for seq := 1; seq <= 2; seq++ {
		for from := 0; from < entities; from += 1000 {
			var events []*streamdv1.Event
			for i := from; i < min(from+1000, entities); i++ {
				events = append(events, &streamdv1.Event{EntityType: "t", EntityId: fmt.Sprint("e-", i), SeqNr: uint64(seq)})
			}
			if _, err := j.Append(context.Background(), events...); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		j := open(t, dir, Options{MemTableSize: minMemTableSize})
		if runs, _ := runKeys(t, j); runs != entities {
			t.Fatalf("%s: %d runs in Badger for %d entities appended to twice: want one each, written by one flush", when, runs, entities)
		}
		for _, i := range []int{0, entities / 2, entities - 1} {
			evs, err := j.ReadEntity("t", fmt.Sprint("e-", i), 1, 10, nil)
			if err != nil || len(evs) != 2 || evs[0].SeqNr != 1 || evs[1].SeqNr != 2 {
				t.Fatalf("%s: entity e-%d: %d events (%v), want seqNrs 1 and 2", when, i, len(evs), err)
			}
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
	}
	check("after a reopen")

	// What a crash between a flush's groups leaves: the runs of some
	// entities in Badger, m/indexed before them. Open derives them again
	// and writes them under the same keys.
	db := openBadger(t, dir)
	err := db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(keyIndexed, u64(0)); err != nil {
			return err
		}
		for i := entities / 2; i < entities; i++ {
			if err := txn.Delete(runKey(EntityKey("t", fmt.Sprint("e-", i)), 1)); err != nil {
				return err
			}
		}
		return nil
	})
	if err = errors.Join(err, db.Close()); err != nil {
		t.Fatal(err)
	}
	check("after a flush cut in half")
}

// The pending index holds at most indexFlushEntities entities, whatever
// its events: each new entity costs memory until the flush.
func TestIndexFlushByEntities(t *testing.T) {
	defer func(n, m int) { indexFlushEvents, indexFlushEntities = n, m }(indexFlushEvents, indexFlushEntities)
	indexFlushEvents, indexFlushEntities = 1<<30, 10
	j := open(t, t.TempDir(), Options{})
	for i := range 25 {
		if _, err := j.Append(context.Background(), &streamdv1.Event{EntityType: "t", EntityId: fmt.Sprint("e-", i)}); err != nil {
			t.Fatal(err)
		}
	}
	// An Update is answered once every group before it is applied.
	if err := j.Update(func(*badger.Txn) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if got := j.index.applied.Load(); got != 2 {
		t.Fatalf("%d flushes of the index after 25 entities, want 2 (one per 10)", got)
	}
}

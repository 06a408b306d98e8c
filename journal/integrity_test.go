package journal

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestAppendRefusedWithoutFreeSpace(t *testing.T) {
	j := open(t, t.TempDir(), Options{MinFreeBytes: 1 << 62})
	_, err := j.Append(context.Background(), ev("car", "c1", "x"))
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "MiB free") {
		t.Fatalf("Append = %v, want ErrNoSpace saying how much is free", err)
	}
	if j.LastOffset() != 0 {
		t.Fatalf("a refused append wrote offset %d", j.LastOffset())
	}
	if err := (Options{MinFreeBytes: -1}).Validate(); err == nil {
		t.Fatal("a negative MinFreeBytes was accepted")
	}
}

// Concurrent appends as large as the limits allow are grouped within what
// one Badger transaction can hold: none fails with "Txn is too big".
func TestLargeConcurrentAppendsFitTransactions(t *testing.T) {
	// A 16 MiB memtable lets Badger take transactions of 2.4 MiB, less
	// than a group of these appends would hold.
	j := open(t, t.TempDir(), Options{MemTableSize: 16 << 20})
	payload := strings.Repeat("x", 100)
	const appenders, appends, events = 16, 10, 2_000
	errs := make(chan error, appenders)
	for a := range appenders {
		go func() {
			for i := range appends {
				batch := make([]*streamdv1.Event, events)
				for k := range batch {
					batch[k] = ev("device", fmt.Sprintf("a%d-%d", a, k%500), payload)
				}
				if _, err := j.Append(context.Background(), batch...); err != nil {
					errs <- fmt.Errorf("appender %d, append %d: %w", a, i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range appenders {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := j.LastOffset(); got != appenders*appends*events {
		t.Fatalf("last offset %d, want %d", got, appenders*appends*events)
	}
}

func TestAppendBeyondOneTransactionRefused(t *testing.T) {
	j := open(t, t.TempDir(), Options{MemTableSize: 8 << 20})
	batch := make([]*streamdv1.Event, 10_000)
	for k := range batch {
		batch[k] = ev("device", fmt.Sprintf("d-%d", k), strings.Repeat("x", 100))
	}
	_, err := j.Append(context.Background(), batch...)
	if !errors.Is(err, ErrInvalidEvent) || !strings.Contains(err.Error(), "split the append or raise MemTableSize") {
		t.Fatalf("Append = %v, want ErrInvalidEvent saying to split the append", err)
	}
	if _, err := j.Append(context.Background(), batch[:1000]...); err != nil {
		t.Fatalf("a smaller append: %v", err)
	}
}

// A hole in an entity's index (a lost table) is reported, not skipped.
func TestEntityIndexHoleIsCorrupt(t *testing.T) {
	dir := t.TempDir()
	var j *Journal
	// Runs of seqNrs 1-2, 3 and 4-5: each Close writes the pending index.
	for _, n := range []int{2, 1, 2} {
		j = open(t, dir, Options{})
		for i := range n {
			if _, err := j.Append(context.Background(), ev("car", "c1", fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
	}
	j = open(t, dir, Options{})
	// Damage Badger behind the journal's back.
	if err := j.db.Update(func(txn *badger.Txn) error { return txn.Delete(runKey(EntityKey("car", "c1"), 3)) }); err != nil {
		t.Fatal(err)
	}
	if _, err := j.ReadEntity("car", "c1", 1, 10, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "jumps from seqNr 2 to 4") {
		t.Fatalf("ReadEntity over a hole = %v, want ErrCorrupt naming the jump", err)
	}
	if evs, err := j.ReadEntity("car", "c1", 4, 10, nil); err != nil || len(evs) != 2 {
		t.Fatalf("ReadEntity after the hole = %d events, %v", len(evs), err)
	}
}

// A memtable log left empty by a process killed as Badger created it
// (internal/badgerdir): the journal opens with everything it held.
func TestOpenAfterEmptyMemtableLog(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	if _, err := j.Append(context.Background(), ev("car", "c1", "x")); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00099.mem"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{})
	if got := readAll(t, j); len(got) != 1 {
		t.Fatalf("%d events after reopen, want 1", len(got))
	}
}

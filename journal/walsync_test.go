package journal

import (
	"context"
	"fmt"
	"strings"
	"testing"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// newestWALOf is newestWAL for a test.
func newestWALOf(t *testing.T, dir string) int {
	t.Helper()
	fid, err := newestWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fid
}

// fillMemtables appends batches of 400 KB until Badger's newest memtable
// WAL in dir is fid, calling check after each.
func fillMemtables(t *testing.T, j *Journal, dir string, fid int, check func(i int)) {
	t.Helper()
	payload := strings.Repeat("x", 4096)
	for i := 0; newestWALOf(t, dir) < fid; i++ {
		if i > 10_000 {
			t.Fatal("Badger started no new memtable after 4 GB of appends")
		}
		batch := make([]*streamdv1.Event, 100)
		for k := range batch {
			batch[k] = ev("car", fmt.Sprint("c", k), payload)
		}
		if _, err := j.Append(context.Background(), batch...); err != nil {
			t.Fatal(err)
		}
		check(i)
	}
}

// Appends that fill several memtables: the journal follows every memtable
// Badger starts, so the WAL of a memtable retired between a group's commit
// and its fsync is fsynced before the group is acknowledged (walSync).
func TestWALSyncFollowsMemtables(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{MemTableSize: minMemTableSize})
	first := j.wal.fid
	if first != newestWALOf(t, dir) {
		t.Fatalf("at open the journal follows WAL %d, the newest is %d", first, newestWALOf(t, dir))
	}
	fillMemtables(t, j, dir, first+3, func(i int) {
		// After an acknowledged append every retired WAL has been fsynced
		// and closed, and the journal follows the newest one.
		j.wal.mu.Lock()
		fid, retired := j.wal.fid, len(j.wal.retired)
		j.wal.mu.Unlock()
		if newest := newestWALOf(t, dir); fid != newest || retired != 0 {
			t.Fatalf("after append %d: following WAL %d with %d retired unsynced, newest WAL %d", i, fid, retired, newest)
		}
	})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{MemTableSize: minMemTableSize})
	if got := j.LastOffset(); got%100 != 0 || got == 0 {
		t.Fatalf("after reopen: last offset %d", got)
	}
}

// With async durability there is no fsync: the journal keeps no retired
// WAL open (an open deleted file would keep its disk space).
func TestWALSyncAsyncKeepsNothing(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{MemTableSize: minMemTableSize, Durability: DurabilityAsync})
	fillMemtables(t, j, dir, newestWALOf(t, dir)+3, func(int) {})
	j.wal.mu.Lock()
	defer j.wal.mu.Unlock()
	if len(j.wal.retired) != 0 {
		t.Fatalf("%d retired WALs kept open with async durability", len(j.wal.retired))
	}
}

// An event too large for the LSM tree goes to Badger's value log (which
// DB.Sync fsyncs) and reads back whole after a reopen.
func TestWALSyncValueLog(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	big := ev("car", "c1", strings.Repeat("x", 1<<20))
	if _, err := j.Append(context.Background(), big, ev("car", "c2", "small")); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{})
	got, err := j.Read(1, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(got[0].Payload) != 1<<20 || string(got[1].Payload) != "small" {
		t.Fatalf("read back %d events", len(got))
	}
}

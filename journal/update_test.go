package journal

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// Update refuses a transaction that writes (or deletes) a key outside the
// bytes 0x00…, as AppendWith refuses such a Write: nothing of it is
// committed and the journal goes on.
func TestUpdateRefusesKeysOutsideZero(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	if _, err := j.Append(context.Background(), ev("car", "c1", "x")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name  string
		write func(txn *badger.Txn) error
		key   string
	}{
		{"set", func(txn *badger.Txn) error { return txn.Set([]byte("consumer/journal/1:c/a:1"), []byte("v")) }, "consumer/journal/1:c/a:1"},
		{"delete", func(txn *badger.Txn) error { return txn.Delete(keyFloor) }, string(keyFloor)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := j.Update(func(txn *badger.Txn) error {
				if err := txn.Set([]byte("\x00ok"), []byte(tt.name)); err != nil {
					return err
				}
				return tt.write(txn)
			})
			if !errors.Is(err, ErrInvalidEvent) || !strings.Contains(err.Error(), "does not begin with the byte 0x00") {
				t.Fatalf("Update writing %q = %v, want ErrInvalidEvent naming the key rule", tt.key, err)
			}
			st := stateOf(t, j)
			if _, ok := st.records["\x00ok"]; ok {
				t.Fatal("a refused Update wrote its other keys")
			}
		})
	}
	if err := j.Update(func(txn *badger.Txn) error { return txn.Set([]byte("\x00ok"), []byte("1")) }); err != nil {
		t.Fatalf("Update of a key under 0x00 after refusals: %v", err)
	}
	if got := stateOf(t, j).records["\x00ok"]; got != "1" {
		t.Fatalf("record = %q, want 1", got)
	}
	if _, err := j.Append(context.Background(), ev("car", "c1", "y")); err != nil {
		t.Fatalf("append after refused Updates: %v", err)
	}
	if info := j.Info(); info.LastOffset != 2 || info.FirstOffset != 1 {
		t.Fatalf("journal after refused Updates = %+v, want offsets 1-2", info)
	}
}

// AppendWith's writes are the journal's once queued: Badger gets them after
// the append is answered, when the caller may have reused its buffers.
func TestAppendWithCopiesWrites(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	key, val := []byte("\x00k/000"), []byte("value 000")
	for i := range 200 {
		copy(key[3:], fmt.Sprintf("%03d", i))
		copy(val[6:], fmt.Sprintf("%03d", i))
		if _, err := j.AppendWith(context.Background(), []Write{{Key: key, Value: val}}, ev("t", "e", "p")); err != nil {
			t.Fatal(err)
		}
	}
	copy(key, "XXXXXX")
	copy(val, "XXXXXXXXX")
	records := stateOf(t, j).records
	for i := range 200 {
		if got := records[fmt.Sprintf("\x00k/%03d", i)]; got != fmt.Sprintf("value %03d", i) {
			t.Fatalf("record %d = %q", i, got)
		}
	}
}

// An Update does not close the WAL segment: a journal that takes one a
// second (a consumer's offsets, kept in the journal) does not leave a
// segment behind for each.
func TestUpdatesKeepTheSegment(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	first := j.wal.id
	for i := range 50 {
		if _, err := j.Append(context.Background(), ev("t", "e", "p")); err != nil {
			t.Fatal(err)
		}
		if err := j.Update(func(txn *badger.Txn) error { return txn.Set([]byte("\x00u"), []byte(fmt.Sprint(i))) }); err != nil {
			t.Fatal(err)
		}
	}
	if j.wal.id > first+1 {
		t.Fatalf("50 Updates started segments %d to %d", first, j.wal.id)
	}
	want := stateOf(t, j)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{})
	if diff := want.diff(stateOf(t, j)); diff != "" {
		t.Fatal(diff)
	}
}

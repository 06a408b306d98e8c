package offsets

import (
	"bytes"
	"encoding/hex"
	"io"
	"log/slog"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// openStore opens a durable store in dir and closes it at the end of the test.
func openStore(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(dir, Options{Logger: quiet})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func jid(b byte) []byte { return bytes.Repeat([]byte{b}, JournalIDLen) }

func sr(t testing.TB, s string) SliceRange {
	t.Helper()
	r, err := ParseSliceRange(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func key(t testing.TB, consumer string, journal byte, slices string) Key {
	return Key{Consumer: consumer, JournalID: jid(journal), Slices: sr(t, slices)}
}

// dump returns every key and value of the DB, to check that a refused call
// wrote nothing.
func dump(t testing.TB, db *badger.DB) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			out[hex.EncodeToString(it.Item().Key())] = hex.EncodeToString(v)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return out
}

func mustSave(t testing.TB, s *Store, k Key, offset uint64, applied ...Applied) {
	t.Helper()
	if err := s.Save(k, offset, applied); err != nil {
		t.Fatalf("Save(%s, %d): %v", k, offset, err)
	}
}

func mustGet(t testing.TB, s *Store, k Key) Offset {
	t.Helper()
	p, found, err := s.Get(k)
	if err != nil || !found {
		t.Fatalf("Get(%s) = %v, found %v, %v", k, p, found, err)
	}
	return p
}

func mustApplied(t testing.TB, s *Store, consumer string, journal byte, entityType, entityID string) uint64 {
	t.Helper()
	n, err := s.AppliedSeqNr(nil, consumer, jid(journal), entityType, entityID)
	if err != nil {
		t.Fatalf("AppliedSeqNr(%s, %s/%s): %v", consumer, entityType, entityID, err)
	}
	return n
}

package offsets

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// storedSeqNr reads an applied key itself, without the runs.
func storedSeqNr(t *testing.T, s *Store, consumer string, journal byte, id string) uint64 {
	t.Helper()
	var n uint64
	err := s.DB().View(func(txn *badger.Txn) error {
		var err error
		n, err = getSeqNr(txn, appliedKey(consumer, jid(journal), "order", id))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// runKeys counts the runs on disk.
func runKeys(t *testing.T, s *Store) int {
	t.Helper()
	n := 0
	prefix := keyPrefix(kindRun, 0)
	err := s.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// saveRounds saves rounds batches of one event per entity of ids, entity
// i at seqNr round+1, offset counting events, and returns the last offset.
func saveRounds(t *testing.T, s *Store, k Key, ids []string, rounds int) uint64 {
	t.Helper()
	var offset uint64
	for r := range rounds {
		applied := make([]Applied, len(ids))
		for i, id := range ids {
			applied[i] = Applied{"order", id, uint64(r + 1)}
		}
		offset += uint64(len(ids))
		mustSave(t, s, k, offset, applied...)
	}
	return offset
}

func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint("o", i)
	}
	return out
}

// An entity's first save since the last fold goes to its key; the next
// ones to runs, which AppliedSeqNr reads; a fold writes the highest to the
// key and deletes the runs; a reopen folds the runs a crash left.
func TestSaveInRuns(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	k := key(t, "c", 1, "0-1023")
	few := ids(100)
	saveRounds(t, s, k, few, 1)
	if got := storedSeqNr(t, s, "c", 1, "o7"); got != 1 {
		t.Fatalf("after the first save: key of o7 = %d, want 1 (written at once)", got)
	}
	if n := runKeys(t, s); n != 0 {
		t.Fatalf("after the first save: %d runs, want 0", n)
	}
	saveRounds(t, s, k, few, 5) // seqNrs 1..5 again: the highest is 5
	if got, key := mustApplied(t, s, "c", 1, "order", "o7"), storedSeqNr(t, s, "c", 1, "o7"); got != 5 || key != 1 {
		t.Fatalf("after more saves: applied o7 = %d, key %d, want 5 from the runs over key 1", got, key)
	}
	if n := runKeys(t, s); n != 5 {
		t.Fatalf("%d runs, want 5", n)
	}

	// A crash: the store is closed without a fold; the reopen folds.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if n := runKeys(t, s); n != 0 {
		t.Fatalf("after reopening: %d runs, want 0 (folded)", n)
	}
	for _, id := range few {
		if got, key := mustApplied(t, s, "c", 1, "order", id), storedSeqNr(t, s, "c", 1, id); got != 5 || key != 5 {
			t.Fatalf("after reopening: applied %s = %d, key %d, want 5", id, got, key)
		}
	}

	// Enough entries for a fold: 2,700 entities saved 100 times.
	many := ids(2700)
	last := saveRounds(t, s, k, many, 100)
	if n := runKeys(t, s); n >= 99 {
		t.Fatalf("%d runs after %d entries, want a fold to have deleted most", n, 2700*100)
	}
	if p := mustGet(t, s, k); p.Offset != last {
		t.Fatalf("offset %d, want %d", p.Offset, last)
	}
	folded := 0
	for _, id := range many {
		if got := mustApplied(t, s, "c", 1, "order", id); got != 100 {
			t.Fatalf("applied %s = %d, want 100", id, got)
		}
		if storedSeqNr(t, s, "c", 1, id) > 1 {
			folded++
		}
	}
	if folded != len(many) {
		t.Fatalf("%d of %d keys raised by the fold", folded, len(many))
	}
}

// Many entities each saved once between folds are written to their keys
// and never to runs.
func TestSaveManyEntitiesWithoutRuns(t *testing.T) {
	s := openStore(t, t.TempDir())
	k := key(t, "c", 1, "0-1023")
	all := ids(3 * foldEntities)
	for i := 0; i < len(all); i += 1000 {
		batch := all[i:min(i+1000, len(all))]
		saveRounds(t, s, k, batch, 1)
		if n := runKeys(t, s); n != 0 {
			t.Fatalf("after %d entities: %d runs, want none", i+len(batch), n)
		}
	}
	for _, id := range []string{all[0], all[foldEntities], all[len(all)-1]} {
		if got := storedSeqNr(t, s, "c", 1, id); got != 1 {
			t.Fatalf("key of %s = %d, want 1", id, got)
		}
	}
	if n := len(s.runs.saved) + len(s.runs.direct); n >= foldEntities {
		t.Fatalf("%d entities held in memory, want fewer than %d", n, foldEntities)
	}
}

// A fold never lowers a key that another writer raised: SaveTxn of the
// same consumer and journal, or, at open, anyone.
func TestFoldRaisesOnly(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	k := key(t, "c", 1, "0-1023")
	mustSave(t, s, k, 1, Applied{"order", "a", 1}, Applied{"order", "b", 1})
	mustSave(t, s, k, 2, Applied{"order", "a", 2}, Applied{"order", "b", 2}) // in a run
	// SaveTxn names a twice: the highest wins.
	err := s.Update(func(txn *badger.Txn) error {
		return s.SaveTxn(txn, k, 3, []Applied{{"order", "a", 9}, {"order", "a", 3}})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.foldNow(); err != nil {
		t.Fatal(err)
	}
	if a, b := storedSeqNr(t, s, "c", 1, "a"), storedSeqNr(t, s, "c", 1, "b"); a != 9 || b != 2 {
		t.Fatalf("after the fold: keys a = %d, b = %d, want 9 (SaveTxn's) and 2 (the run's)", a, b)
	}

	// A run on disk older than its key (another Store's, or a crash's).
	mustSave(t, s, key(t, "d", 1, "0-1023"), 1, Applied{"order", "a", 1})
	stale := s.runs.key("d", jid(1))
	err = s.DB().Update(func(txn *badger.Txn) error {
		if err := txn.Set(appliedKey("d", jid(1), "order", "a"), encodeSeqNr(7)); err != nil {
			return err
		}
		return txn.Set(stale, encodeRuns([]Applied{{"order", "a", 4}, {"order", "z", 3}})[0])
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if a, z := storedSeqNr(t, s, "d", 1, "a"), storedSeqNr(t, s, "d", 1, "z"); a != 7 || z != 3 {
		t.Fatalf("after reopening: keys a = %d, z = %d, want 7 (kept) and 3 (from the run)", a, z)
	}
}

// ClearApplied forgets what waits in runs too.
func TestClearAppliedClearsRuns(t *testing.T) {
	s := openStore(t, t.TempDir())
	k := key(t, "c", 1, "0-1023")
	saveRounds(t, s, k, ids(10), 3)
	n, err := s.ClearApplied("c", jid(1))
	if err != nil || n != 10 {
		t.Fatalf("ClearApplied = %d, %v, want 10 entities", n, err)
	}
	if got := mustApplied(t, s, "c", 1, "order", "o3"); got != 0 {
		t.Fatalf("applied o3 = %d after ClearApplied, want 0", got)
	}
	if n := runKeys(t, s); n != 0 {
		t.Fatalf("%d runs after ClearApplied, want 0", n)
	}
}

// A damaged run is refused at open, naming it, and the store is not
// changed.
func TestCorruptRunRefused(t *testing.T) {
	good := encodeRuns([]Applied{{"order", "x", 3}})[0]
	for _, c := range []struct {
		name, value, want string // want: in the error, besides "run"
	}{
		{"truncated", string(good[:len(good)-1]), "compressed entries"},
		{"claims 1 GiB of entries", string(binary.AppendUvarint([]byte{compressedRun}, 1<<30)), "of 1073741824 bytes"},
		{"unknown version", string(append([]byte{9}, good[1:]...)), "unknown version"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openStore(t, dir)
			k := key(t, "c", 1, "0-1023")
			saveRounds(t, s, k, ids(3), 2)
			bad := s.runs.key("c", jid(1))
			if err := s.DB().Update(func(txn *badger.Txn) error { return txn.Set(bad, []byte(c.value)) }); err != nil {
				t.Fatal(err)
			}
			before := dump(t, s.DB())
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			_, err := Open(dir, Options{Logger: quiet})
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "run") || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Open with a damaged run = %v, want ErrCorrupt naming the run and %q", err, c.want)
			}
			db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			after := dump(t, db)
			if len(after) != len(before) {
				t.Fatalf("the refused open changed the store: %d keys, had %d", len(after), len(before))
			}
		})
	}
}

// A store written before runs were compressed (format 2, plain runs) is
// read: its runs fold at open, and the first run written marks it format
// 3, which those builds refuse.
func TestPlainRunsOfAnEarlierBuildRead(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	k := key(t, "c", 1, "0-1023")
	mustSave(t, s, k, 1, Applied{"order", "a", 1}, Applied{"order", "b", 1})
	plain := []byte{formatVersion}
	for _, a := range []Applied{{"order", "a", 5}, {"order", "b", 2}} {
		plain = binary.AppendUvarint(appendString(appendString(plain, a.EntityType), a.EntityID), a.SeqNr)
	}
	run := s.runs.key("c", jid(1))
	if err := s.DB().Update(func(txn *badger.Txn) error {
		if err := txn.Set(metaFormatKey, []byte{plainRunsFormat}); err != nil {
			return err
		}
		return txn.Set(run, plain)
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	for id, want := range map[string]uint64{"a": 5, "b": 2} {
		if got, err := s.AppliedSeqNr(nil, "c", jid(1), "order", id); err != nil || got != want {
			t.Fatalf("applied order/%s = %d, %v; want %d from the plain run", id, got, err, want)
		}
	}
	if f := storedFormat(t, s); f != plainRunsFormat {
		t.Fatalf("format %d before a run is written, want %d", f, plainRunsFormat)
	}
	mustSave(t, s, k, 2, Applied{"order", "a", 6})
	mustSave(t, s, k, 3, Applied{"order", "a", 7})
	if f := storedFormat(t, s); f != runsFormat {
		t.Fatalf("format %d after a run, want %d", f, runsFormat)
	}
}

// A store stays format 1, which older builds read, until its first run
// marks it runsFormat, which they refuse.
func TestFormatMarkedByTheFirstRun(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	k := key(t, "c", 1, "0-1023")
	mustSave(t, s, k, 1, Applied{"order", "a", 1})
	if err := s.Update(func(txn *badger.Txn) error { return s.SaveTxn(txn, k, 2, []Applied{{"order", "b", 1}}) }); err != nil {
		t.Fatal(err)
	}
	if f := storedFormat(t, s); f != formatVersion {
		t.Fatalf("format %d before any run, want %d", f, formatVersion)
	}
	mustSave(t, s, k, 3, Applied{"order", "a", 2})
	if f := storedFormat(t, s); f != runsFormat {
		t.Fatalf("format %d after a run, want %d", f, runsFormat)
	}
}

// storedFormat is the value of the store's format key.
func storedFormat(t *testing.T, s *Store) byte {
	t.Helper()
	var f []byte
	err := s.DB().View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaFormatKey)
		if err != nil {
			return err
		}
		f, err = item.ValueCopy(nil)
		return err
	})
	if err != nil || len(f) != 1 {
		t.Fatalf("format %x, %v", f, err)
	}
	return f[0]
}

// failingDB is a Shared whose Updates fail while fail is set.
type failingDB struct {
	ownDB
	fail *bool
}

func (f failingDB) Update(fn func(txn *badger.Txn) error) error {
	if *f.fail {
		return errors.New("disk full")
	}
	return f.ownDB.Update(fn)
}

// A fold that fails keeps what waits in runs: AppliedSeqNr still returns
// it, and the next fold writes it.
func TestFailedFoldKeepsRuns(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fail := false
	s, err := Wrap(failingDB{ownDB{db}, &fail}, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	k := key(t, "c", 1, "0-1023")
	saveRounds(t, s, k, ids(20), 3)
	fail = true
	if err := s.foldNow(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("fold on a failing DB = %v, want its error", err)
	}
	fail = false
	if got, key := mustApplied(t, s, "c", 1, "order", "o4"), storedSeqNr(t, s, "c", 1, "o4"); got != 3 || key != 1 {
		t.Fatalf("after the failed fold: applied o4 = %d, key %d, want 3 over key 1", got, key)
	}
	if err := s.foldNow(); err != nil {
		t.Fatal(err)
	}
	if key, n := storedSeqNr(t, s, "c", 1, "o4"), runKeys(t, s); key != 3 || n != 0 {
		t.Fatalf("after the next fold: key o4 = %d, %d runs, want 3 and none", key, n)
	}
}

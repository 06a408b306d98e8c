package journal

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Journals of the older formats, as the builds that wrote them left them:
// format 1 (event blocks inline in Badger), format 2 (blocks of format 1
// in the WAL segments, 401ec47) and format 3 (one index key per event,
// be440ad). Each holds 3,000 events of 20 entities
// appended 10 at a time, each append with the record \x00fixture/last; one
// closed cleanly, one left as a crash leaves it (its WAL not yet replayed).
// They open, are upgraded, read whole, take appends, and retention deletes
// their blocks with the rest. Their index is converted to runs: one per
// entity here.
func TestOpensOlderFormats(t *testing.T) {
	for _, name := range []string{"format1-closed", "format1-killed", "format2-closed", "format2-killed", "format3-closed", "format3-killed"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			untar(t, filepath.Join("testdata", name+".tar.gz"), dir)
			j := open(t, dir, Options{})
			checkFixture(t, j, 3000)
			var version uint64
			if err := j.View(func(txn *badger.Txn) error {
				v, err := getValue(txn, keyVersion)
				version = readU64(v)
				return err
			}); err != nil || version != formatVersion {
				t.Fatalf("format version %d (%v), want it upgraded to %d", version, err, formatVersion)
			}
			if old, runs := indexKeys(t, j); old != 0 || runs != 20 {
				t.Fatalf("after the upgrade: %d keys of the old index, %d runs; want 0 and 20", old, runs)
			}
			for i := range 10 {
				evs := make([]*streamdv1.Event, 10)
				for k := range evs {
					n := 3000 + i*10 + k
					evs[k] = &streamdv1.Event{EntityType: "acct", EntityId: fmt.Sprintf("a%d", n%20), EventType: "Set", Payload: fmt.Appendf(nil, "payload %d", n)}
				}
				if _, err := j.Append(context.Background(), evs...); err != nil {
					t.Fatal(err)
				}
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			j = open(t, dir, Options{})
			checkFixture(t, j, 3100)
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			j = open(t, dir, Options{RetentionMaxBytes: 2 << 10})
			if _, err := j.EnforceRetention(); err != nil {
				t.Fatal(err)
			}
			info := j.Info()
			if info.FirstOffset <= 3000 {
				t.Fatalf("retention kept %d events from offset %d, want only some of the 100 new ones", info.Events, info.FirstOffset)
			}
			if _, err := j.Read(1, 1, nil); !errors.As(err, new(*OutOfRangeError)) {
				t.Fatalf("read of a deleted block = %v, want an OutOfRangeError", err)
			}
		})
	}
}

// An upgrade cut short by a crash is made again at the next open: runs
// written before the format version changed are written anew, and old
// index keys left after it are removed.
func TestUpgradeCutShort(t *testing.T) {
	dir := t.TempDir()
	untar(t, filepath.Join("testdata", "format3-closed.tar.gz"), dir)
	// Before the version changed: a run that does not match the old index.
	db := openBadger(t, dir)
	if err := db.Update(func(txn *badger.Txn) error {
		return txn.Set(runKey(EntityKey("acct", "a7"), 140), encodeRun([]uint64{2788, 2808}))
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	j := open(t, dir, Options{})
	checkFixture(t, j, 3000)
	if old, runs := indexKeys(t, j); old != 0 || runs != 20 {
		t.Fatalf("%d keys of the old index, %d runs; want 0 and 20", old, runs)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	// After it: a key of the old index.
	db = openBadger(t, dir)
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(indexKey(EntityKey("acct", "a7"), 1), u64(8)) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{})
	checkFixture(t, j, 3000)
	if old, runs := indexKeys(t, j); old != 0 || runs != 20 {
		t.Fatalf("%d keys of the old index, %d runs; want 0 and 20", old, runs)
	}
}

func openBadger(t *testing.T, dir string) *badger.DB {
	t.Helper()
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// indexKeys counts the keys of the index of formats 1 to 3 and the runs.
func indexKeys(t *testing.T, j *Journal) (old, runs int) {
	t.Helper()
	err := j.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{PrefetchValues: false})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			switch k := it.Item().Key(); {
			case bytes.HasPrefix(k, prefixIndex):
				old++
			case bytes.HasPrefix(k, prefixRun):
				runs++
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return old, runs
}

// checkFixture checks the fixture's events (and n-3000 appended since) and
// its record.
func checkFixture(t *testing.T, j *Journal, n int) {
	t.Helper()
	all := readAll(t, j)
	if len(all) != n {
		t.Fatalf("%d events, want %d", len(all), n)
	}
	for i, e := range all {
		if e.Offset != uint64(i+1) || string(e.Payload) != fmt.Sprintf("payload %d", i) || e.EntityId != fmt.Sprintf("a%d", i%20) {
			t.Fatalf("event %d: %v", i, e)
		}
	}
	evs, err := j.ReadEntity("acct", "a7", 1, n, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range evs {
		if e.SeqNr != uint64(i+1) || e.Offset != uint64(8+20*i) {
			t.Fatalf("a7's event %d: seqNr %d offset %d", i, e.SeqNr, e.Offset)
		}
	}
	if len(evs) != n/20 {
		t.Fatalf("a7 has %d events, want %d", len(evs), n/20)
	}
	if got := stateOf(t, j).records["\x00fixture/last"]; got != "299" {
		t.Fatalf("record \\x00fixture/last = %q, want 299", got)
	}
}

// untar extracts a .tar.gz into dir, keeping runs of zeros as holes (the
// fixtures hold Badger's large sparse files).
func untar(t *testing.T, path, dir string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o750); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg, tar.TypeGNUSparse:
			if err := writeSparse(target, tr, h.Size); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func writeSparse(path string, r io.Reader, size int64) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	buf, zero := make([]byte, 64<<10), make([]byte, 64<<10)
	var off int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 && !bytes.Equal(buf[:n], zero[:n]) {
			if _, werr := out.WriteAt(buf[:n], off); werr != nil {
				return errors.Join(werr, out.Close())
			}
		}
		off += int64(n)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return errors.Join(err, out.Close())
		}
	}
	return errors.Join(out.Truncate(size), out.Close())
}

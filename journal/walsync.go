package journal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// walSync makes committed groups durable, closing a gap that Badger's
// DB.Sync leaves. DB.Sync fsyncs the WAL of the active memtable (and the
// value log) only. When a write finds the active memtable full, Badger
// retires it (to flush it to a table in the background) and starts the
// next one; a group committed to the retired memtable before the journal's
// fsync sits in the retired memtable's WAL, which Badger fsyncs only once
// that table is written. With the next group committed (and fsynced) in
// the new memtable, an OS crash could lose an acknowledged group.
//
// Badger names memtable WALs <fid>.mem with fids rising by one. walSync
// keeps the newest one open and follows the next: the writer calls follow
// after each commit (one commit retires at most one memtable), and sync
// follows again after DB.Sync, then fsyncs every WAL retired since the last
// sync through the descriptor it kept (valid even if Badger has deleted the
// file since, which it does only after writing the memtable to a table).
type walSync struct {
	dir string

	mu      sync.Mutex
	fid     int        // the newest memtable WAL seen
	active  *os.File   // open on fid's WAL
	retired []*os.File // WALs retired since the last sync
}

func walPath(dir string, fid int) string {
	return filepath.Join(dir, fmt.Sprintf("%05d.mem", fid))
}

// newestWAL is the highest memtable WAL fid in dir, -1 if there is none.
func newestWAL(dir string) (int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return -1, err
	}
	fid := -1
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".mem"); ok {
			if n, err := strconv.Atoi(name); err == nil && n > fid {
				fid = n
			}
		}
	}
	return fid, nil
}

// openWALSync finds the active memtable WAL of the Badger DB just opened in
// dir: the newest one.
func openWALSync(dir string) (*walSync, error) {
	fid, err := newestWAL(dir)
	if err != nil {
		return nil, err
	}
	if fid < 0 {
		return nil, fmt.Errorf("no memtable WAL (*.mem) in %s", dir)
	}
	f, err := os.Open(walPath(dir, fid))
	if err != nil {
		return nil, err
	}
	return &walSync{dir: dir, fid: fid, active: f}, nil
}

// follow notes the memtables Badger has started since the last call.
func (w *walSync) follow() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		next, err := os.Open(walPath(w.dir, w.fid+1))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("open memtable WAL: %w", err)
		}
		w.retired = append(w.retired, w.active)
		w.active, w.fid = next, w.fid+1
	}
}

// sync makes durable everything committed to Badger before it was called.
func (w *walSync) sync(db *badger.DB) error {
	// DB.Sync first: a memtable retired after it has been fsynced by it,
	// one retired before is found by follow.
	if err := db.Sync(); err != nil {
		return err
	}
	if err := w.follow(); err != nil {
		return err
	}
	w.mu.Lock()
	retired := w.retired
	w.retired = nil
	w.mu.Unlock()
	var errs []error
	for _, f := range retired {
		if err := f.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("fsync retired memtable WAL %s: %w", f.Name(), err))
		}
		f.Close()
	}
	return errors.Join(errs...)
}

func (w *walSync) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.retired {
		f.Close()
	}
	w.active.Close()
}

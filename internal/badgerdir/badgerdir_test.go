package badgerdir

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// A memtable or value log left empty by a crash: Badger refuses the
// directory without the repair and opens it, with its data, after it.
func TestRemoveEmptyLogs(t *testing.T) {
	for _, name := range []string{"00099.mem", "000099.vlog"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			opts := badger.DefaultOptions(dir).WithLogger(nil).WithMemTableSize(8 << 20)
			db, err := badger.Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("k"), []byte("v")) }); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			empty := filepath.Join(dir, name)
			if err := os.WriteFile(empty, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if db, err := badger.Open(opts); err == nil {
				db.Close()
				t.Fatal("Badger opened a directory with an empty log: the repair is no longer needed")
			}
			// The failed Open may have sized the file; as the crash left it:
			if err := os.WriteFile(empty, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := RemoveEmptyLogs(dir); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(empty); !os.IsNotExist(err) {
				t.Fatalf("empty log still there: %v", err)
			}
			db, err = badger.Open(opts)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			err = db.View(func(txn *badger.Txn) error {
				item, err := txn.Get([]byte("k"))
				if err != nil {
					return err
				}
				v, err := item.ValueCopy(nil)
				if string(v) != "v" {
					t.Errorf("k = %q", v)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	if err := RemoveEmptyLogs(filepath.Join(t.TempDir(), "missing")); err != nil {
		t.Fatalf("a directory not made yet: %v", err)
	}
}

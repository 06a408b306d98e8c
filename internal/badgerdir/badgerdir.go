// Package badgerdir repairs what a killed process can leave in a Badger
// directory and Badger v4 then refuses to open.
package badgerdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// RemoveEmptyMemtables removes the memtable logs (<fid>.mem) of zero bytes
// in dir. Badger creates a memtable's log and then sizes it; a process
// killed in between leaves an empty file, which holds nothing, but which
// Badger's Open refuses ("while opening fid: N err: Create a new file"), so
// the directory could never be opened again: dgraph-io/badger#2207, open
// in v4.9.6 (a fix, #2331, also skips empty value logs, which Badger
// creates when one fills or a directory is new; not handled here).
func RemoveEmptyMemtables(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".mem") || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if info.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("remove the empty memtable log a crash left: %w", err)
		}
	}
	return nil
}

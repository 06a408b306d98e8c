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

// RemoveEmptyLogs removes the memtable logs (<fid>.mem) and value logs
// (<fid>.vlog) of zero bytes in dir. Badger creates such a log and then
// sizes it (a value log at every Open); a process killed in between leaves
// an empty file, which holds nothing, but which Badger's Open refuses
// ("while opening fid: N err: Create a new file", "Open existing file: ...
// Create a new file"), so the directory could never be opened again:
// dgraph-io/badger#2207, open in v4.9.6.
func RemoveEmptyLogs(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".mem") && !strings.HasSuffix(name, ".vlog") || !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		if info.Size() != 0 {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("remove the empty Badger log a crash left: %w", err)
		}
	}
	return nil
}

package journal

import (
	"strings"
	"testing"
)

// A memtable too small for Badger is refused by Validate with the field's
// name, not by Badger at open; the smallest it accepts opens.
func TestMemTableSizeBounds(t *testing.T) {
	for _, tc := range []struct {
		size int64
		ok   bool
	}{
		{-1, false},
		{1 << 20, false},
		{minMemTableSize - 1, false},
		{minMemTableSize, true},
	} {
		j, err := Open(t.TempDir(), Options{MemTableSize: tc.size})
		if tc.ok {
			if err != nil {
				t.Errorf("MemTableSize %d: %v", tc.size, err)
				continue
			}
			if err := j.Close(); err != nil {
				t.Errorf("MemTableSize %d: close: %v", tc.size, err)
			}
			continue
		}
		if err == nil {
			j.Close()
			t.Errorf("MemTableSize %d: Open accepted it", tc.size)
		} else if !strings.Contains(err.Error(), "Options.MemTableSize") {
			t.Errorf("MemTableSize %d: error does not name the field: %v", tc.size, err)
		}
	}
}

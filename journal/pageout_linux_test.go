package journal

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Pages of Badger's tables that reads made resident go once paged out.
func TestPageOutTables(t *testing.T) {
	// Restored after the journals below are closed (cleanups run last
	// first), so that no pageoutLoop reads it meanwhile.
	was := pageoutInterval
	t.Cleanup(func() { pageoutInterval = was })
	pageoutInterval = time.Hour // only the calls below
	dir := t.TempDir()
	j := open(t, dir, Options{})
	appendRound(t, j, 0, 20000)
	if err := j.Close(); err != nil { // writes the memtable to a table
		t.Fatal(err)
	}
	j = open(t, dir, Options{})
	for k := range 3 {
		for e := range 50 {
			if _, err := j.ReadEntity(fmt.Sprint("type", k), fmt.Sprint("e", e), 1, 1<<20, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := tablesResident(t, dir)
	if before == 0 {
		t.Fatal("reading the index made no page of Badger's tables resident")
	}
	if err := pageOutTables(dir); err != nil {
		t.Fatal(err)
	}
	if after := tablesResident(t, dir); after > before/4 {
		t.Fatalf("tables resident: %d KiB before paging out, %d KiB after", before, after)
	}
}

// tablesResident sums the resident KiB of the .sst files of dir mapped
// into this process.
func tablesResident(t *testing.T, dir string) (kib int) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	prefix := filepath.Clean(dir) + "/"
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			in = len(fields) >= 6 && strings.HasPrefix(fields[5], prefix) && strings.HasSuffix(fields[5], ".sst")
		case in && fields[0] == "Rss:":
			n, _ := strconv.Atoi(fields[1])
			kib += n
		}
	}
	return kib
}

package diskspace

import (
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A sparse file counts what is written in it, not its length: Badger's
// value logs are 2 GiB long from their first event.
func TestUsedCountsAllocatedBlocks(t *testing.T) {
	dir := t.TempDir()
	sparse := filepath.Join(dir, "000001.vlog")
	f, err := os.Create(sparse)
	if err != nil {
		t.Fatal(err)
	}
	const length, written = 1 << 30, 4096
	if err := f.Truncate(length); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(randomBytes(t, written), length-written); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "wal"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "wal", "000001.wal"), randomBytes(t, 100), 0o644); err != nil {
		t.Fatal(err)
	}

	got, err := Used(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Each file takes at least what is written in it, in whole blocks of
	// the file system; far less than the sparse file's length.
	if got < written+100 || got >= 1<<20 {
		t.Errorf("Used = %d bytes for %d written in a sparse file of %d and 100 in another: want at least %d, well under 1 MiB",
			got, written, length, written+100)
	}
}

func TestUsedOfAMissingDirIsZero(t *testing.T) {
	got, err := Used(filepath.Join(t.TempDir(), "absent"))
	if got != 0 || err != nil {
		t.Errorf("Used of a missing dir = %d, %v; want 0, nil", got, err)
	}
}

func TestFreeAndSize(t *testing.T) {
	dir := t.TempDir()
	free, err := Free(dir)
	if err != nil {
		t.Fatal(err)
	}
	size, err := Size(dir)
	if err != nil {
		t.Fatal(err)
	}
	if free <= 0 || size < free {
		t.Errorf("Free %d, Size %d: want 0 < free <= size", free, size)
	}

	absent := filepath.Join(dir, "absent")
	for name, f := range map[string]func(string) (int64, error){"Free": Free, "Size": Size} {
		n, err := f(absent)
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "diskspace: file system of "+absent) || n != 0 {
			t.Errorf("%s of a missing dir = %d, %v; want 0 and an error naming it that matches fs.ErrNotExist", name, n, err)
		}
	}
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

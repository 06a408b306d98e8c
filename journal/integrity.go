package journal

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/streamd/streamd/internal/diskspace"
)

// checkTables refuses to open a directory holding a Badger table whose
// footer lengths point outside the file (a truncated table): Badger would
// panic in a goroutine while opening it, taking the process down. The
// checksums themselves Badger verifies.
func checkTables(dir string) error {
	tables, err := filepath.Glob(filepath.Join(dir, "*.sst"))
	if err != nil {
		return err
	}
	for _, path := range tables {
		if err := checkTableFooter(path); err != nil {
			return fmt.Errorf("%w: table %s: %v", ErrCorrupt, filepath.Base(path), err)
		}
	}
	return nil
}

// checkTableFooter checks the layout Badger reads from a table's end:
// ... index | index length (4) | checksum | checksum length (4).
func checkTableFooter(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	u32At := func(pos int64) (int64, error) {
		var b [4]byte
		if pos < 0 || pos+4 > size {
			return 0, fmt.Errorf("%d bytes: too short (truncated?)", size)
		}
		if _, err := f.ReadAt(b[:], pos); err != nil {
			return 0, err
		}
		return int64(binary.BigEndian.Uint32(b[:])), nil
	}
	checksumLen, err := u32At(size - 4)
	if err != nil {
		return err
	}
	indexLenPos := size - 4 - checksumLen - 4
	indexLen, err := u32At(indexLenPos)
	if err != nil {
		return fmt.Errorf("checksum length %d does not fit %d bytes (truncated?)", checksumLen, size)
	}
	if indexLen > indexLenPos {
		return fmt.Errorf("index length %d does not fit %d bytes (truncated?)", indexLen, size)
	}
	return nil
}

// The identity file is the journal's own record, outside Badger, of its id
// and of the last offset it held when it was closed. Badger's own files
// cannot tell a lost MANIFEST from a new journal: Badger then opens empty (or
// without the tables the MANIFEST no longer names, and deletes them), and
// the journal would start again, reusing offsets consumers have seen. A
// mismatch refuses to open instead.
const identityFile = "STREAMD-JOURNAL"

type identity struct {
	id   []byte
	last uint64
}

func readIdentity(dir string) (identity, bool, error) {
	raw, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return identity{}, false, nil
	}
	if err != nil {
		return identity{}, false, err
	}
	var id identity
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "id":
			id.id, err = hex.DecodeString(v)
		case "last":
			id.last, err = strconv.ParseUint(v, 10, 64)
		}
		if err != nil {
			return identity{}, false, fmt.Errorf("%w: %s: line %q: %v", ErrCorrupt, identityFile, line, err)
		}
	}
	if len(id.id) != 16 {
		return identity{}, false, fmt.Errorf("%w: %s holds no journal id", ErrCorrupt, identityFile)
	}
	return id, true, nil
}

// writeIdentity replaces the identity file atomically and durably.
func writeIdentity(dir string, id identity) error {
	return replaceFile(filepath.Join(dir, identityFile),
		fmt.Sprintf("# streamd journal: its id and the last offset it held when closed\nid=%x\nlast=%d\n", id.id, id.last))
}

// replaceFile replaces the file at path with content, atomically and
// durably: a temporary file synced, renamed over path, and the directory
// synced.
func replaceFile(path, content string) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

// checkIdentity compares what Badger holds with the identity file, and
// records the identity when there is none yet.
func (j *Journal) checkIdentity(dir string) error {
	rec, found, err := readIdentity(dir)
	if err != nil {
		return fmt.Errorf("journal: %s: %w", dir, err)
	}
	last := j.durable.Load()
	if !found {
		return writeIdentity(dir, identity{id: j.id, last: last})
	}
	switch {
	case !bytes.Equal(rec.id, j.id):
		return fmt.Errorf("%w: %s: Badger holds journal %x but %s says %x: Badger's MANIFEST was lost or replaced; restore the directory from a backup, or move it away to start a new journal",
			ErrCorrupt, dir, j.id, identityFile, rec.id)
	case last < rec.last:
		return fmt.Errorf("%w: %s: Badger holds offsets up to %d but the journal held %d when it was closed: tables were lost (a damaged MANIFEST?); restore the directory from a backup",
			ErrCorrupt, dir, last, rec.last)
	}
	return nil
}

// checkSpace refuses a group commit while the filesystem has less free
// space than Options.MinFreeBytes (one statfs, about a microsecond).
func (j *Journal) checkSpace() error {
	free, err := diskspace.Free(j.dir)
	if err != nil {
		return nil // unknown: let Badger try; its errors are reported
	}
	if free < j.opts.MinFreeBytes {
		return fmt.Errorf("%w: %d MiB free on the filesystem of %s, %d MiB kept in reserve; free some space (appends resume by themselves)",
			ErrNoSpace, free>>20, j.dir, j.opts.MinFreeBytes>>20)
	}
	return nil
}

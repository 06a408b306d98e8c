package diskspace

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
)

// Used returns the bytes the regular files under dir take on disk: their
// allocated blocks, or their lengths where the platform gives no blocks.
// Files removed while it walks (compaction, retention) count 0; a dir that
// does not exist takes 0 bytes.
func Used(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		fi, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += int64(st.Blocks) * 512 // st_blocks counts 512-byte units
		} else {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("diskspace: bytes used under %s: %w", dir, err)
	}
	return n, nil
}

// Free returns the bytes an unprivileged process may still write on the
// file system of dir (its available blocks).
func Free(dir string) (int64, error) {
	st, err := statfs(dir)
	return int64(st.Bavail) * int64(st.Bsize), err
}

// Size returns the size in bytes of the file system of dir.
func Size(dir string) (int64, error) {
	st, err := statfs(dir)
	return int64(st.Blocks) * int64(st.Bsize), err
}

func statfs(dir string) (syscall.Statfs_t, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return syscall.Statfs_t{}, fmt.Errorf("diskspace: file system of %s: %w", dir, err)
	}
	return st, nil
}

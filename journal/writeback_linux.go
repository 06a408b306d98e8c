package journal

import (
	"os"

	"golang.org/x/sys/unix"
)

// writeBack writes f's dirty pages from off to off+n to disk and waits for
// them, without the file's metadata: in pieces, a sync of many megabytes
// does not hold up for as long the small WAL writes queued behind it.
func writeBack(f *os.File, off, n int64) error {
	return unix.SyncFileRange(int(f.Fd()), off, n,
		unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
}

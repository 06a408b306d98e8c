package journal

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// pageoutInterval is how often pageoutLoop runs (a variable for a test).
var pageoutInterval = time.Second

// pageoutLoop pages Badger's tables out every pageoutInterval
// (pageOutTables).
func (j *Journal) pageoutLoop() {
	defer close(j.pageoutDone)
	t := time.NewTicker(pageoutInterval)
	defer t.Stop()
	for {
		select {
		case <-j.stopBackground:
			return
		case <-t.C:
		}
		if err := pageOutTables(j.dir); err != nil {
			j.opts.Logger.Info("journal: not paging out Badger's tables; its memory maps stay resident", "err", err)
			<-j.stopBackground
			return
		}
	}
}

// pageOutTables tells the kernel that the pages of Badger's tables mapped
// into this process, from the journal in dir, may go (MADV_PAGEOUT).
//
// Badger maps every table into memory and reads it through the map: a
// table it wrote or compacted stays resident until it is deleted, so the
// resident set would grow with the index (about 16 bytes per event), the
// one part of the journal's memory that configuration does not bound. The
// pages are clean (Badger syncs a table when it writes it, and never
// changes it) and come back from the file when read again; the block
// cache keeps the blocks read often. A range unmapped meanwhile is
// skipped (ENOMEM); one reused for anonymous memory is not harmed
// (MADV_PAGEOUT never changes contents). It returns errPageOutUnsupported
// on a kernel without MADV_PAGEOUT (before Linux 5.4).
func pageOutTables(dir string) error {
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return err
	}
	prefix := filepath.Clean(dir) + string(filepath.Separator)
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// start-end perms offset dev inode path
		f := strings.Fields(sc.Text())
		if len(f) < 6 || !strings.HasPrefix(f[5], prefix) || !strings.HasSuffix(f[5], ".sst") {
			continue
		}
		start, end, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		lo, err1 := strconv.ParseUint(start, 16, 64)
		hi, err2 := strconv.ParseUint(end, 16, 64)
		if err1 != nil || err2 != nil || hi <= lo {
			continue
		}
		_, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(lo), uintptr(hi-lo), unix.MADV_PAGEOUT)
		switch {
		case errno == 0, errno == syscall.ENOMEM:
		case errno == syscall.EINVAL:
			return errPageOutUnsupported
		default:
			return errno
		}
	}
	return sc.Err()
}

var errPageOutUnsupported = errors.New("madvise MADV_PAGEOUT is not supported (Linux 5.4 or later)")

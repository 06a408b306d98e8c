package main

import (
	"fmt"
	"log/slog"

	"github.com/streamd/streamd/internal/bytesize"
	"github.com/streamd/streamd/internal/diskspace"
	"github.com/streamd/streamd/journal"
)

// minFreeBytesFlag refuses a --min-free-bytes below what keeps Badger's
// memory-mapped writes from meeting a full disk.
func minFreeBytesFlag(minFree, memTableSize int64) error {
	least := journal.Options{MemTableSize: memTableSize}.LeastMinFreeBytes()
	if minFree == 0 || minFree >= least {
		return nil
	}
	memtable := "the default --memtable-size"
	if memTableSize != 0 {
		memtable = fmt.Sprintf("--memtable-size %v", bytesize.Size(memTableSize))
	}
	return fmt.Errorf("--min-free-bytes %v: want 0 (the default) or at least %d (%s) with %s: Badger writes through memory maps, where a full disk crashes streamd (SIGBUS); raise it, or lower --memtable-size",
		bytesize.Size(minFree), least, mib(least), memtable)
}

// checkFreeSpace says at Error level when the journal's filesystem starts
// with less free space than the journal keeps: publishes are refused until
// space is freed, reads are served.
func checkFreeSpace(log *slog.Logger, dir string, o journal.Options) {
	free, err := diskspace.Free(dir)
	if err != nil {
		return // unknown: the journal's check lets appends through too
	}
	reserve := o.EffectiveMinFreeBytes()
	if free >= reserve {
		return
	}
	log.Error("free disk space is below the reserve: publishes are refused until space is freed (reads and streams are served); free space, or lower --min-free-bytes",
		"data_dir", dir, "free", mib(free), "min_free_bytes", reserve, "least_min_free_bytes", o.LeastMinFreeBytes())
}

// mib shows a byte count in MiB, rounded up.
func mib(n int64) string { return fmt.Sprintf("%d MiB", (n+1<<20-1)>>20) }

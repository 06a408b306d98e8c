//go:build !linux

package journal

import "errors"

// pageoutLoop is Linux-only (see pageout_linux.go).
func (j *Journal) pageoutLoop() { close(j.pageoutDone) }

// pageOutTables is Linux-only.
func pageOutTables(string) error { return errPageOutUnsupported }

var errPageOutUnsupported = errors.New("paging out Badger's tables is supported on Linux only")

//go:build !linux

package main

import "os"

// fdatasync is an fsync where fdatasync is not offered (as in the journal).
func fdatasync(f *os.File) error { return f.Sync() }

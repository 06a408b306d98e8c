//go:build !linux

package datasync

import "os"

// File makes f's data durable: an fsync where fdatasync is not offered.
func File(f *os.File) error { return f.Sync() }

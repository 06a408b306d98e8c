package datasync

import (
	"os"

	"golang.org/x/sys/unix"
)

// File makes f's data durable without its timestamps.
func File(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync makes f's data durable without its timestamps, as the
// journal's log stage does.
func fdatasync(f *os.File) error { return unix.Fdatasync(int(f.Fd())) }

package main

import (
	"time"

	"golang.org/x/sys/unix"
)

// preciseSleep sleeps for d holding its goroutine's thread: time.Sleep can
// wake a millisecond late in a process with nothing else to do, nanosleep
// wakes at the timer's precision.
func preciseSleep(d time.Duration) {
	ts := unix.NsecToTimespec(int64(d))
	_ = unix.Nanosleep(&ts, nil)
}

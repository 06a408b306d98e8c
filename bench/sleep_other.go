//go:build !linux

package main

import "time"

// preciseSleep sleeps for d (nanosleep on Linux).
func preciseSleep(d time.Duration) { time.Sleep(d) }

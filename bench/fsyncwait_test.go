package main

import (
	"slices"
	"testing"
	"time"
)

// An event waits for the first fdatasync begun after it arrived, not for
// the one running when it arrived: a slow fdatasync holds the events that
// arrive during it until the next one ends.
func TestEventWaits(t *testing.T) {
	ms := time.Millisecond
	syncs := []span{{0, 1 * ms}, {1 * ms, 2 * ms}, {2 * ms, 10 * ms}, {10 * ms, 11 * ms}}
	got := eventWaits(syncs, 1000, 5*ms)
	want := []int64{int64(1 * ms), int64(1 * ms), int64(8 * ms), int64(8 * ms), int64(7 * ms)}
	if !slices.Equal(got, want) {
		t.Fatalf("waits %v, want %v", got, want)
	}
	// Events after the last fdatasync began are not counted.
	if got := eventWaits(syncs, 1000, 20*ms); len(got) != 11 {
		t.Fatalf("%d waits over 20 ms, want the 11 events before the last fdatasync began", len(got))
	}
}

func TestFsyncWaitRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{{"-rate", "0"}, {"-frame", "-1"}, {"-interval", "-1ms"}, {"-duration", "0s"}} {
		if err := fsyncWaitMain(args); err == nil {
			t.Errorf("fsync-wait %v: no error", args)
		}
	}
}

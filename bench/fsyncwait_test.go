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

// The loop writes and fdatasyncs at most once per interval, in order, and
// the file it writes is the size it was filled to.
func TestFsyncFileLoop(t *testing.T) {
	f, err := newFsyncFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer f.remove()
	syncs, err := f.loop(50*time.Millisecond, 5*time.Millisecond, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if len(syncs) == 0 || len(syncs) > 11 {
		t.Fatalf("%d fdatasyncs in 50ms at most one per 5ms", len(syncs))
	}
	for i, s := range syncs {
		if s.end < s.start || i > 0 && s.start < syncs[i-1].start+5*time.Millisecond {
			t.Fatalf("fdatasync %d %v after %v: not at least 5ms after the one before, or ends before it began", i, s, syncs[max(i-1, 0)])
		}
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != fsyncFileSize {
		t.Fatalf("file size %d, want %d", st.Size(), fsyncFileSize)
	}
}

package journal

import (
	"testing"
)

// More segments than maxOpenSegments read back whole: the oldest files
// are closed and opened again as reads need them.
func TestReadsManySegments(t *testing.T) {
	j := open(t, t.TempDir(), Options{segmentBytes: 64 << 10})
	appendRound(t, j, 0, 2*maxOpenSegments*70) // 1 KiB events: about 2 × maxOpenSegments segments
	if ids, _ := segments(j.wal.dir); len(ids) <= maxOpenSegments {
		t.Fatalf("%d segments, want more than %d", len(ids), maxOpenSegments)
	}
	for range 2 {
		if all := readAll(t, j); len(all) != 2*maxOpenSegments*70 {
			t.Fatalf("read %d events", len(all))
		}
	}
	if n := len(j.segments.files); n > maxOpenSegments {
		t.Fatalf("%d segment files open", n)
	}
}

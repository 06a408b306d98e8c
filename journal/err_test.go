package journal

import (
	"context"
	"errors"
	"testing"
)

// Err is nil while the journal works and ErrFailed once a WAL write failed.
func TestErr(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	appendRound(t, j, 0, 10)
	if err := j.Err(); err != nil {
		t.Fatalf("Err of a working journal = %v", err)
	}
	j.wal.f.Close() // the next write fails
	if _, err := j.Append(context.Background(), ev("car", "c1", "x")); !errors.Is(err, ErrFailed) {
		t.Fatalf("append after the WAL broke = %v, want ErrFailed", err)
	}
	if err := j.Err(); !errors.Is(err, ErrFailed) {
		t.Fatalf("Err after the WAL broke = %v, want ErrFailed", err)
	}
}

package journal

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestAppendRefusedWithoutFreeSpace(t *testing.T) {
	j := open(t, t.TempDir(), Options{MinFreeBytes: 1 << 62})
	_, err := j.Append(context.Background(), ev("car", "c1", "x"))
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "MiB free") {
		t.Fatalf("Append = %v, want ErrNoSpace saying how much is free", err)
	}
	if j.LastOffset() != 0 {
		t.Fatalf("a refused append wrote offset %d", j.LastOffset())
	}
	if err := (Options{MinFreeBytes: -1}).Validate(); err == nil {
		t.Fatal("a negative MinFreeBytes was accepted")
	}
}

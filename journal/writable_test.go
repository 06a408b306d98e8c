package journal

import (
	"context"
	"errors"
	"fmt"
	"testing"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// idInSlice returns an entity id whose slice is even (want true) or odd.
func idInSlice(t *testing.T, even bool) string {
	t.Helper()
	for i := range 1000 {
		id := fmt.Sprint("e", i)
		if (SliceOf(id)%2 == 0) == even {
			return id
		}
	}
	t.Fatal("no id found")
	return ""
}

// SetWritable refuses events written here in the slices it leaves out,
// alone (SubmitEach) or with their whole append; copies carrying their
// origin seqNr pass; nil lifts the limit.
func TestSetWritable(t *testing.T) {
	j := open(t, t.TempDir(), Options{Region: "eu"})
	ctx := context.Background()
	even, odd := idInSlice(t, true), idInSlice(t, false)
	if err := j.SetWritable(ctx, func(s uint32) bool { return s%2 == 0 }); err != nil {
		t.Fatal(err)
	}
	before := j.LastOffset()
	_, err := j.Append(ctx, ev("cart", even, "a"), ev("cart", odd, "b"))
	var nw *NotWritableError
	if !errors.As(err, &nw) || nw.EntityID != odd || nw.Slice != SliceOf(odd) {
		t.Fatalf("append with an event of an odd slice: %v, want *NotWritableError for %s", err, odd)
	}
	if j.LastOffset() != before {
		t.Fatalf("the refused append wrote: last offset %d, was %d", j.LastOffset(), before)
	}
	res, errs := j.SubmitEach(ctx, []*streamdv1.Event{ev("cart", even, "a"), ev("cart", odd, "b")}).Wait()
	if errs[0] != nil || !errors.As(errs[1], &nw) || res[0].SeqNr != 1 {
		t.Fatalf("SubmitEach = %v, %v: want the even one appended, the odd one refused", res, errs)
	}
	// A copy of another journal's event of the odd slice (its origin seqNr
	// set) is not a write of this journal's.
	if _, err := j.Append(ctx, replicated("eu", 1, odd)); err != nil {
		t.Fatalf("copy of the odd slice: %v", err)
	}
	if err := j.SetWritable(ctx, nil); err != nil {
		t.Fatal(err)
	}
	res, err = j.Append(ctx, ev("cart", odd, "c"))
	if err != nil || res[0].SeqNr != 2 {
		t.Fatalf("after lifting the limit: %v, %v, want seqNr 2 (after the copy)", res, err)
	}
	if got := readAll(t, j); len(got) != 3 || got[2].OriginSeqNr != 2 || got[2].Origin != "eu" {
		t.Fatalf("journal holds %v", got)
	}
}

// Appends queued before SetWritable are durable once it returns: a group
// that hands its slices to another pod reads them there.
func TestSetWritableAfterQueuedAppends(t *testing.T) {
	j := open(t, t.TempDir(), Options{Region: "eu"})
	ctx := context.Background()
	var pending []*Pending
	for i := range 200 {
		p, err := j.Submit(ctx, nil, ev("cart", fmt.Sprint("c", i), "a"))
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	if err := j.SetWritable(ctx, func(uint32) bool { return false }); err != nil {
		t.Fatal(err)
	}
	if got := j.LastOffset(); got != 200 {
		t.Fatalf("last durable offset %d once SetWritable returned, want 200", got)
	}
	for _, p := range pending {
		if _, err := p.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := j.Append(ctx, ev("cart", "c1", "b")); !errors.As(err, new(*NotWritableError)) {
		t.Fatalf("append after SetWritable(none): %v", err)
	}
}

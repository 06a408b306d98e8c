package journal

import (
	"context"
	"errors"
	"testing"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func replicated(origin string, originSeqNr uint64, id string) *streamdv1.Event {
	e := ev("cart", id, "from "+origin)
	e.Origin, e.OriginSeqNr = origin, originSeqNr
	return e
}

func TestRegionStampsLocalEvents(t *testing.T) {
	j := open(t, t.TempDir(), Options{Region: "eu"})
	ctx := context.Background()
	// One entity written here and in us: eu's origin seqNrs count only its
	// own writes, so us sees them without gaps.
	if _, err := j.Append(ctx, ev("cart", "c1", "a"), ev("cart", "c1", "b")); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(ctx, replicated("us", 1, "c1")); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(ctx, ev("cart", "c1", "c")); err != nil {
		t.Fatal(err)
	}
	type want struct {
		origin      string
		originSeqNr uint64
		seqNr       uint64
	}
	wants := []want{{"eu", 1, 1}, {"eu", 2, 2}, {"us", 1, 3}, {"eu", 3, 4}}
	got := readAll(t, j)
	if len(got) != len(wants) {
		t.Fatalf("%d events, want %d", len(got), len(wants))
	}
	for i, e := range got {
		if (want{e.Origin, e.OriginSeqNr, e.SeqNr}) != wants[i] {
			t.Errorf("event %d: origin %q/%d seqNr %d, want %v", i, e.Origin, e.OriginSeqNr, e.SeqNr, wants[i])
		}
		if e.OriginTimestampUnixNano == 0 {
			t.Errorf("event %d: no origin timestamp", i)
		}
	}
}

func TestReplicatedDuplicatesAndGaps(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{Region: "eu"})
	ctx := context.Background()
	res, err := j.Append(ctx, replicated("us", 1, "c1"), replicated("us", 2, "c1"), replicated("ap", 1, "c1"))
	if err != nil || res[0].Duplicate || res[2].SeqNr != 3 {
		t.Fatalf("Append = %v, %v", res, err)
	}
	last := j.LastOffset()

	// Arriving again (over another path, or after a replicator restart):
	// dropped, also in the same batch as a new event.
	res, err = j.Append(ctx, replicated("us", 2, "c1"), replicated("us", 3, "c1"), replicated("us", 3, "c1"))
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Duplicate || res[1].Duplicate || res[1].SeqNr != 4 || !res[2].Duplicate || res[2].Offset != 0 {
		t.Fatalf("Append of duplicates = %+v", res)
	}
	if j.LastOffset() != last+1 {
		t.Fatalf("last offset %d, want %d: a duplicate was written", j.LastOffset(), last+1)
	}

	// A gap refuses the whole append and changes nothing: a retry of the
	// same events without the gap then commits with the same numbers.
	fine, gap := replicated("us", 4, "c1"), replicated("us", 6, "c1")
	_, err = j.Append(ctx, fine, gap)
	var ge *OriginGapError
	if !errors.As(err, &ge) || ge.Next != 5 || ge.Got != 6 || ge.Origin != "us" {
		t.Fatalf("Append with a gap = %v, want an OriginGapError next 5 got 6", err)
	}
	if fine.SeqNr != 0 || fine.OriginSeqNr != 4 {
		t.Fatalf("refused event kept seqNr %d / origin seqNr %d", fine.SeqNr, fine.OriginSeqNr)
	}
	if res, err = j.Append(ctx, fine); err != nil || res[0].SeqNr != 5 {
		t.Fatalf("retry = %v, %v", res, err)
	}

	// The origin seqNrs are durable: after a reopen (cold cache) duplicates
	// and gaps are still recognised.
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{Region: "eu"})
	if res, err = j.Append(ctx, replicated("us", 4, "c1")); err != nil || !res[0].Duplicate {
		t.Fatalf("duplicate after reopen = %v, %v", res, err)
	}
	if _, err = j.Append(ctx, replicated("ap", 3, "c1")); !errors.As(err, &ge) || ge.Next != 2 {
		t.Fatalf("gap after reopen = %v", err)
	}
	if res, err = j.Append(ctx, ev("cart", "c1", "local")); err != nil || res[0].SeqNr != 6 {
		t.Fatalf("local append after reopen = %v, %v", res, err)
	}
	if got := readAll(t, j); got[len(got)-1].Origin != "eu" || got[len(got)-1].OriginSeqNr != 1 {
		t.Fatalf("local event after reopen: origin %q/%d", got[len(got)-1].Origin, got[len(got)-1].OriginSeqNr)
	}
}

func TestOriginValidation(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	e := ev("cart", "c1", "x")
	e.OriginSeqNr = 3
	if _, err := j.Append(context.Background(), e); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("origin seqNr without origin: %v, want ErrInvalidEvent", err)
	}
	if err := (Options{Region: "e\x00u"}).Validate(); err == nil {
		t.Fatal("a region with NUL was accepted")
	}
	// Without a region, local events stay without origin.
	if _, err := j.Append(context.Background(), ev("cart", "c1", "x")); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, j); got[0].Origin != "" || got[0].OriginSeqNr != 0 {
		t.Fatalf("origin %q/%d on a journal without region", got[0].Origin, got[0].OriginSeqNr)
	}
}

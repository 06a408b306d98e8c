package journal

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMain(m *testing.M) {
	if crashChild() {
		return
	}
	goleak.VerifyTestMain(m)
}

func open(t testing.TB, dir string, opts Options) *Journal {
	t.Helper()
	j, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func ev(typ, id string, payload string) *streamdv1.Event {
	return &streamdv1.Event{EntityType: typ, EntityId: id, EventType: "Happened", Payload: []byte(payload)}
}

// readAll reads every stored event in offset order.
func readAll(t testing.TB, j *Journal) []*streamdv1.Event {
	t.Helper()
	var all []*streamdv1.Event
	for from := j.Info().FirstOffset; ; {
		batch, err := j.Read(from, 1000, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) == 0 {
			return all
		}
		all = append(all, batch...)
		from = batch[len(batch)-1].Offset + 1
	}
}

// checkInvariants asserts contiguous offsets and gap-free seqNrs per entity.
func checkInvariants(t testing.TB, events []*streamdv1.Event, firstOffset uint64) map[string]uint64 {
	t.Helper()
	lastSeq := map[string]uint64{}
	for i, e := range events {
		if want := firstOffset + uint64(i); e.Offset != want {
			t.Fatalf("event %d has offset %d, want %d", i, e.Offset, want)
		}
		ek := EntityKey(e.EntityType, e.EntityId)
		if e.SeqNr != lastSeq[ek]+1 {
			t.Fatalf("entity %q: seqNr %d after %d", ek, e.SeqNr, lastSeq[ek])
		}
		lastSeq[ek] = e.SeqNr
		if e.Slice != SliceOf(e.EntityId) || e.Slice >= Slices {
			t.Fatalf("event %d slice %d, want %d", i, e.Slice, SliceOf(e.EntityId))
		}
		if i > 0 && e.TimestampUnixNano < events[i-1].TimestampUnixNano {
			t.Fatalf("timestamp decreased at offset %d", e.Offset)
		}
	}
	return lastSeq
}

func TestConcurrentAppendsAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	const writers, perWriter = 16, 50
	for round := range 2 {
		j, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := range writers {
			wg.Go(func() {
				for i := range perWriter {
					// Two writers share each entity, so seqNrs race.
					id := fmt.Sprintf("e%d", w/2)
					events := []*streamdv1.Event{ev("order", id, "a"), ev("order", id, "b")}
					res, err := j.Append(context.Background(), events...)
					if err != nil {
						errs <- err
						return
					}
					if res[1].Offset != res[0].Offset+1 || res[1].SeqNr != res[0].SeqNr+1 {
						errs <- fmt.Errorf("writer %d append %d: batch not consecutive: %+v", w, i, res)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		info := j.Info()
		want := uint64((round + 1) * writers * perWriter * 2)
		if info.LastOffset != want || info.Events != want || info.FirstOffset != 1 {
			t.Fatalf("round %d: info %+v, want last offset %d", round, info, want)
		}
		all := readAll(t, j)
		seqs := checkInvariants(t, all, 1)
		for ek, s := range seqs {
			if s != uint64((round+1)*2*perWriter*2) {
				t.Fatalf("entity %q ends at seqNr %d", ek, s)
			}
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestJournalIDKept(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	id := j.ID()
	if len(id) != 16 {
		t.Fatalf("id has %d bytes", len(id))
	}
	j.Close()
	j2 := open(t, dir, Options{})
	if string(j2.ID()) != string(id) {
		t.Fatal("journal id changed across reopen")
	}
	j3 := open(t, t.TempDir(), Options{})
	if string(j3.ID()) == string(id) {
		t.Fatal("two journals share an id")
	}
}

func TestExpectedSeqNr(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	if _, err := j.Append(ctx, ev("cart", "c1", "x"), ev("cart", "c1", "y")); err != nil {
		t.Fatal(err)
	}
	// Expecting 3 (the next) succeeds.
	e := ev("cart", "c1", "z")
	e.SeqNr = 3
	res, err := j.Append(ctx, e)
	if err != nil || res[0].SeqNr != 3 {
		t.Fatalf("expected seqNr 3: %v %v", res, err)
	}
	// A stale expectation fails, and the other event of the batch is not written.
	stale := ev("cart", "c1", "late")
	stale.SeqNr = 3
	before := j.Info()
	_, err = j.Append(ctx, ev("cart", "other", "o"), stale)
	var conflict *SeqNrConflictError
	if !errors.As(err, &conflict) || conflict.Expected != 3 || conflict.Next != 4 || conflict.EntityID != "c1" {
		t.Fatalf("want conflict expected 3 next 4, got %v", err)
	}
	if after := j.Info(); after.LastOffset != before.LastOffset || after.Bytes != before.Bytes {
		t.Fatalf("conflicting append wrote something: %+v -> %+v", before, after)
	}
	if _, err := j.Load("cart", "other", 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("event of failed batch is stored: %v", err)
	}
	// Expectations inside one batch chain: 4 then 5.
	a, b := ev("cart", "c1", "4"), ev("cart", "c1", "5")
	a.SeqNr, b.SeqNr = 4, 5
	if _, err := j.Append(ctx, a, b); err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, readAll(t, j), 1)
}

// Concurrent optimistic writers on one entity: exactly one wins each seqNr.
func TestExpectedSeqNrRace(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	const writers = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := map[uint64]int{}
	for range writers {
		wg.Go(func() {
			for seq := uint64(1); seq <= 20; seq++ {
				e := ev("account", "a", "x")
				e.SeqNr = seq
				_, err := j.Append(context.Background(), e)
				var c *SeqNrConflictError
				switch {
				case err == nil:
					mu.Lock()
					wins[seq]++
					mu.Unlock()
				case errors.As(err, &c):
				default:
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for seq := uint64(1); seq <= 20; seq++ {
		if wins[seq] != 1 {
			t.Fatalf("seqNr %d won %d times", seq, wins[seq])
		}
	}
}

func TestBadInputRefused(t *testing.T) {
	j := open(t, t.TempDir(), Options{Limits: Limits{MaxPayloadBytes: 10, MaxTags: 2, MaxBatchEvents: 3}})
	if _, err := j.Append(context.Background(), ev("t", "ok", "x")); err != nil {
		t.Fatal(err)
	}
	withOffset := ev("t", "x", "")
	withOffset.Offset = 9
	cases := map[string][]*streamdv1.Event{
		"empty entity id":   {ev("t", "", "x")},
		"empty entity type": {ev("", "id", "x")},
		"payload too big":   {ev("t", "id", "01234567890")},
		"too many tags":     {{EntityType: "t", EntityId: "id", Tags: []string{"a", "b", "c"}}},
		"nul in id":         {ev("t", "a\x00b", "x")},
		"bad utf8":          {ev("t", "\xff", "x")},
		"batch too big":     {ev("t", "a", ""), ev("t", "b", ""), ev("t", "c", ""), ev("t", "d", "")},
		"no events":         {},
		"nil event":         {nil},
		"offset set":        {withOffset},
		"one bad of two":    {ev("t", "good", "x"), ev("t", "", "x")},
	}
	for name, events := range cases {
		t.Run(name, func(t *testing.T) {
			before := j.Info()
			_, err := j.Append(context.Background(), events...)
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatalf("want ErrInvalidEvent, got %v", err)
			}
			if after := j.Info(); after.LastOffset != before.LastOffset || after.Bytes != before.Bytes {
				t.Fatalf("refused append changed the journal: %+v -> %+v", before, after)
			}
		})
	}
	if _, err := j.Load("t", "good", 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("event of refused batch stored: %v", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for name, o := range map[string]Options{
		"durability":    {Durability: 7},
		"age":           {RetentionMaxAge: -time.Second},
		"bytes":         {RetentionMaxBytes: -1},
		"limits":        {Limits: Limits{MaxTags: -1}},
		"batch cap":     {Limits: Limits{MaxBatchBytes: 64 << 20}},
		"memtable tiny": {MemTableSize: 10},
	} {
		if _, err := Open(t.TempDir(), o); err == nil {
			t.Errorf("%s: Open accepted bad options", name)
		}
	}
}

func TestReadsAndLoad(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	ctx := context.Background()
	for i := range 30 {
		if _, err := j.Append(ctx, ev("car", fmt.Sprintf("car-%d", i%3), fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	got, err := j.ReadEntity("car", "car-1", 4, 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 7 || got[0].SeqNr != 4 || got[6].SeqNr != 10 {
		t.Fatalf("ReadEntity from 4: %d events, first %v", len(got), got[0])
	}
	e, err := j.Load("car", "car-2", 10)
	if err != nil || string(e.Payload) != "29" {
		t.Fatalf("Load car-2/10 = %v, %v", e, err)
	}
	if _, err := j.Load("car", "car-2", 11); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load past the end: %v", err)
	}
	if _, err := j.Load("bus", "car-2", 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Load of another entity type: %v", err)
	}
	batch, err := j.Read(25, 3, nil)
	if err != nil || len(batch) != 3 || batch[0].Offset != 25 {
		t.Fatalf("Read(25, 3) = %d events, %v", len(batch), err)
	}
	if batch, _ := j.Read(31, 10, nil); len(batch) != 0 {
		t.Fatalf("Read past the end returned %d events", len(batch))
	}
}

func TestOffsetAt(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	clock := func() time.Time { return now }
	j := open(t, t.TempDir(), Options{Now: clock})
	for i := range 10 {
		now = time.Unix(1_000_000+int64(i)*10, 0)
		if _, err := j.Append(context.Background(), ev("t", "a", "")); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		at   int64
		want uint64
	}{{0, 1}, {1_000_000, 1}, {1_000_001, 2}, {1_000_050, 6}, {1_000_090, 10}, {1_000_091, 11}} {
		got, err := j.OffsetAt(time.Unix(c.at, 0))
		if err != nil || got != c.want {
			t.Errorf("OffsetAt(%d) = %d, %v; want %d", c.at, got, err, c.want)
		}
	}
}

func TestRetentionByAge(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	dir := t.TempDir()
	j := open(t, dir, Options{Now: clock, RetentionMaxAge: time.Hour, RetentionInterval: time.Hour})
	ctx := context.Background()
	for i := range 10 {
		set(time.Unix(1_000_000+int64(i)*60, 0)) // one a minute
		if _, err := j.Append(ctx, ev("t", "a", "x")); err != nil {
			t.Fatal(err)
		}
	}
	set(time.Unix(1_000_000+3600+5*60, 0)) // events 1..5 are older than an hour
	n, err := j.EnforceRetention()
	if err != nil || n != 5 {
		t.Fatalf("retention deleted %d, %v; want 5", n, err)
	}
	info := j.Info()
	if info.FirstOffset != 6 || info.Events != 5 || info.LastOffset != 10 {
		t.Fatalf("after retention: %+v", info)
	}
	_, err = j.Read(3, 10, nil)
	var oor *OutOfRangeError
	if !errors.As(err, &oor) || oor.FirstAvailable != 6 || oor.Requested != 3 {
		t.Fatalf("read below floor: %v", err)
	}
	if _, err := j.Load("t", "a", 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted event still loads: %v", err)
	}
	if evs, _ := j.ReadEntity("t", "a", 1, 100, nil); len(evs) != 5 || evs[0].SeqNr != 6 {
		t.Fatalf("ReadEntity after retention: %d events", len(evs))
	}
	// SeqNrs continue after retention and after reopen; the floor is kept.
	j.Close()
	j = open(t, dir, Options{Now: clock})
	res, err := j.Append(ctx, ev("t", "a", "x"))
	if err != nil || res[0].SeqNr != 11 || res[0].Offset != 11 {
		t.Fatalf("append after retention+reopen: %+v %v", res, err)
	}
	if j.Info().FirstOffset != 6 {
		t.Fatalf("floor not kept across reopen: %+v", j.Info())
	}
}

func TestRetentionBySize(t *testing.T) {
	j := open(t, t.TempDir(), Options{RetentionMaxBytes: 10_000, RetentionInterval: time.Hour})
	ctx := context.Background()
	payload := string(make([]byte, 500))
	for range 100 {
		if _, err := j.Append(ctx, ev("t", "a", payload)); err != nil {
			t.Fatal(err)
		}
	}
	if j.Info().Bytes < 50_000 {
		t.Fatalf("bytes %d: accounting is off", j.Info().Bytes)
	}
	if _, err := j.EnforceRetention(); err != nil {
		t.Fatal(err)
	}
	info := j.Info()
	if info.Bytes > 10_000 || info.Bytes < 9_000 || info.LastOffset != 100 {
		t.Fatalf("after size retention: %+v", info)
	}
	all := readAll(t, j)
	if uint64(len(all)) != info.Events || all[0].Offset != info.FirstOffset {
		t.Fatalf("read %d events, info says %d from %d", len(all), info.Events, info.FirstOffset)
	}
}

func TestBackgroundRetention(t *testing.T) {
	j := open(t, t.TempDir(), Options{RetentionMaxBytes: 1, RetentionInterval: 10 * time.Millisecond})
	if _, err := j.Append(context.Background(), ev("t", "a", "x"), ev("t", "a", "y")); err != nil {
		t.Fatal(err)
	}
	if !testwait.Until(10*time.Second, func() bool { return j.Info().FirstOffset == 3 }) {
		t.Fatalf("background retention did not run: %+v", j.Info())
	}
}

// A reader that falls out of the ring reads from Badger and comes back,
// seeing every offset exactly once.
func TestRingOverflowSeam(t *testing.T) {
	j := open(t, t.TempDir(), Options{RingSize: 16})
	ctx := context.Background()
	c := j.NewCursor(1)
	var seen []uint64
	read := func() {
		for {
			batch, wait, err := c.Read(7, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range batch {
				seen = append(seen, e.Offset)
			}
			if wait != nil {
				return
			}
		}
	}
	fell := false
	for round := range 20 {
		n := 3 + round*5 // grows past the ring size
		events := make([]*streamdv1.Event, n)
		for i := range events {
			events[i] = ev("t", fmt.Sprint(i%4), "")
		}
		if _, err := j.Append(ctx, events...); err != nil {
			t.Fatal(err)
		}
		if _, _, err := j.ReadLive(c.Next(), 1, nil); errors.Is(err, ErrFellBehind) {
			fell = true
		}
		read()
	}
	if !fell {
		t.Fatal("test never overflowed the ring")
	}
	last := j.LastOffset()
	if uint64(len(seen)) != last {
		t.Fatalf("saw %d events, journal has %d", len(seen), last)
	}
	for i, o := range seen {
		if o != uint64(i+1) {
			t.Fatalf("position %d has offset %d: gap or duplicate at the seam", i, o)
		}
	}
}

// A cursor that reuses its buffers gives the same records as reads that
// do not, each intact until the next read, over blocks of every size and,
// in journals of the older formats, blocks whose records share the block
// itself (format 2: blocks of format 1 in the segments).
func TestCursorReuseBuffers(t *testing.T) {
	check := func(t *testing.T, j *Journal, limit int, wantReuse bool) {
		t.Helper()
		c := j.NewCursor(j.Info().FirstOffset).ReuseBuffers()
		defer func() {
			// A read from the ring (nothing new): the cursor keeps nothing.
			if _, _, err := c.Read(limit, nil); err != nil {
				t.Fatal(err)
			}
			if c.bufs.block != nil || c.bufs.events != nil {
				t.Fatalf("a cursor reading from the ring keeps buffers of %d and %d bytes", cap(c.bufs.block), cap(c.bufs.events))
			}
		}()
		reused, reads := false, 0
		var prev *byte
		for c.Next() <= j.LastOffset() {
			want, err := j.ReadRecords(c.Next(), limit, nil)
			if err != nil {
				t.Fatal(err)
			}
			got, _, err := c.Read(limit, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("read at %d: %d records, want %d", want[0].Offset, len(got), len(want))
			}
			for i := range got {
				// A record of the live ring has the encoding it was
				// published with, one of Badger the stored fields put
				// back: compare the events.
				g, gerr := got[i].Event()
				w, werr := want[i].Event()
				if gerr != nil || werr != nil || got[i].Offset != want[i].Offset || !proto.Equal(g, w) {
					t.Fatalf("record %d of the read at %d: offset %d %v (%v); want offset %d %v (%v)",
						i, want[0].Offset, got[i].Offset, g, gerr, want[i].Offset, w, werr)
				}
			}
			if p := &got[0].Raw[0]; p == prev {
				reused = true
			} else {
				prev = p
			}
			reads++
		}
		if wantReuse && !reused {
			t.Fatalf("%d reads and none reused the buffer of the one before", reads)
		}
	}
	t.Run("current", func(t *testing.T) {
		j := open(t, t.TempDir(), Options{RingSize: 16})
		ctx := context.Background()
		for round := range 60 {
			events := make([]*streamdv1.Event, 1+round%23)
			for i := range events {
				events[i] = ev("t", fmt.Sprint(i%5), strings.Repeat("p", (round*37+i*11)%900))
			}
			if _, err := j.Append(ctx, events...); err != nil {
				t.Fatal(err)
			}
		}
		for _, limit := range []int{1, 7, 100, 1000} {
			check(t, j, limit, limit < 100)
		}
	})
	t.Run("large blocks", func(t *testing.T) {
		// Buffers over maxKeptBuffer are not kept for the next read.
		j := open(t, t.TempDir(), Options{RingSize: 2})
		for i := range 4 {
			big := strings.Repeat(fmt.Sprint(i), 700<<10)
			if _, err := j.Append(context.Background(), ev("t", "a", big), ev("t", "b", big)); err != nil {
				t.Fatal(err)
			}
		}
		c := j.NewCursor(1).ReuseBuffers()
		recs, _, err := c.Read(2, nil)
		if err != nil || len(recs) != 2 {
			t.Fatalf("read %d records: %v", len(recs), err)
		}
		if cap(c.bufs.events) <= maxKeptBuffer {
			t.Fatalf("an events buffer of %d bytes after reading 1.4 MB of events", cap(c.bufs.events))
		}
		c.bufs.reset()
		if c.bufs.events != nil || cap(c.bufs.block) > maxKeptBuffer {
			t.Fatalf("kept buffers of %d and %d bytes for the next read", cap(c.bufs.block), cap(c.bufs.events))
		}
		check(t, j, 1, false)
	})
	for _, name := range []string{"format1-closed", "format2-closed"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			untar(t, filepath.Join("testdata", name+".tar.gz"), dir)
			j := open(t, dir, Options{RingSize: 16})
			for _, limit := range []int{7, 100, 1000} {
				check(t, j, limit, false)
			}
		})
	}
}

// Peek gives a live record's own event, and decodes one read from Badger
// into the scratch event, reset first.
func TestRecordPeek(t *testing.T) {
	j := open(t, t.TempDir(), Options{RingSize: 2})
	tagged := ev("t", "a", "x")
	tagged.Tags = []string{"red"}
	if _, err := j.Append(context.Background(), tagged, ev("t", "b", "y"), ev("t", "c", "z")); err != nil {
		t.Fatal(err)
	}
	stored, err := j.ReadRecords(1, 2, nil)
	if err != nil || len(stored) != 2 {
		t.Fatalf("read %d records: %v", len(stored), err)
	}
	var scratch streamdv1.Event
	for i, want := range []string{"a", "b"} {
		e, err := stored[i].Peek(&scratch)
		if err != nil || e != &scratch || e.EntityId != want || e.Offset != uint64(i+1) {
			t.Fatalf("stored record %d: %v (%v), want entity %s decoded into the scratch event", i, e, err, want)
		}
	}
	if len(scratch.Tags) != 0 {
		t.Fatalf("the second event kept the first one's tags: %v", scratch.Tags)
	}
	live, _, err := j.ReadLive(3, 1, nil)
	if err != nil || len(live) != 1 {
		t.Fatalf("live: %d records: %v", len(live), err)
	}
	if e, err := live[0].Peek(&scratch); err != nil || e == &scratch || e.EntityId != "c" {
		t.Fatalf("live record: %v (%v), want its own event", e, err)
	}
}

func TestCursorWaitsForCommit(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	c := j.NewCursor(1)
	got := make(chan []Record)
	go func() {
		recs, _ := c.Wait(context.Background(), 10, nil)
		got <- recs
	}()
	if _, err := j.Append(context.Background(), ev("t", "a", "live")); err != nil {
		t.Fatal(err)
	}
	select {
	case recs := <-got:
		if len(recs) != 1 {
			t.Fatalf("live read got %d records", len(recs))
		}
		e, err := recs[0].Event()
		if err != nil || string(e.Payload) != "live" {
			t.Fatalf("live read got %v, %v", e, err)
		}
		var fromRaw streamdv1.Event
		if err := proto.Unmarshal(recs[0].Raw, &fromRaw); err != nil || !proto.Equal(&fromRaw, e) {
			t.Fatalf("record's encoding does not decode to its event: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cursor did not wake on commit")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Wait(ctx, 10, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait on a cancelled ctx: %v", err)
	}
}

func TestClosed(t *testing.T) {
	j, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := j.Append(context.Background(), ev("t", "a", "")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, err := j.Read(1, 1, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
}

// Close waits for appends already queued: each either commits or reports
// ErrClosed; none is acknowledged and then lost.
func TestCloseWaitsForInflight(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[uint64]bool{}
	for w := range 8 {
		wg.Go(func() {
			for {
				res, err := j.Append(context.Background(), ev("t", fmt.Sprint(w), "x"))
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[res[0].Offset] = true
				mu.Unlock()
			}
		})
	}
	testwait.For(t, 30*time.Second, "200 events appended", func() bool { return j.LastOffset() >= 200 })
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	j2 := open(t, dir, Options{})
	all := readAll(t, j2)
	stored := map[uint64]bool{}
	for _, e := range all {
		stored[e.Offset] = true
	}
	for o := range acked {
		if !stored[o] {
			t.Fatalf("acknowledged offset %d lost across Close", o)
		}
	}
	checkInvariants(t, all, 1)
}

func TestAsyncDurability(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{Durability: DurabilityAsync})
	for range 10 {
		if _, err := j.Append(context.Background(), ev("t", "a", "x")); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	j2 := open(t, dir, Options{})
	if j2.LastOffset() != 10 {
		t.Fatalf("after clean close: last offset %d", j2.LastOffset())
	}
}

func TestEventRoundTrip(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	in := &streamdv1.Event{
		EntityType: "car", EntityId: "car-1", EventType: "Sample", Payload: []byte{1, 2, 3},
		Tags: []string{"sports", "red"}, Topic: "car/car-1/speed",
		Metadata: map[string]string{"k": "v"}, Origin: "eu", OriginSeqNr: 1,
		OriginTimestampUnixNano: 5, VersionVector: map[string]uint64{"eu": 4, "us": 2},
	}
	want := proto.Clone(in).(*streamdv1.Event)
	if _, err := j.Append(context.Background(), in); err != nil {
		t.Fatal(err)
	}
	got, err := j.Load("car", "car-1", 1)
	if err != nil {
		t.Fatal(err)
	}
	want.Offset, want.SeqNr, want.Slice, want.TimestampUnixNano = 1, 1, SliceOf("car-1"), got.TimestampUnixNano
	if !proto.Equal(got, want) {
		t.Fatalf("round trip:\n got %v\nwant %v", got, want)
	}
}

// SeqNrs continue after retention deleted an entity's whole history, also
// across reopen (when the seqNr cache is empty).
func TestSeqNrSurvivesFullRetention(t *testing.T) {
	dir := t.TempDir()
	// The background run at open may delete some of the events before the
	// explicit run: count what both deleted.
	deleted := &deletionCounter{}
	j := open(t, dir, Options{RetentionMaxBytes: 1, RetentionInterval: time.Hour, Observer: deleted})
	ctx := context.Background()
	for range 3 {
		if _, err := j.Append(ctx, ev("t", "gone", "x")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := j.EnforceRetention(); err != nil || deleted.n.Load() != 3 {
		t.Fatalf("retention deleted %d, %v", deleted.n.Load(), err)
	}
	if info := j.Info(); info.Events != 0 || info.FirstOffset != 4 || info.LastOffset != 3 {
		t.Fatalf("after deleting everything: %+v", info)
	}
	j.Close()
	j = open(t, dir, Options{})
	res, err := j.Append(ctx, ev("t", "gone", "x"))
	if err != nil || res[0].SeqNr != 4 || res[0].Offset != 4 {
		t.Fatalf("append after full retention and reopen: %+v, %v; want seqNr 4 offset 4", res, err)
	}
}

// deletionCounter counts the events retention deleted.
type deletionCounter struct{ n atomic.Int64 }

func (*deletionCounter) Committed(int, int, int64, time.Duration) {}
func (c *deletionCounter) RetentionDeleted(n int)                 { c.n.Add(int64(n)) }

// Concurrent retention runs never delete twice or miscount bytes.
func TestConcurrentRetention(t *testing.T) {
	j := open(t, t.TempDir(), Options{RetentionMaxBytes: 5_000, RetentionInterval: time.Hour})
	ctx := context.Background()
	for range 200 {
		if _, err := j.Append(ctx, ev("t", "a", string(make([]byte, 100)))); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if _, err := j.EnforceRetention(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	info := j.Info()
	all := readAll(t, j)
	var stored int64
	for _, e := range all {
		stored += int64(proto.Size(e))
	}
	if stored != info.Bytes || uint64(len(all)) != info.Events || info.Bytes > 5_000 {
		t.Fatalf("info %+v, but %d events of %d bytes stored", info, len(all), stored)
	}
}

func TestEntityTypes(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	for _, typ := range []string{"car", "bus", "car"} {
		if _, err := j.Append(context.Background(), ev(typ, "1", "")); err != nil {
			t.Fatal(err)
		}
	}
	if got := fmt.Sprint(j.EntityTypes()); got != "[bus car]" {
		t.Fatalf("EntityTypes = %s", got)
	}
	j.Close()
	if got := fmt.Sprint(open(t, dir, Options{}).EntityTypes()); got != "[bus car]" {
		t.Fatalf("EntityTypes after reopen = %s", got)
	}
}

// Records read from Badger carry exactly the stored encoding, also when a
// read starts inside a block.
func TestReadRecords(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	events := make([]*streamdv1.Event, 50)
	for i := range events {
		events[i] = ev("t", fmt.Sprint(i%3), fmt.Sprint("payload-", i))
	}
	if _, err := j.Append(context.Background(), events...); err != nil {
		t.Fatal(err)
	}
	recs, err := j.ReadRecords(17, 10, nil)
	if err != nil || len(recs) != 10 {
		t.Fatalf("ReadRecords(17, 10) = %d records, %v", len(recs), err)
	}
	for k, r := range recs {
		var e streamdv1.Event
		if err := proto.Unmarshal(r.Raw, &e); err != nil {
			t.Fatal(err)
		}
		if r.Offset != uint64(17+k) || e.Offset != r.Offset || string(e.Payload) != fmt.Sprint("payload-", 16+k) {
			t.Fatalf("record %d: offset %d, event %v", k, r.Offset, &e)
		}
	}
}

// TestAppendWith checks that AppendWith's records commit with its events,
// also when there are none or all are duplicates, and not at all when the
// append is refused.
func TestAppendWith(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	j := open(t, dir, Options{Region: "eu"})
	get := func(j *Journal, key string) (string, bool) {
		t.Helper()
		var v []byte
		err := j.View(func(txn *badger.Txn) error {
			item, err := txn.Get([]byte(key))
			if err != nil {
				return err
			}
			v, err = item.ValueCopy(nil)
			return err
		})
		if errors.Is(err, badger.ErrKeyNotFound) {
			return "", false
		}
		if err != nil {
			t.Fatal(err)
		}
		return string(v), true
	}
	set := func(k, v string) []Write { return []Write{{Key: []byte(k), Value: []byte(v)}} }

	if _, err := j.AppendWith(ctx, set("\x00pos", "1"), ev("acct", "a", "x")); err != nil {
		t.Fatal(err)
	}
	if v, _ := get(j, "\x00pos"); v != "1" {
		t.Fatalf("record after append = %q, want 1", v)
	}

	// Refused appends write nothing: a seqNr conflict, an origin gap.
	stale := ev("acct", "a", "y")
	stale.SeqNr = 1
	if _, err := j.AppendWith(ctx, set("\x00pos", "2"), stale); !errors.As(err, new(*SeqNrConflictError)) {
		t.Fatalf("conflicting append: %v", err)
	}
	gap := ev("acct", "b", "z")
	gap.Origin, gap.OriginSeqNr = "us", 2
	if _, err := j.AppendWith(ctx, set("\x00pos", "3"), gap); !errors.As(err, new(*OriginGapError)) {
		t.Fatalf("append with a gap: %v", err)
	}
	if v, _ := get(j, "\x00pos"); v != "1" {
		t.Fatalf("record after refused appends = %q, want 1", v)
	}

	// Duplicates only, and no events: the records still commit.
	copied := ev("acct", "b", "z")
	copied.Origin, copied.OriginSeqNr = "us", 1
	if _, err := j.Append(ctx, proto.Clone(copied).(*streamdv1.Event)); err != nil {
		t.Fatal(err)
	}
	last := j.LastOffset()
	res, err := j.AppendWith(ctx, set("\x00pos", "4"), copied)
	if err != nil || !res[0].Duplicate {
		t.Fatalf("duplicate: %v %+v", err, res)
	}
	if v, _ := get(j, "\x00pos"); v != "4" || j.LastOffset() != last {
		t.Fatalf("after a duplicate: record %q, last offset %d (was %d)", v, j.LastOffset(), last)
	}
	if _, err := j.AppendWith(ctx, []Write{{Key: []byte("\x00pos"), Delete: true}, {Key: []byte("\x00other"), Value: []byte("5")}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := get(j, "\x00pos"); ok {
		t.Fatal("deleted record still there")
	}

	// Bad writes are refused before anything is written.
	for name, w := range map[string]Write{
		"journal key":         {Key: []byte("m/id"), Value: []byte("x")},
		"empty key":           {Value: []byte("x")},
		"delete with value":   {Key: []byte("\x00k"), Value: []byte("x"), Delete: true},
		"key beyond badger's": {Key: append([]byte{0}, make([]byte, 65000)...)},
	} {
		if _, err := j.AppendWith(ctx, []Write{w}, ev("acct", "c", "bad")); !errors.Is(err, ErrInvalidEvent) {
			t.Fatalf("%s: %v, want ErrInvalidEvent", name, err)
		}
	}
	if _, err := j.AppendWith(ctx, nil); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("nothing to append: %v", err)
	}
	if j.LastOffset() != last {
		t.Fatalf("refused writes appended events: last offset %d, want %d", j.LastOffset(), last)
	}

	j.Close()
	j = open(t, dir, Options{Region: "eu"})
	if v, _ := get(j, "\x00other"); v != "5" {
		t.Fatalf("record after reopen = %q, want 5", v)
	}
}

// SubmitEach appends each event alone: an invalid event and a failed
// seqNr expectation are refused without their neighbours, the others
// commit in the order given, also across the requests MaxBatchEvents
// splits them into, and after Close every event is refused.
func TestSubmitEach(t *testing.T) {
	j := open(t, t.TempDir(), Options{Limits: Limits{MaxBatchEvents: 3}})
	events := []*streamdv1.Event{
		ev("car", "c1", "a"),
		{EntityType: "car", EventType: "Happened"}, // no entity id
		ev("car", "c2", "b"),
		{EntityType: "car", EntityId: "c1", EventType: "Happened", SeqNr: 5}, // c1 is at 1
		ev("car", "c1", "c"),
		{EntityType: "car", EntityId: "c2", EventType: "Happened", SeqNr: 2},
		ev("car", "c3", "d"),
		ev("car", "c3", "e"),
	}
	res, errs := j.SubmitEach(context.Background(), events).Wait()
	want := []Appended{{Offset: 1, SeqNr: 1}, {}, {Offset: 2, SeqNr: 1}, {}, {Offset: 3, SeqNr: 2}, {Offset: 4, SeqNr: 2}, {Offset: 5, SeqNr: 1}, {Offset: 6, SeqNr: 2}}
	for i := range events {
		switch i {
		case 1:
			if !errors.Is(errs[i], ErrInvalidEvent) {
				t.Errorf("event %d: %v, want ErrInvalidEvent", i, errs[i])
			}
		case 3:
			var conflict *SeqNrConflictError
			if !errors.As(errs[i], &conflict) || conflict.Next != 2 {
				t.Errorf("event %d: %v, want a SeqNrConflictError naming seqNr 2", i, errs[i])
			}
		default:
			if errs[i] != nil || res[i] != want[i] {
				t.Errorf("event %d: %+v, %v; want %+v", i, res[i], errs[i], want[i])
			}
		}
	}
	if got := readAll(t, j); len(got) != 6 || string(got[2].Payload) != "c" || string(got[5].Payload) != "e" {
		t.Fatalf("stored %v, want the six valid events in the order given", got)
	}
	j.Close()
	_, errs = j.SubmitEach(context.Background(), []*streamdv1.Event{ev("car", "c1", "x"), ev("car", "c1", "y")}).Wait()
	for i, err := range errs {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("event %d after Close: %v, want ErrClosed", i, err)
		}
	}
}

// Submit queues appends without waiting: they commit in the order queued,
// and Close answers every one queued before it.
func TestSubmitOrder(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	var pending []*Pending
	for i := range 200 {
		p, err := j.Submit(context.Background(), nil, ev("car", fmt.Sprint("c", i%7), "x"))
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	for i, p := range pending {
		res, err := p.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Offset != uint64(i+1) {
			t.Fatalf("append %d got offset %d", i, res[0].Offset)
		}
	}
	pending = pending[:0]
	for i := range 100 {
		p, err := j.Submit(context.Background(), nil, ev("car", fmt.Sprint("c", i%7), "y"))
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	for i, p := range pending {
		if res, err := p.Wait(); err != nil || res[0].Offset != uint64(201+i) {
			t.Fatalf("append %d queued before Close: %v, %v", i, res, err)
		}
	}
	if _, err := j.Submit(context.Background(), nil, ev("car", "c1", "z")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Submit after Close: %v", err)
	}
}

// Appends queued while the writer logs a group share the next group and its
// fsync. The observer, called by the writer as it releases each group,
// holds it 2 ms, so that all 64 appenders queue meanwhile.
func TestAppendsQueuedDuringAnFsyncShareTheNext(t *testing.T) {
	o := &slowCountingObserver{}
	j := open(t, t.TempDir(), Options{Observer: o})
	const appenders, each = 64, 10
	var wg sync.WaitGroup
	for a := range appenders {
		wg.Go(func() {
			for i := range each {
				if _, err := j.Append(context.Background(), ev("car", fmt.Sprint("c", a), fmt.Sprint(i))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	checkInvariants(t, readAll(t, j), 1)
	// The observer hears of a group after its appends are answered: once
	// the writer is done, it has heard of all of them.
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if got := o.events.Load(); got != appenders*each {
		t.Fatalf("observer saw %d events committed, want %d", got, appenders*each)
	}
	if got := o.commits.Load(); got > appenders*each/8 {
		t.Fatalf("%d group commits for %d appends: appends queued during a commit did not share the next", got, appenders*each)
	}
}

type slowCountingObserver struct{ countingObserver }

func (o *slowCountingObserver) Committed(appends, events int, bytes int64, fsync time.Duration) {
	o.countingObserver.Committed(appends, events, bytes, fsync)
	time.Sleep(2 * time.Millisecond)
}

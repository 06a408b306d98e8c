package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// journalState is what a test compares between two journals.
type journalState struct {
	info    Info
	events  []*streamdv1.Event
	records map[string]string // keys beginning with 0x00
	// index: the journal's own keys but event blocks and index runs
	// (seqNrs, origins, types), and the index, whether in Badger's runs
	// or pending, as (entity NUL seqNr) -> offset, from the floor on.
	index map[string]string
	types []string
}

func stateOf(t *testing.T, j *Journal) journalState {
	t.Helper()
	s := journalState{info: j.Info(), events: readAll(t, j), records: map[string]string{}, index: map[string]string{}, types: j.EntityTypes()}
	err := j.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			switch {
			case k[0] == 0:
				s.records[string(k)] = string(v)
			case bytes.HasPrefix(k, prefixRun):
				offs, err := decodeRun(v, nil)
				if err != nil {
					return err
				}
				s.addIndex(string(k[len(prefixRun):len(k)-9]), firstOfRunKey(k), offs)
			case bytes.HasPrefix(k, prefixSeq) || bytes.HasPrefix(k, prefixOrigin) || bytes.HasPrefix(k, prefixType):
				s.index[string(k)] = string(v)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	j.index.mu.RLock()
	defer j.index.mu.RUnlock()
	for _, m := range []map[string]*run{j.index.flushing, j.index.cur} {
		for ek, r := range m {
			s.addIndex(ek, r.first, r.offs)
		}
	}
	return s
}

func (s journalState) addIndex(ek string, first uint64, offs []uint64) {
	for i, off := range offs {
		if off < s.info.FirstOffset {
			continue // deleted by retention
		}
		s.index[fmt.Sprintf("%s\x00%d", ek, first+uint64(i))] = fmt.Sprint(off)
	}
}

func (s journalState) diff(o journalState) string {
	switch {
	case !bytes.Equal(s.info.JournalID, o.info.JournalID) || s.info.FirstOffset != o.info.FirstOffset ||
		s.info.LastOffset != o.info.LastOffset || s.info.Events != o.info.Events || s.info.Bytes != o.info.Bytes:
		return fmt.Sprintf("info %+v, want %+v", o.info, s.info)
	case len(s.events) != len(o.events):
		return fmt.Sprintf("%d events, want %d", len(o.events), len(s.events))
	case !slices.Equal(s.types, o.types):
		return fmt.Sprintf("entity types %v, want %v", o.types, s.types)
	case len(s.records) != len(o.records):
		return fmt.Sprintf("%d records, want %d", len(o.records), len(s.records))
	case len(s.index) != len(o.index):
		return fmt.Sprintf("%d index, seqNr, origin and type keys, want %d", len(o.index), len(s.index))
	}
	for k, v := range s.index {
		if o.index[k] != v {
			return fmt.Sprintf("key %q is %x, want %x", k, o.index[k], v)
		}
	}
	for i := range s.events {
		if !proto.Equal(s.events[i], o.events[i]) {
			return fmt.Sprintf("event %d is %v, want %v", i, o.events[i], s.events[i])
		}
	}
	for k, v := range s.records {
		if o.records[k] != v {
			return fmt.Sprintf("record %q is %q, want %q", k, o.records[k], v)
		}
	}
	return ""
}

// appendRound appends n events of 1 KiB over 50 entities, each append
// with records: one rewritten every time, one set per append, one deleted.
func appendRound(t *testing.T, j *Journal, round, n int) {
	t.Helper()
	payload := strings.Repeat("p", 1024)
	for i := 0; i < n; i += 10 {
		batch := make([]*streamdv1.Event, 10)
		for k := range batch {
			batch[k] = ev(fmt.Sprint("type", k%3), fmt.Sprint("e", (i+k)%50), payload)
		}
		writes := []Write{
			{Key: []byte("\x00last"), Value: fmt.Appendf(nil, "%d/%d", round, i)},
			{Key: fmt.Appendf(nil, "\x00each/%d/%d", round, i), Value: []byte("v")},
			{Key: fmt.Appendf(nil, "\x00each/%d/%d", round, i-10), Delete: true},
		}
		if _, err := j.AppendWith(context.Background(), writes, batch...); err != nil {
			t.Fatal(err)
		}
	}
}

// walAfterCheckpoint writes a journal in dir, closes it (a checkpoint) and
// copies it to a snapshot; reopens dir and appends, deletes by retention,
// rewrites and deletes records. It returns the snapshot, the WAL segments
// written since the checkpoint (copied from the open journal), and the
// state of the journal, which it then closes.
func walAfterCheckpoint(t *testing.T) (snap string, segs map[string][]byte, want journalState) {
	dir, snap := t.TempDir(), t.TempDir()
	// 7 MiB memtables: Badger starts new ones, and writes tables, while
	// the test appends.
	opts := Options{MemTableSize: minMemTableSize, RetentionInterval: time.Hour}
	j := open(t, dir, opts)
	appendRound(t, j, 0, 3000)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	copyDir(t, dir, snap)

	opts.RetentionMaxBytes = 2 << 20 // the retention run at open deletes
	// No segment fills up: every change since open stays in the WAL.
	opts.segmentBytes = 64 << 20
	j = open(t, dir, opts)
	appendRound(t, j, 1, 12000)
	// The retention run at open may have deleted all it had to meanwhile.
	if _, err := j.EnforceRetention(); err != nil {
		t.Fatal(err)
	}
	appendRound(t, j, 2, 500)
	want = stateOf(t, j)
	if want.info.FirstOffset <= 3001 {
		t.Fatalf("retention deleted none of the events appended since the checkpoint (first offset %d)", want.info.FirstOffset)
	}
	segs = map[string][]byte{}
	ids, err := segments(j.wal.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		data, err := os.ReadFile(segmentPath(j.wal.dir, id))
		if err != nil {
			t.Fatal(err)
		}
		segs[filepath.Base(segmentPath(j.wal.dir, id))] = data
	}
	if len(segs) == 0 {
		t.Fatal("no WAL segment")
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if first, last := toReplay(t, dir); first <= last {
		t.Fatalf("segments %d to %d still to replay after Close", first, last)
	}
	reopened := open(t, dir, Options{MemTableSize: minMemTableSize}) // no retention run at open
	if d := want.diff(stateOf(t, reopened)); d != "" {
		t.Fatalf("after a clean Close and Open: %s", d)
	}
	return snap, segs, want
}

// toReplay returns the segments the journal in dir would replay at its
// next open (none when first > last).
func toReplay(t *testing.T, dir string) (first, last uint64) {
	t.Helper()
	st, _, err := readWALState(dir)
	if err != nil {
		t.Fatal(err)
	}
	return st.first, st.last
}

func writeSegments(t *testing.T, dir string, segs map[string][]byte) {
	t.Helper()
	wdir := filepath.Join(dir, walDirName)
	if err := os.MkdirAll(wdir, 0o750); err != nil {
		t.Fatal(err)
	}
	for name, data := range segs {
		if err := os.WriteFile(filepath.Join(wdir, name), data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
}

// Badger is made durable only at checkpoints: all that was acknowledged
// after one comes back from the WAL alone. Badger is rolled back to a
// checkpoint (a copy taken after a clean Close) and given the WAL written
// since: the journal opened there holds every event, record, deletion and
// counter of the one that went on — deleted events stay deleted.
func TestWALRestoresWhatBadgerLost(t *testing.T) {
	snap, segs, want := walAfterCheckpoint(t)
	for _, d := range []Durability{DurabilitySync, DurabilityAsync} {
		dir := t.TempDir()
		copyDir(t, snap, dir)
		writeSegments(t, dir, segs)
		j := open(t, dir, Options{MemTableSize: minMemTableSize, Durability: d})
		if diff := want.diff(stateOf(t, j)); diff != "" {
			t.Fatalf("durability %d: Badger at the checkpoint plus the WAL: %s", d, diff)
		}
		// The segments replayed are not to be replayed again: a recovery
		// would start at the segment begun since, after the last one
		// written (a spare named after it held nothing and is removed).
		var replayed string
		for name, data := range segs {
			if !allZero(data) {
				replayed = max(replayed, name)
			}
		}
		if first, last := toReplay(t, dir); segmentPath("", first) <= replayed {
			t.Fatalf("segments %d to %d to replay after the replay of those up to %s", first, last, replayed)
		}
		// Replayed once more over what it already holds (a crash right
		// after the replay, before the segments were removed): the same.
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		if n := zeroFill(t, dir); n != 0 {
			t.Fatalf("durability %d: %d bytes past the last frames of the segments after the replay and Close", d, n)
		}
		writeSegments(t, dir, segs)
		j = open(t, dir, Options{MemTableSize: minMemTableSize, Durability: d})
		if diff := want.diff(stateOf(t, j)); diff != "" {
			t.Fatalf("durability %d: WAL replayed twice: %s", d, diff)
		}
	}
}

// The end of the last segment may hold a frame whose write never finished
// (never acknowledged): the replay stops there. Damage that an interrupted
// write cannot leave would lose acknowledged appends: Open refuses it,
// naming the segment and the byte.
func TestWALTornEnd(t *testing.T) {
	snap, segs, want := walAfterCheckpoint(t)
	// The last segment written's frames (then zeros: it was a spare; a
	// spare named after it may follow, all zeros); the last append is its
	// last frame.
	names := slices.Sorted(maps.Keys(segs))
	name := names[len(names)-1]
	for allZero(segs[name]) {
		names = names[:len(names)-1]
		name = names[len(names)-1]
	}
	data := segs[name]
	var frames []int
	pos := segHeader
	for pos < len(data) {
		_, next, ok := frameAt(data, pos)
		if !ok {
			break
		}
		frames = append(frames, pos)
		pos = next
	}
	if len(frames) == 0 || !allZero(data[pos:]) {
		t.Fatalf("segment %s: %d frames, then %d bytes not all zero", name, len(frames), len(data)-pos)
	}
	data = data[:pos]
	lastFrame := frames[len(frames)-1]
	with := func(last []byte) map[string][]byte {
		m := maps.Clone(segs)
		m[name] = last
		return m
	}
	zeros := make([]byte, 4096)

	torn := map[string][]byte{
		"half a header": append(bytes.Clone(data), 0, 0, 1),
		"zeros":         append(bytes.Clone(data), zeros...),
	}
	for what, seg := range torn {
		dir := t.TempDir()
		copyDir(t, snap, dir)
		writeSegments(t, dir, with(seg))
		j := open(t, dir, Options{MemTableSize: minMemTableSize})
		if diff := want.diff(stateOf(t, j)); diff != "" {
			t.Fatalf("%s after the last frame: %s", what, diff)
		}
	}

	// The last frame's write interrupted: the state before it.
	noTrailer := bytes.Clone(data)
	clear(noTrailer[len(noTrailer)-frameTrailer:])
	for what, seg := range map[string][]byte{
		"cut by the end of the file": data[:lastFrame+(len(data)-lastFrame)/2],
		"without its trailer":        append(noTrailer, zeros...),
	} {
		dir := t.TempDir()
		copyDir(t, snap, dir)
		writeSegments(t, dir, with(seg))
		j := open(t, dir, Options{MemTableSize: minMemTableSize})
		got := stateOf(t, j)
		if got.info.LastOffset >= want.info.LastOffset || got.info.LastOffset < want.info.LastOffset-10 {
			t.Fatalf("last frame %s: last offset %d, want the one before the last append of %d", what, got.info.LastOffset, want.info.LastOffset)
		}
		for i, e := range got.events {
			if !proto.Equal(e, want.events[i]) {
				t.Fatalf("last frame %s: event %d is %v, want %v", what, i, e, want.events[i])
			}
		}
	}

	// Damage no interrupted write leaves: refused, naming the segment and
	// the byte of the damaged frame.
	flip := func(seg []byte, at int) []byte {
		seg = bytes.Clone(seg)
		for k := range 8 {
			seg[at+k] ^= 0xff
		}
		return seg
	}
	before := frames[len(frames)-2]
	for what, c := range map[string]struct {
		segs map[string][]byte
		at   int
	}{
		"the last frame whole, its payload damaged": {with(append(flip(data, lastFrame+frameHeader+1), zeros...)), lastFrame},
		"a frame damaged, valid frames after it":    {with(append(flip(data, before+frameHeader), zeros...)), before},
		"a frame damaged, another segment after it": {
			func() map[string][]byte {
				m := with(flip(data, lastFrame+frameHeader))
				m["00000000000000000999.wal"] = data[:lastFrame]
				return m
			}(), lastFrame,
		},
	} {
		dir := t.TempDir()
		copyDir(t, snap, dir)
		writeSegments(t, dir, c.segs)
		_, err := Open(dir, Options{MemTableSize: minMemTableSize})
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), fmt.Sprintf("byte %d ", c.at)) {
			t.Fatalf("%s: Open = %v, want ErrCorrupt naming %s and byte %d", what, err, name, c.at)
		}
	}
}

// A closed segment is no longer replayed once a checkpoint has made Badger
// durable; the journal reopens whole after a Close.
func TestWALCheckpoints(t *testing.T) {
	dir := t.TempDir()
	var logs bytes.Buffer
	opts := Options{
		segmentBytes: 256 << 10,
		Logger:       slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	j := open(t, dir, opts)
	first := j.wal.id
	appendRound(t, j, 0, 10000) // about 10 MB
	if started := j.wal.id - first; started < 20 {
		t.Fatalf("%d segments of 256 KiB started for 10 MB", started)
	}
	if !testwait.Until(10*time.Second, func() bool { return j.wal.id-j.wal.state.replayFrom() <= 1 }) {
		t.Fatalf("segments %d to %d not checkpointed", j.wal.state.replayFrom(), j.wal.id)
	}
	want := stateOf(t, j)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "journal checkpoint") {
		t.Fatalf("no checkpoint in the journal's log:\n%s", logs.String())
	}
	j = open(t, dir, Options{})
	if diff := want.diff(stateOf(t, j)); diff != "" {
		t.Fatal(diff)
	}
}

// Retention reclaims whole segments, oldest first, once every event in
// them is deleted and a checkpoint made the deletion durable; what it
// keeps reads back whole, also after a reopen.
func TestSegmentsReclaimed(t *testing.T) {
	dir := t.TempDir()
	opts := Options{segmentBytes: 256 << 10, RetentionMaxBytes: 2 << 20, RetentionInterval: time.Hour}
	j := open(t, dir, opts)
	appendRound(t, j, 0, 10000)
	if _, err := j.EnforceRetention(); err != nil {
		t.Fatal(err)
	}
	appendRound(t, j, 1, 300) // closes segments: checkpoints reclaim
	var ids []uint64
	if !testwait.Until(10*time.Second, func() bool {
		ids, _ = segments(j.wal.dir)
		return len(ids) > 0 && ids[0] > 1 && len(ids) < 20
	}) {
		t.Fatalf("segments %v: retention kept about 2 MB in segments of 256 KiB", ids)
	}
	if _, err := j.EnforceRetention(); err != nil { // so the run at the next open deletes nothing
		t.Fatal(err)
	}
	want := stateOf(t, j)
	if n := len(want.events); n == 0 || want.events[0].Offset != want.info.FirstOffset {
		t.Fatalf("%d events kept, the first at %d; floor %d", n, want.events[0].Offset, want.info.FirstOffset)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, opts)
	if diff := want.diff(stateOf(t, j)); diff != "" {
		t.Fatal(diff)
	}
	if _, err := j.Read(want.info.FirstOffset-1, 1, nil); !errors.As(err, new(*OutOfRangeError)) {
		t.Fatalf("Read below the floor = %v, want an OutOfRangeError", err)
	}
}

// With async durability the segments are written but not fsync'd: a
// process crash loses nothing (SIGKILL tests: crash_test.go), and Update
// works.
func TestWALAsync(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{Durability: DurabilityAsync})
	appendRound(t, j, 0, 100)
	if err := j.Update(func(txn *badger.Txn) error { return txn.Set([]byte("\x00u"), []byte("1")) }); err != nil {
		t.Fatal(err)
	}
	if j.wal.sync {
		t.Fatal("async journal fsyncs its WAL")
	}
	want := stateOf(t, j)
	if got := want.records["\x00u"]; got != "1" {
		t.Fatalf("Update's record = %q", got)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{Durability: DurabilityAsync})
	if diff := want.diff(stateOf(t, j)); diff != "" {
		t.Fatal(diff)
	}
}

// An error from Update's function is returned unchanged and writes nothing;
// the journal goes on.
func TestUpdateError(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	mine := errors.New("mine")
	err := j.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte("\x00u"), []byte("1")); err != nil {
			return err
		}
		return mine
	})
	if err != mine {
		t.Fatalf("Update = %v, want the function's error", err)
	}
	if _, ok := stateOf(t, j).records["\x00u"]; ok {
		t.Fatal("a failed Update wrote")
	}
	if _, err := j.Append(context.Background(), ev("car", "c1", "x")); err != nil {
		t.Fatal(err)
	}
}

// The seqNr cache restarts when it holds too many entities: the writer then
// reads entities from Badger, which must hold every group built before
// (awaitApplied).
func TestSeqNrCacheRestart(t *testing.T) {
	defer func(n int) { maxCachedEntities = n }(maxCachedEntities)
	maxCachedEntities = 20
	dir := t.TempDir()
	// A slow observer (called by the writer as it releases each group,
	// before the group is applied) makes each next group take the appends
	// queued meanwhile: groups of many entities, the cache restarting
	// within them.
	j := open(t, dir, Options{Observer: slowObserver{}})
	var pend []*Pending
	for i := range 3000 {
		if i%10 == 0 {
			time.Sleep(100 * time.Microsecond) // groups of about 10 appends
		}
		p, err := j.Submit(context.Background(), nil, ev("car", fmt.Sprint("c", i%200), "x"))
		if err != nil {
			t.Fatal(err)
		}
		pend = append(pend, p)
	}
	for _, p := range pend {
		if _, err := p.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	checkInvariants(t, readAll(t, j), 1)
}

type slowObserver struct{}

func (slowObserver) Committed(int, int, int64, time.Duration) { time.Sleep(5 * time.Millisecond) }
func (slowObserver) RetentionDeleted(int)                     {}

// An event too large for the LSM tree goes to Badger's value log and reads
// back whole after a reopen.
func TestValueLogEvent(t *testing.T) {
	dir := t.TempDir()
	j := open(t, dir, Options{})
	big := ev("car", "c1", strings.Repeat("x", 1<<20))
	if _, err := j.Append(context.Background(), big, ev("car", "c2", "small")); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, Options{})
	got, err := j.Read(1, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || len(got[0].Payload) != 1<<20 || string(got[1].Payload) != "small" {
		t.Fatalf("read back %d events", len(got))
	}
}

// A WAL write that fails fails the journal: the append is answered with
// ErrFailed, so is every later one, and the next Open replays what the WAL
// holds — every append acknowledged before.
func TestWALWriteFailure(t *testing.T) {
	dir := t.TempDir()
	j, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	appendRound(t, j, 0, 100)
	want := stateOf(t, j)
	j.wal.f.Close() // the next write fails
	if _, err := j.Append(context.Background(), ev("car", "c1", "x")); !errors.Is(err, ErrFailed) {
		t.Fatalf("append after the WAL broke = %v, want ErrFailed", err)
	}
	if _, err := j.Append(context.Background(), ev("car", "c2", "x")); !errors.Is(err, ErrFailed) {
		t.Fatalf("later append = %v, want ErrFailed", err)
	}
	j.Close()
	if ids, _ := segments(filepath.Join(dir, walDirName)); len(ids) == 0 {
		t.Fatal("a failed journal removed its WAL at Close")
	}
	j = open(t, dir, Options{})
	if diff := want.diff(stateOf(t, j)); diff != "" {
		t.Fatal(diff)
	}
}

// TestApplyFailure: an append is answered once logged; if Badger then
// refuses its batch, reads that must see it fail with ErrFailed instead of
// missing it, and so does every later append. Events Badger holds can
// still be read.
func TestApplyFailure(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	appendRound(t, j, 0, 100)
	// An event with a write of an empty key, which Submit refuses and
	// Badger does too.
	events := []*streamdv1.Event{ev("car", "c1", "x")}
	size, err := j.opts.Limits.validate(events)
	if err != nil {
		t.Fatal(err)
	}
	req := writeReq{events: events, writes: []Write{{Value: []byte("v")}}, size: size}
	req.cost, req.entries = txnCost(events, size)
	p, err := j.submit(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	res, err := p.Wait()
	if err != nil {
		t.Fatalf("logged append = %v, want it answered", err)
	}
	if _, err := j.Read(res[0].Offset, 1, nil); !errors.Is(err, ErrFailed) {
		t.Fatalf("read of the event Badger refused = %v, want ErrFailed", err)
	}
	if err := j.View(func(*badger.Txn) error { return nil }); !errors.Is(err, ErrFailed) {
		t.Fatalf("View after the failed apply = %v, want ErrFailed", err)
	}
	if got, err := j.Read(1, 10, nil); err != nil || len(got) != 10 {
		t.Fatalf("read of events Badger holds = %d events, %v", len(got), err)
	}
	if _, err := j.Append(context.Background(), ev("car", "c1", "x")); !errors.Is(err, ErrFailed) {
		t.Fatalf("append after the failed apply = %v, want ErrFailed", err)
	}
}

// TestReadYourWrites: appends are answered before Badger holds them; every
// read made after the answer still finds them, under concurrent appenders.
func TestReadYourWrites(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			id := fmt.Sprint("e", w)
			for range 100 {
				res, err := j.Append(context.Background(), ev("car", id, "x"))
				if err != nil {
					t.Error(err)
					return
				}
				got, err := j.Read(res[0].Offset, 1, nil)
				if err != nil || len(got) != 1 || got[0].EntityId != id {
					t.Errorf("read of offset %d just answered: %v, %v", res[0].Offset, got, err)
					return
				}
				if _, err := j.Load("car", id, res[0].SeqNr); err != nil {
					t.Errorf("load of %s seqNr %d just answered: %v", id, res[0].SeqNr, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestReadBehindApplyDoesNotWait: a read of events Badger holds does not
// wait for the batches still being applied (a catch-up behind a busy
// writer); a read of an event answered but not applied does.
func TestReadBehindApplyDoesNotWait(t *testing.T) {
	j := open(t, t.TempDir(), Options{})
	appendRound(t, j, 0, 100)
	// An Update's function runs in applyLoop: blocking it holds up the
	// apply of every later batch, not their logging and answers.
	hold, entered := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(hold) })
	t.Cleanup(release) // before Close, which waits for the Update
	updated := make(chan error, 1)
	go func() {
		updated <- j.Update(func(*badger.Txn) error { close(entered); <-hold; return nil })
	}()
	<-entered
	res, err := j.Append(context.Background(), ev("car", "late", "x"))
	if err != nil {
		t.Fatal(err)
	}
	read := func(from uint64) <-chan error {
		done := make(chan error, 1)
		go func() {
			got, err := j.Read(from, 10, nil)
			if err == nil && len(got) == 0 {
				err = fmt.Errorf("read from %d found nothing", from)
			}
			done <- err
		}()
		return done
	}
	select {
	case err := <-read(1):
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read of applied events waited for the apply of later batches")
	}
	late := read(res[0].Offset)
	select {
	case err := <-late:
		t.Fatalf("a read of an event not applied yet returned before its apply: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	if err := <-late; err != nil {
		t.Fatal(err)
	}
	if err := <-updated; err != nil {
		t.Fatal(err)
	}
}

// tornAt tells what an interrupted write of the last frame leaves from
// damage, over a segment of three frames and its zero fill.
func TestTornAt(t *testing.T) {
	frame := func(payload []byte) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
		b = binary.BigEndian.AppendUint32(b, crc32.Checksum(payload, castagnoli))
		hsum := crc32.Checksum(b, castagnoli)
		b = binary.BigEndian.AppendUint32(b, hsum)
		b = append(b, payload...)
		return binary.BigEndian.AppendUint32(b, hsum)
	}
	seg := appendSegHeader(nil, 7)
	var starts []int
	for i := range 3 {
		starts = append(starts, len(seg))
		seg = append(seg, frame(bytes.Repeat([]byte{byte('a' + i)}, 300))...)
	}
	end, last, middle := len(seg), starts[2], starts[1]
	zeros := make([]byte, 4096)
	edit := func(data []byte, f func([]byte)) []byte {
		data = bytes.Clone(data)
		f(data)
		return data
	}
	for _, c := range []struct {
		name string
		data []byte
		at   int
		torn bool
	}{
		{"last frame cut by the end of the file", seg[:last+100], last, true},
		{"last frame without its trailer", append(edit(seg, func(b []byte) { clear(b[end-frameTrailer:]) }), zeros...), last, true},
		{"half a header", append(append(bytes.Clone(seg), 0, 0, 1), zeros...), end, true},
		{"last frame's payload damaged, trailer in place", append(edit(seg, func(b []byte) { b[last+frameHeader+5] ^= 1 }), zeros...), last, false},
		{"last frame's header damaged", append(edit(seg, func(b []byte) { b[last+1] ^= 1 }), zeros...), last, false},
		{"last frame cut, data after it", append(append(bytes.Clone(seg[:last+100]), make([]byte, 400)...), 1), last, false},
		{"a frame damaged, valid frames after it", append(edit(seg, func(b []byte) { b[middle+frameHeader+5] ^= 1 }), zeros...), middle, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, _, ok := frameAt(c.data, c.at); ok {
				t.Fatalf("a valid frame at byte %d", c.at)
			}
			if got := tornAt(c.data, c.at); got != c.torn {
				t.Fatalf("tornAt = %v, want %v", got, c.torn)
			}
			if !c.torn {
				err := damaged("seg.wal", c.data, c.at, false)
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("seg.wal: damaged frame at byte %d ", c.at)) {
					t.Fatalf("damaged = %v", err)
				}
			}
		})
	}
}

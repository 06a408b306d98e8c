package journal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

const (
	crashDirEnv  = "STREAMD_JOURNAL_CRASH_DIR"
	updateDirEnv = "STREAMD_JOURNAL_UPDATE_DIR"
	// reclaimEnv makes crashChild's journal reclaim segments all the time:
	// small segments, retention of 1 MiB run every few milliseconds.
	reclaimEnv = "STREAMD_JOURNAL_CRASH_RECLAIM"
	// manyEnv makes crashChild write manyEntities entities, with the
	// smallest memtable and a flush of the index per manyFlushEvents
	// events: each flush takes several Badger transactions.
	manyEnv = "STREAMD_JOURNAL_CRASH_MANY"
)

// The entities crashChild writes: crashEntities, or manyEntities with
// manyEnv.
const crashEntities, manyEntities, manyFlushEvents = 20, 50_000, 20_000

// reclaimOptions keep retention and segment reclaiming busy.
var reclaimOptions = Options{segmentBytes: 128 << 10, RetentionMaxBytes: 1 << 20, RetentionInterval: 5 * time.Millisecond}

// crashMarkPrefix begins the record each crash batch commits with its events.
const crashMarkPrefix = "\x00crash/"

// crashChild runs in the child process of TestKill9: it appends batches
// forever, each with a record of its own (AppendWith), and prints each
// acknowledged batch, until it is killed.
func crashChild() bool {
	if dir := os.Getenv(updateDirEnv); dir != "" {
		updateChild(dir)
		return true
	}
	if dir := os.Getenv(damageDirEnv); dir != "" {
		damageChild(dir)
		return true
	}
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		return false
	}
	opts := Options{}
	if os.Getenv(reclaimEnv) != "" {
		opts = reclaimOptions
	}
	indexFlushEvents = 64 // flushes of the index all the time
	entities := crashEntities
	if os.Getenv(manyEnv) != "" {
		opts.MemTableSize, indexFlushEvents, entities = minMemTableSize, manyFlushEvents, manyEntities
	}
	j, err := Open(dir, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("%d-%d-%d", os.Getpid(), w, i)
				n := 1 + rand.IntN(5)
				events := make([]*streamdv1.Event, n)
				for k := range events {
					events[k] = &streamdv1.Event{
						EntityType: "acct", EntityId: fmt.Sprintf("a%d", rand.IntN(entities)),
						Payload:  make([]byte, 128),
						Metadata: map[string]string{"batch": id, "n": strconv.Itoa(n)},
					}
				}
				mark := Write{Key: []byte(crashMarkPrefix + id), Value: []byte(strconv.Itoa(n))}
				res, err := j.AppendWith(context.Background(), []Write{mark}, events...)
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(4)
				}
				out.Lock()
				fmt.Fprintf(os.Stdout, "ack %s %d %d\n", id, res[0].Offset, n)
				out.Unlock()
			}
		})
	}
	wg.Wait()
	return true
}

// crashAck is a batch crashChild acknowledged: its first offset and size.
type crashAck struct {
	offset uint64
	n      int
}

// killChild runs crashChild with env, reads its acknowledgements into acked
// and SIGKILLs it after killAfter of them.
func killChild(t *testing.T, acked map[string]crashAck, killAfter int, env ...string) {
	t.Helper()
	cmd, stdout, stderr := startChild(t, env...)
	sc := bufio.NewScanner(stdout)
	lines := 0
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "ack" {
			t.Fatalf("child said %q", sc.Text())
		}
		off, _ := strconv.ParseUint(f[2], 10, 64)
		n, _ := strconv.Atoi(f[3])
		acked[f[1]] = crashAck{off, n}
		if lines++; lines == killAfter {
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	cmd.Wait()
	if lines < killAfter {
		t.Fatalf("child stopped after %d acks: %s", lines, stderr.String())
	}
}

// TestKill9 kills a process mid-append several times and checks that every
// acknowledged batch survives whole, that no batch is half written, and that
// a batch's record (AppendWith) is stored exactly when its events are.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	acked := map[string]crashAck{}
	for range 4 {
		killChild(t, acked, 100+rand.IntN(400), crashDirEnv+"="+dir)
	}

	j := open(t, dir, Options{})
	all := readAll(t, j)
	checkInvariants(t, all, 1)
	checkIndex(t, j, all, crashEntities)
	batches := map[string][]*streamdv1.Event{}
	for _, e := range all {
		id := e.Metadata["batch"]
		batches[id] = append(batches[id], e)
	}
	for id, evs := range batches {
		n, _ := strconv.Atoi(evs[0].Metadata["n"])
		if len(evs) != n {
			t.Fatalf("batch %s half written: %d of %d events", id, len(evs), n)
		}
		for k, e := range evs {
			if e.Offset != evs[0].Offset+uint64(k) {
				t.Fatalf("batch %s not contiguous", id)
			}
		}
	}
	marks := map[string]string{}
	err := j.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(crashMarkPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			marks[strings.TrimPrefix(string(it.Item().Key()), crashMarkPrefix)] = string(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, evs := range batches {
		if marks[id] != strconv.Itoa(len(evs)) {
			t.Fatalf("batch %s: %d events stored but its record is %q", id, len(evs), marks[id])
		}
	}
	for id := range marks {
		if batches[id] == nil {
			t.Fatalf("record of batch %s stored without its events", id)
		}
	}
	for id, a := range acked {
		evs := batches[id]
		if len(evs) != a.n || evs[0].Offset != a.offset {
			t.Fatalf("acknowledged batch %s (offset %d, %d events) lost or moved: stored %d events", id, a.offset, a.n, len(evs))
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	// What each crash left past the last frame (the zero fill of the
	// segment being written, the spare named after it) is not kept.
	if n := zeroFill(t, dir); n != 0 {
		t.Fatalf("after 4 SIGKILLs and a clean Close the WAL segments hold %d bytes past their last frames", n)
	}
	t.Logf("%d acknowledged batches, %d events stored, all present after 4 SIGKILLs", len(acked), len(all))
}

// TestKill9DuringIndexFlushes kills a process whose index flushes each
// take several Badger transactions (more entities per flush than one
// holds), several times: after each recovery every acknowledged batch is
// there, and reading each entity by seqNr gives exactly its events. A kill
// lands between a flush's transactions only by chance; TestIndexFlushInGroups
// makes that state itself.
func TestKill9DuringIndexFlushes(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	acked := map[string]crashAck{}
	for cycle := range 3 {
		// About 3 events a batch: a kill after 2 to 4 flushes.
		killChild(t, acked, 2*manyFlushEvents/3+rand.IntN(2*manyFlushEvents/3), crashDirEnv+"="+dir, manyEnv+"=1")
		j := open(t, dir, Options{MemTableSize: minMemTableSize})
		if cycle == 0 && j.groupEntries >= manyFlushEvents/2 {
			t.Fatalf("a transaction holds %d entries: a flush of %d events over %d entities would not take several", j.groupEntries, manyFlushEvents, manyEntities)
		}
		all := readAll(t, j)
		checkInvariants(t, all, 1)
		checkIndex(t, j, all, manyEntities)
		at := map[uint64]bool{}
		for _, e := range all {
			at[e.Offset] = true
		}
		for id, a := range acked {
			for k := range a.n {
				if !at[a.offset+uint64(k)] {
					t.Fatalf("cycle %d: acknowledged batch %s (offset %d, %d events) lost", cycle, id, a.offset, a.n)
				}
			}
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		t.Logf("cycle %d: %d acknowledged batches, %d events stored", cycle, len(acked), len(all))
	}
}

// zeroFill returns the bytes of the WAL segments in dir past their last
// frame (all of a segment with none).
func zeroFill(t *testing.T, dir string) (n int64) {
	t.Helper()
	wdir := filepath.Join(dir, walDirName)
	ids, err := segments(wdir)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		path := segmentPath(wdir, id)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		pos, err := checkSegHeader(data, id, path)
		if err != nil {
			t.Fatal(err)
		}
		for pos > 0 && pos < len(data) {
			_, next, ok := frameAt(data, pos)
			if !ok {
				break
			}
			pos = next
		}
		n += int64(len(data) - pos)
	}
	return n
}

// TestKill9DuringReclaim kills a process whose retention deletes and
// reclaims segments all the time: after each recovery every acknowledged
// batch above the floor is there whole, nothing below the floor is
// readable (by offset or by entity), no offset is handed out twice, and the
// segments kept are those the events need.
func TestKill9DuringReclaim(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	acked := map[string]crashAck{}
	reclaimed := false
	for cycle := range 6 {
		killChild(t, acked, 300+rand.IntN(1500), crashDirEnv+"="+dir, reclaimEnv+"=1")
		var maxAcked uint64
		for _, a := range acked {
			maxAcked = max(maxAcked, a.offset+uint64(a.n)-1)
		}
		j, err := Open(dir, reclaimOptions)
		if err != nil {
			t.Fatalf("cycle %d: open after SIGKILL: %v", cycle, err)
		}
		// What the background retention deletes of the recovered journal,
		// deleted before the reads (nothing is appended after).
		if _, err := j.EnforceRetention(); err != nil {
			t.Fatal(err)
		}
		info := j.Info()
		if info.LastOffset < maxAcked {
			t.Fatalf("cycle %d: last offset %d below the acknowledged %d: offsets would be handed out again", cycle, info.LastOffset, maxAcked)
		}
		all := readAll(t, j)
		if len(all) == 0 || all[0].Offset != info.FirstOffset {
			t.Fatalf("cycle %d: %d events read from the floor %d", cycle, len(all), info.FirstOffset)
		}
		byOffset := map[uint64]*streamdv1.Event{}
		for _, e := range all {
			byOffset[e.Offset] = e
		}
		for id, a := range acked {
			if a.offset < info.FirstOffset {
				continue // deleted by retention
			}
			for k := range a.n {
				if e := byOffset[a.offset+uint64(k)]; e == nil || e.Metadata["batch"] != id {
					t.Fatalf("cycle %d: acknowledged batch %s lost event %d", cycle, id, a.offset+uint64(k))
				}
			}
		}
		if _, err := j.Read(info.FirstOffset-1, 1, nil); info.FirstOffset > 1 && !errors.As(err, new(*OutOfRangeError)) {
			t.Fatalf("cycle %d: read below the floor %d = %v, want an OutOfRangeError", cycle, info.FirstOffset, err)
		}
		checkIndex(t, j, all, crashEntities)
		if ids, _ := segments(filepath.Join(dir, walDirName)); len(ids) > 0 && ids[0] > 1 {
			reclaimed = true
		}
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !reclaimed {
		t.Fatal("no segment was ever reclaimed")
	}
	t.Logf("%d acknowledged batches; 6 SIGKILLs while retention reclaimed segments", len(acked))
}

// updateChild runs in the child process of TestUpdateSurvivesKill9: appends
// that set the record \x00pos, an Update that sets it too, then appends
// that do not touch it, printing each step, until it is killed.
func updateChild(dir string) {
	j, err := Open(dir, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	appendWith := func(key string, i int) {
		w := []Write{{Key: []byte(key), Value: []byte(strconv.Itoa(i))}}
		if _, err := j.AppendWith(context.Background(), w, &streamdv1.Event{EntityType: "acct", EntityId: "a", Payload: make([]byte, 128)}); err != nil {
			fmt.Fprintln(os.Stderr, "child append:", err)
			os.Exit(4)
		}
	}
	for i := range 100 {
		appendWith("\x00pos", i)
	}
	err = j.Update(func(txn *badger.Txn) error { return txn.Set([]byte("\x00pos"), []byte("update")) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "child update:", err)
		os.Exit(4)
	}
	fmt.Println("updated")
	for i := 0; ; i++ {
		appendWith("\x00other", i)
		fmt.Println("ack")
	}
}

// An Update returns once it is durable, and a recovery never replays an
// append logged before it over it: here a record set by 100 appends and
// then by an Update keeps the Update's value after a SIGKILL, with appends
// logged after the Update replayed.
func TestUpdateSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	cmd, stdout, stderr := startChild(t, updateDirEnv+"="+dir)
	sc := bufio.NewScanner(stdout)
	acks := -1
	for sc.Scan() && acks < 50 {
		switch sc.Text() {
		case "updated":
			acks = 0
		case "ack":
			acks++
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if acks < 50 {
		t.Fatalf("child stopped: %s", stderr.String())
	}
	j := open(t, dir, Options{})
	s := stateOf(t, j)
	if got := s.records["\x00pos"]; got != "update" {
		t.Fatalf("record set by the Update is %q after a SIGKILL and a recovery", got)
	}
	if n, _ := strconv.Atoi(s.records["\x00other"]); n < 49 || len(s.events) < 150 {
		t.Fatalf("appends after the Update lost: record %q, %d events", s.records["\x00other"], len(s.events))
	}
}

// startChild starts this test binary as a child with env set, for the
// child functions above.
func startChild(t *testing.T, env ...string) (*exec.Cmd, io.Reader, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(strings.Builder)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdout, stderr
}

// checkIndex checks that reading each of crashChild's entities (a0 to
// a<entities-1>) by seqNr gives exactly its events in all (the events from
// the floor on), those retention deleted meanwhile aside.
func checkIndex(t *testing.T, j *Journal, all []*streamdv1.Event, entities int) {
	t.Helper()
	byEntity := map[string][]*streamdv1.Event{}
	for _, e := range all {
		byEntity[e.EntityId] = append(byEntity[e.EntityId], e)
	}
	for a := range entities {
		id := fmt.Sprintf("a%d", a)
		got, err := j.ReadEntity("acct", id, 1, 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		floor := j.Info().FirstOffset // retention may run in the background
		kept := func(evs []*streamdv1.Event) []*streamdv1.Event {
			for len(evs) > 0 && evs[0].Offset < floor {
				evs = evs[1:]
			}
			return evs
		}
		got, want := kept(got), kept(byEntity[id])
		if len(got) != len(want) {
			t.Fatalf("entity %s: %d events read by seqNr, %d by offset (floor %d)", id, len(got), len(want), floor)
		}
		for k := range got {
			if got[k].Offset != want[k].Offset || got[k].SeqNr != want[k].SeqNr {
				t.Fatalf("entity %s: event %d read by seqNr is offset %d seqNr %d, by offset %d/%d", id, k, got[k].Offset, got[k].SeqNr, want[k].Offset, want[k].SeqNr)
			}
		}
	}
}

package journal

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

const damageDirEnv = "STREAMD_JOURNAL_DAMAGE_DIR"

// damageSegmentBytes keeps the WAL segments of damageChild small, so that
// several exist when it is killed.
const damageSegmentBytes = 1 << 20

// damageChild runs in the child process of TestWALDamageAfterKill9: it
// appends from several goroutines and prints each acknowledged append
// (first offset, events, batch id) until it is killed.
func damageChild(dir string) {
	j, err := Open(dir, Options{segmentBytes: damageSegmentBytes})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child open:", err)
		os.Exit(3)
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("%d-%d", w, i)
				events := make([]*streamdv1.Event, 1+rand.IntN(3))
				for k := range events {
					events[k] = &streamdv1.Event{
						EntityType: "acct", EntityId: fmt.Sprintf("a%d", rand.IntN(20)),
						Payload: make([]byte, 128), Metadata: map[string]string{"batch": id},
					}
				}
				res, err := j.Append(context.Background(), events...)
				if err != nil {
					fmt.Fprintln(os.Stderr, "child append:", err)
					os.Exit(4)
				}
				out.Lock()
				fmt.Printf("ack %d %d %s\n", res[0].Offset, len(events), id)
				out.Unlock()
			}
		})
	}
	wg.Wait()
}

// killedJournal runs damageChild in a new directory until its WAL has at
// least two segments and the newest holds 64 KiB of frames, kills it with
// SIGKILL, and returns the directory and the batch id of every offset
// acknowledged.
func killedJournal(t *testing.T) (string, map[uint64]string) {
	t.Helper()
	dir := t.TempDir()
	cmd, stdout, stderr := startChild(t, damageDirEnv+"="+dir)
	var mu sync.Mutex
	acked := map[uint64]string{}
	read := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			off, err1 := strconv.ParseUint(f[min(1, len(f)-1)], 10, 64)
			n, err2 := strconv.Atoi(f[min(2, len(f)-1)])
			if len(f) != 4 || f[0] != "ack" || err1 != nil || err2 != nil {
				read <- fmt.Errorf("child said %q", sc.Text())
				return
			}
			mu.Lock()
			for k := range uint64(n) {
				acked[off+k] = f[3]
			}
			mu.Unlock()
		}
		read <- sc.Err()
	}()
	ready := func() bool {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		ids, err := segments(filepath.Join(dir, walDirName))
		if err != nil || len(ids) < 2 || n < 2000 {
			return false
		}
		_, end := activeSegment(t, dir)
		return end >= 64<<10
	}
	deadline := time.Now().Add(time.Minute)
	for !ready() {
		select {
		case err := <-read:
			cmd.Wait()
			t.Fatalf("child stopped (%v): %s", err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("child did not fill two WAL segments within a minute: %s", stderr.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-read; err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	return dir, acked
}

// activeSegment returns the path of the newest WAL segment and the byte
// its valid frames end at.
func activeSegment(t *testing.T, dir string) (string, int) {
	t.Helper()
	wdir := filepath.Join(dir, walDirName)
	ids, err := segments(wdir)
	if err != nil || len(ids) == 0 {
		t.Fatalf("no WAL segment in %s: %v", wdir, err)
	}
	// The last segment written: a spare named after it holds zeros.
	var path string
	var data []byte
	for k := len(ids) - 1; k >= 0; k-- {
		path = segmentPath(wdir, ids[k])
		var err error
		if data, err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
		if !allZero(data) || k == 0 {
			break
		}
	}
	end := 0
	if len(data) >= segHeader && !allZero(data[:segHeader]) {
		end = segHeader
	}
	for {
		_, next, ok := frameAt(data, end)
		if !ok {
			return path, end
		}
		end = next
	}
}

func flipBytes(t *testing.T, path string, at int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 8)
	if _, err := f.ReadAt(b, int64(at)); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0xff
	}
	if _, err := f.WriteAt(b, int64(at)); err != nil {
		t.Fatal(err)
	}
}

// A journal killed with SIGKILL, then its WAL damaged: Open refuses with
// ErrCorrupt naming the damaged or missing file (and the byte, for damage
// inside a segment), even when Badger happens to hold every acknowledged
// event (a segment that may hold acknowledged appends is never silently
// done without). An interrupted write of a frame at the end of the last
// segment opens, with every acknowledged event in place and offsets handed
// out above every acknowledged one.
func TestWALDamageAfterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	type damage struct {
		name string
		// do damages the journal in dir and returns what the refusal
		// must name, or nil when Open must succeed.
		do func(t *testing.T, dir string) []string
	}
	cases := []damage{
		{"flip 8 bytes 100 bytes before the data end of the active segment", func(t *testing.T, dir string) []string {
			path, end := activeSegment(t, dir)
			flipBytes(t, path, end-100)
			return []string{path, "byte "}
		}},
		{"flip 8 bytes in the middle of the active segment, Badger's memtable log removed", func(t *testing.T, dir string) []string {
			mems, err := filepath.Glob(filepath.Join(dir, "*.mem"))
			if err != nil || len(mems) == 0 {
				t.Fatalf("no memtable log in %s: %v", dir, err)
			}
			for _, m := range mems {
				if err := os.Remove(m); err != nil {
					t.Fatal(err)
				}
			}
			path, end := activeSegment(t, dir)
			flipBytes(t, path, end/2)
			return []string{path, "byte "}
		}},
		{"delete every WAL segment", func(t *testing.T, dir string) []string {
			paths, _ := filepath.Glob(filepath.Join(dir, walDirName, "*.wal"))
			for _, p := range paths {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			}
			return []string{"missing"}
		}},
		{"delete the active segment", func(t *testing.T, dir string) []string {
			path, _ := activeSegment(t, dir)
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			return []string{path, "missing"}
		}},
		{"delete the oldest segment needed", func(t *testing.T, dir string) []string {
			st, found, err := readWALState(dir)
			if err != nil || !found {
				t.Fatalf("WAL state: %v (found %v)", err, found)
			}
			path := segmentPath(filepath.Join(dir, walDirName), st.first)
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			return []string{path, "missing"}
		}},
		{"truncate the active segment to half its frames", func(t *testing.T, dir string) []string {
			path, end := activeSegment(t, dir)
			if err := os.Truncate(path, int64(end/2)); err != nil {
				t.Fatal(err)
			}
			return []string{path, "byte "}
		}},
		{"a torn tail: half a frame written after the last one", func(t *testing.T, dir string) []string {
			path, end := activeSegment(t, dir)
			// The spare named as the next segment follows it, all zeros:
			// the tail is still the end of the last segment written.
			if ids, _ := segments(filepath.Join(dir, walDirName)); segmentPath(filepath.Join(dir, walDirName), ids[len(ids)-1]) == path {
				t.Fatalf("no spare named after %s", path)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// A copy of the last frame, written only up to its middle, as
			// an interrupted write leaves it.
			last := segHeader
			for p := segHeader; p < end; {
				_, next, _ := frameAt(data, p)
				last, p = p, next
			}
			half := data[last : last+(end-last)/2]
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(half, int64(end)); err != nil {
				t.Fatal(err)
			}
			return nil
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir, acked := killedJournal(t)
			names := c.do(t, dir)
			j, err := Open(dir, Options{})
			if err != nil {
				if names == nil {
					t.Fatalf("Open after a torn tail: %v", err)
				}
				for _, n := range names {
					if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), n) {
						t.Fatalf("Open = %v, want ErrCorrupt naming %q", err, n)
					}
				}
				t.Logf("refused: %v", err)
				return
			}
			defer j.Close()
			if names != nil {
				t.Errorf("Open accepted the damage, want ErrCorrupt naming %q", names)
			}
			stored := map[uint64]string{}
			for _, e := range readAll(t, j) {
				stored[e.Offset] = e.Metadata["batch"]
			}
			var missing []uint64
			var high uint64
			for off, id := range acked {
				if stored[off] != id {
					missing = append(missing, off)
				}
				high = max(high, off)
			}
			res, err := j.Append(context.Background(), ev("acct", "after", "x"))
			if err != nil {
				t.Fatal(err)
			}
			if len(missing) > 0 || res[0].Offset <= high {
				t.Fatalf("opened with %d of %d acknowledged events missing or changed (e.g. offsets %v); next offset %d, highest acknowledged %d",
					len(missing), len(acked), missing[:min(5, len(missing))], res[0].Offset, high)
			}
			t.Logf("opened: %d acknowledged events in place, next offset %d", len(acked), res[0].Offset)
		})
	}
}

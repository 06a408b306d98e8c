package fault

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// A small filesystem to fill: a size-limited tmpfs, or ext4 on a loop
// device (whose holes read as zeros without allocating, as a disk's do).
type smallFS struct {
	name  string
	mount func(t *testing.T) string
}

var smallFilesystems = []smallFS{
	{"tmpfs", func(t *testing.T) string {
		return mountFS(t, "-t", "tmpfs", "-o", "size=64m", "tmpfs")
	}},
	{"ext4", func(t *testing.T) string {
		if _, err := exec.LookPath("mkfs.ext4"); err != nil {
			t.Skip("no mkfs.ext4: cannot make a small ext4 filesystem for a full disk")
		}
		img := filepath.Join(t.TempDir(), "ext4.img")
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 64<<20); err != nil {
			t.Fatal(err)
		}
		// -m 0: no blocks reserved for root, who runs this test and streamd.
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
			t.Skipf("mkfs.ext4 %s: %v: %s", img, err, out)
		}
		return mountFS(t, "-o", "loop", img)
	}},
}

// mountFS mounts (mount's arguments before the directory) on a new
// directory, or skips the test when it may not.
func mountFS(t *testing.T, args ...string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small filesystem for a full disk")
	}
	if _, err := exec.LookPath("mount"); err != nil {
		t.Skip("no mount command: cannot make a small filesystem for a full disk")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", append(args, dir)...).CombinedOutput(); err != nil {
		t.Skipf("cannot mount %v on %s (%v: %s): no full disk to test", args, dir, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes path until the filesystem is full and returns its size.
func fill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n int64
	for _, chunk := range []int{1 << 20, 4 << 10, 512} {
		buf := make([]byte, chunk)
		for {
			w, err := f.Write(buf)
			n += int64(w)
			if errors.Is(err, syscall.ENOSPC) {
				break
			}
			if err != nil {
				t.Fatalf("fill %s: %v", path, err)
			}
		}
	}
	return n
}

// stream is a Subscribe stream from the earliest offset, read in the
// background.
type stream struct {
	mu     sync.Mutex
	events []Event
	err    error
	got    *watermark
	cancel context.CancelFunc
	done   chan struct{}
}

func subscribe(t *testing.T, addr string) *stream {
	t.Helper()
	conn := dial(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream{got: newWatermark(), cancel: cancel, done: make(chan struct{})}
	sub, err := streamdv1.NewEventStreamServiceClient(conn).Subscribe(ctx, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
		StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST, ConsumerName: "diskfull-reader"}}}); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(s.done)
		for {
			m, err := sub.Recv()
			if err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
				return
			}
			for _, e := range m.GetEvents().GetEvents() {
				s.mu.Lock()
				s.events = append(s.events, eventOf(e))
				s.mu.Unlock()
				s.got.set(e.Offset)
			}
		}
	}()
	t.Cleanup(func() { s.close(); conn.Close() })
	return s
}

func (s *stream) close() {
	s.cancel()
	<-s.done
}

// check waits until the stream has read up to the last of acked and
// compares what it read with acked.
func (s *stream) check(t *testing.T, what string, acked []Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, ok := s.got.reached(ctx, acked[len(acked)-1].Offset); !ok {
		s.mu.Lock()
		defer s.mu.Unlock()
		t.Fatalf("%s: read up to offset %d of %d (stream error: %v)", what, s.got.get(), acked[len(acked)-1].Offset, s.err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		t.Fatalf("%s: the stream ended: %v", what, s.err)
	}
	r := Check(History{Acked: acked, Journal: s.events})
	if f := r.Failures(); len(f) > 0 {
		t.Fatalf("%s: %s\n%s", what, strings.Join(f, ", "), r)
	}
}

// A full disk: streamd refuses publishes with ResourceExhausted naming the
// cause, stays up, keeps serving reads and open streams, loses nothing it
// acknowledged, and accepts publishes again once space is freed.
func TestDiskFull(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts small filesystems and runs streamd")
	}
	for _, fs := range smallFilesystems {
		t.Run(fs.name, func(t *testing.T) { testDiskFull(t, fs.mount(t)) })
	}
}

func testDiskFull(t *testing.T, mnt string) {
	dataDir := filepath.Join(mnt, "journal")
	// The reserve must fit the 64 MiB filesystem (the default keeps 208 MiB),
	// and be at least what an 8 MiB memtable needs (streamd refuses less).
	d := startDaemon(t, dataDir, "--memtable-size", "8388608", "--min-free-bytes", "16777216")
	acked := publishN(t, d.Addr, "before", 200, 10)
	live := subscribe(t, d.Addr)
	live.check(t, "a stream opened before the disk filled", acked)

	filler := filepath.Join(mnt, "filler")
	t.Logf("filled the disk with %d MiB", fill(t, filler)>>20)

	// Publish until refused; everything acknowledged on the way counts.
	conn := dial(t, d.Addr)
	client := streamdv1.NewEventStreamServiceClient(conn)
	var refusal error
	for i := 0; refusal == nil && i < 100_000 && !d.Exited(); i++ {
		id := fmt.Sprintf("full-%d", i)
		e := &streamdv1.Event{EntityType: "acct", EntityId: fmt.Sprintf("e%d", i%10), EventType: "Deposited", Payload: payload(id, 16<<10)}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{e}})
		cancel()
		if err != nil {
			refusal = err
			break
		}
		acked = append(acked, Event{EntityType: e.EntityType, EntityID: e.EntityId, SeqNr: res.Appended[0].SeqNr, Offset: res.Appended[0].Offset, ID: id})
	}
	if d.Exited() || status.Code(refusal) == codes.Unavailable {
		d.Wait(t, 10*time.Second)
		t.Errorf("streamd died when the disk filled (%v) instead of refusing publishes with ResourceExhausted; "+
			"last publish error: %v; its crash report begins:\n%s", d.Err(), refusal, d.CrashReport())
		diskFullAfterCrash(t, dataDir, filler, acked)
		return
	}
	t.Logf("after %d acknowledged publishes: %v", len(acked), refusal)
	if st := status.Convert(refusal); st.Code() != codes.ResourceExhausted || !strings.Contains(strings.ToLower(st.Message()), "space") {
		t.Errorf("a publish to a full disk: %v; want ResourceExhausted saying the disk is full", refusal)
	}
	// Still refusing, still up, still serving reads and streams.
	for range 3 {
		_, err := client.Publish(context.Background(), &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: "acct", EntityId: "e0", Payload: payload("refused", 16<<10)}}})
		if err == nil {
			t.Fatal("a publish to a full disk was acknowledged after one was refused")
		}
	}
	if d.Exited() {
		t.Fatalf("streamd exited on the full disk: %v; its stderr:\n%s", d.Err(), tail(d.Log(), 40))
	}
	info := journalInfo(t, d.Addr)
	t.Logf("journal while full: offsets %d-%d", info.FirstOffset, info.LastOffset)
	live.check(t, "the open stream while the disk is full", acked)
	subscribe(t, d.Addr).check(t, "a stream opened while the disk is full", acked)

	// Space freed: publishes are accepted again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var lastErr error
	for i := 0; ; i++ {
		id := fmt.Sprintf("freed-%d", i)
		e := &streamdv1.Event{EntityType: "acct", EntityId: "e0", EventType: "Deposited", Payload: payload(id, 64)}
		res, err := client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{e}})
		if err == nil {
			acked = append(acked, Event{EntityType: e.EntityType, EntityID: e.EntityId, SeqNr: res.Appended[0].SeqNr, Offset: res.Appended[0].Offset, ID: id})
			t.Logf("publishes accepted again after %d refused attempts once space was freed", i)
			break
		}
		lastErr = err
		if ctx.Err() != nil {
			t.Fatalf("publishes still refused 30s after space was freed: %v (streamd must be restarted?)", lastErr)
		}
		select {
		case <-time.After(50 * time.Millisecond): // a client's retry interval
		case <-ctx.Done():
		}
	}
	live.check(t, "the open stream after space was freed", acked)
	if err := d.Stop(t, syscall.SIGTERM, time.Minute); err != nil {
		t.Fatalf("streamd after SIGTERM: %v", err)
	}
	r := Check(History{Acked: acked, Journal: readJournal(t, dataDir)})
	if f := r.Failures(); len(f) > 0 {
		t.Fatalf("journal after the full disk: %s\n%s", strings.Join(f, ", "), r)
	}
}

// diskFullAfterCrash records what happens after streamd crashed on a full
// disk: a restart on the still full disk, its reads and a publish, then a
// restart with space freed, where every acknowledged event must be there.
func diskFullAfterCrash(t *testing.T, dataDir, filler string, acked []Event) {
	t.Helper()
	if d, err := tryStartDaemon(t, dataDir); err != nil {
		t.Logf("restarted on the still full disk: %v", err)
	} else {
		subscribe(t, d.Addr).check(t, "restarted on the still full disk", acked)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := streamdv1.NewEventStreamServiceClient(dial(t, d.Addr)).Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{
			{EntityType: "acct", EntityId: "e0", Payload: payload("still-full", 16<<10)}}})
		cancel()
		if err == nil {
			t.Fatal("a publish to the still full disk was acknowledged")
		}
		if d.Exited() || status.Code(err) == codes.Unavailable {
			d.Wait(t, 10*time.Second)
			t.Logf("restarted on the still full disk: streamd starts and serves all %d acknowledged events; the next publish crashes it again (%v): %s",
				len(acked), d.Err(), firstLines(d.CrashReport(), 3))
		} else {
			t.Logf("restarted on the still full disk: streamd serves all %d acknowledged events and refuses a publish: %v", len(acked), err)
			d.Stop(t, syscall.SIGKILL, time.Minute)
		}
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dataDir)
	acked = append(acked, publishN(t, d.Addr, "freed", 10, 10)...)
	subscribe(t, d.Addr).check(t, "restarted with space freed", acked)
	if err := d.Stop(t, syscall.SIGTERM, time.Minute); err != nil {
		t.Fatalf("streamd after SIGTERM: %v", err)
	}
	r := Check(History{Acked: acked, Journal: readJournal(t, dataDir)})
	if f := r.Failures(); len(f) > 0 {
		t.Fatalf("journal after the full disk: %s\n%s", strings.Join(f, ", "), r)
	}
	t.Logf("restarted with space freed: publishes accepted, all %d acknowledged events in the journal", len(acked))
}

// firstLines is the first n lines of s.
func firstLines(s string, n int) string {
	ls := strings.Split(s, "\n")
	return strings.Join(ls[:min(n, len(ls))], " | ")
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	ls := strings.Split(s, "\n")
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n")
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// A journal that cannot close (its directory renamed away or removed under
// it: Badger retries its memtable flush forever): on SIGTERM streamd exits
// with an error within --shutdown-grace + closeMargin, and once the
// directory is back every acknowledged event is there.
func TestShutdownBoundedWhenJournalCannotClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		fail func(dir string) error
		back func(dir string) error // nil: the files are gone
	}{
		{"renamed", func(dir string) error { return os.Rename(dir, dir+".away") }, func(dir string) error { return os.Rename(dir+".away", dir) }},
		{"removed", os.RemoveAll, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "data")
			const grace = time.Second
			d := startDaemon(t, dir, "--shutdown-grace", grace.String())
			client := streamdv1.NewEventStreamServiceClient(d.conn)
			acked := map[uint64]string{}
			for i := range 200 {
				id := fmt.Sprint("e", i)
				res, err := client.Publish(context.Background(), &streamdv1.PublishRequest{Events: []*streamdv1.Event{{
					EntityType: "acct", EntityId: fmt.Sprint("a", i%7), EventType: "Deposited", Payload: []byte(id)}}})
				if err != nil {
					t.Fatalf("publish %d: %v", i, err)
				}
				acked[res.Appended[0].Offset] = id
			}
			if err := tc.fail(dir); err != nil {
				t.Fatal(err)
			}
			// Process exit and the test's own scheduling on a loaded machine.
			const slack = 10 * time.Second
			err := d.Stop(t, syscall.SIGTERM, grace+closeMargin+slack)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("streamd exited with %v; want a non-zero exit after a journal that could not close", err)
			}
			for _, want := range []string{
				`level=ERROR msg="journal: cannot close cleanly.*no such file or directory`,
				`level=ERROR msg="shutdown did not finish in time`,
			} {
				if logLine(d, regexp.MustCompile(want)) == "" {
					t.Errorf("streamd's log has no line matching %s", want)
				}
			}
			if tc.back == nil {
				return
			}
			if err := tc.back(dir); err != nil {
				t.Fatal(err)
			}
			j, err := journal.Open(dir, journal.Options{})
			if err != nil {
				t.Fatalf("reopen after the unclean shutdown: %v", err)
			}
			defer j.Close()
			for off, id := range acked {
				evs, err := j.Read(off, 1, nil)
				if err != nil || len(evs) != 1 || string(evs[0].Payload) != id {
					t.Fatalf("acknowledged event %s at offset %d lost: %v %v", id, off, evs, err)
				}
			}
		})
	}
}

// --min-free-bytes below what keeps Badger's memory maps off a full disk
// is refused, naming the least value; the least value is accepted.
func TestMinFreeBytesFloor(t *testing.T) {
	for _, memtable := range []int64{0, 8 << 20} {
		least := journal.Options{MemTableSize: memtable}.LeastMinFreeBytes()
		for _, v := range []int64{1, least - 1} { // -1: TestFlagErrors
			// A value accepted would serve until the timeout.
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			out, err := exec.CommandContext(ctx, binary, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--metrics-listen", "",
				"--memtable-size", fmt.Sprint(memtable), "--min-free-bytes", fmt.Sprint(v)).CombinedOutput()
			cancel()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("--memtable-size %d --min-free-bytes %d: want a non-zero exit, got %v: %s", memtable, v, err, out)
			}
			if want := fmt.Sprintf("--min-free-bytes %d: want 0 (the default) or at least %d", v, least); !strings.Contains(string(out), want) {
				t.Fatalf("--memtable-size %d --min-free-bytes %d: %s; want it to say %q", memtable, v, out, want)
			}
		}
	}
	least := journal.Options{MemTableSize: 8 << 20}.LeastMinFreeBytes()
	d := startDaemon(t, t.TempDir(), "--memtable-size", fmt.Sprint(8<<20), "--min-free-bytes", fmt.Sprint(least))
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("--min-free-bytes %d, the least: %v", least, err)
	}
}

// Starting with less free space than the reserve: an Error line gives the
// figures and the flag; reads are served, publishes refused.
func TestStartBelowReserve(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--min-free-bytes", fmt.Sprint(int64(1)<<60))
	re := regexp.MustCompile(`level=ERROR msg="free disk space is below the reserve.*--min-free-bytes" .*free="\d+ MiB" min_free_bytes=1152921504606846976 least_min_free_bytes=\d+`)
	if line := logLine(d, re); line == "" {
		t.Fatalf("no Error line about the reserve at start; want one matching %s", re)
	}
	client := streamdv1.NewEventStreamServiceClient(d.conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: "acct", EntityId: "a", EventType: "E"}}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a publish below the reserve: %v, want ResourceExhausted", err)
	}
	if _, err := client.JournalInfo(ctx, &streamdv1.JournalInfoRequest{}); err != nil {
		t.Fatalf("a read below the reserve: %v", err)
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// --help says what async durability risks, and how long a shutdown may
// take.
func TestHelpSaysRisksAndBounds(t *testing.T) {
	out, err := exec.Command(binary, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v: %s", err, out)
	}
	for _, want := range []string{
		"survive a crash of streamd but may be lost on an OS crash or power loss",
		"closing the journal may take " + closeMargin.String() + " more",
		"crashes streamd (SIGBUS)",
	} {
		if !strings.Contains(strings.Join(strings.Fields(string(out)), " "), want) {
			t.Errorf("--help does not say %q:\n%s", want, out)
		}
	}
}

// With the least --min-free-bytes, publishing until a small filesystem is
// full ends in ResourceExhausted refusals, not a crash: what Badger writes
// through memory maps after the last publish let through fits the reserve.
func TestLeastReserveKeepsStreamdUp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small filesystem")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs on %s (%v: %s)", mnt, err, strings.TrimSpace(string(out)))
	}
	const memtable = 8 << 20
	least := journal.Options{MemTableSize: memtable}.LeastMinFreeBytes()
	d := startDaemon(t, filepath.Join(mnt, "journal"), "--memtable-size", fmt.Sprint(memtable), "--min-free-bytes", fmt.Sprint(least))
	t.Cleanup(func() {
		d.Kill() // and wait for the exit: the mount is busy while it runs
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	client := streamdv1.NewEventStreamServiceClient(d.conn)
	// Batches as large as a group commit with this memtable takes.
	payload := make([]byte, 64<<10)
	var events []*streamdv1.Event
	for i := range 12 {
		events = append(events, &streamdv1.Event{EntityType: "blob", EntityId: fmt.Sprint("b", i), EventType: "Stored", Payload: payload})
	}
	acked := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		_, err := client.Publish(ctx, &streamdv1.PublishRequest{Events: events})
		cancel()
		if err == nil {
			acked += len(events)
			continue
		}
		if status.Code(err) != codes.ResourceExhausted {
			if testwait.Until(5*time.Second, d.Exited) {
				t.Fatalf("streamd died as the disk filled (%v: %s), after %d events acknowledged; last publish: %v",
					d.Err(), logLine(d, regexp.MustCompile(`SIGBUS|^fatal error|^panic`)), acked, err)
			}
			t.Fatalf("a publish as the disk filled: %v, want ResourceExhausted", err)
		}
		break
	}
	t.Logf("%d events acknowledged before the reserve (%d bytes) was reached", acked, least)
	// Badger's flushes and the pipeline settle; streamd must still be up.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 20 {
		if _, err := client.JournalInfo(ctx, &streamdv1.JournalInfoRequest{}); err != nil {
			t.Fatalf("a read after the disk filled: %v; log ends:\n%s", err, d.Log())
		}
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM with a full disk: %v; log ends:\n%s", err, d.Log())
	}
}

// logLine returns the first line of d's log matching re, or "".
func logLine(d *daemon, re *regexp.Regexp) string {
	for _, l := range strings.Split(d.Log(), "\n") {
		if re.MatchString(l) {
			return l
		}
	}
	return ""
}

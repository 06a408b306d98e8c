// Package typescriptconsumer tests the TypeScript consumer example against
// a real streamd. It holds no Go code but this test.
package typescriptconsumer

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/streamd/streamd/internal/streamdtest"
	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMain(m *testing.M) { os.Exit(streamdtest.M(m).Run()) }

// build installs the example's npm packages (if node_modules is missing)
// and compiles it. Without node and npm on PATH the test is skipped, unless
// STREAMD_REQUIRE_NODE is set (CI sets it): then it fails.
func build(t *testing.T) {
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("STREAMD_REQUIRE_NODE") != "" {
				t.Fatalf("%s is not on PATH and STREAMD_REQUIRE_NODE is set: install Node.js 20 or later with npm", tool)
			}
			t.Skipf("skipped: %s is not on PATH; install Node.js 20 or later with npm to run the TypeScript consumer example", tool)
		}
	}
	run := func(name string, args ...string) {
		cmd := exec.Command(name, args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}
	if _, err := os.Stat("node_modules"); err != nil {
		run("npm", "ci", "--no-audit", "--no-fund")
	}
	run("npm", "run", "build")
}

// consumer runs the compiled example; its stderr goes to the test log, and
// to stderr, to read once it exited.
func consumer(t *testing.T, dir, addr string) (cmd *exec.Cmd, stderr *bytes.Buffer) {
	cmd = exec.Command("node", "dist/consumer.js", "--addr", addr, "--name", "ts-consumer",
		"--positions", filepath.Join(dir, "positions.json"), "--output", filepath.Join(dir, "events.log"),
		"--filter", "exclude tag=noise")
	stderr = &bytes.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		t.Logf("consumer's stderr:\n%s", stderr.String())
	})
	return cmd, stderr
}

// position reads the positions file (zero before the first).
func position(t *testing.T, dir string) (pos struct {
	JournalID string `json:"journalId"`
	Offset    uint64 `json:"offset,string"`
}) {
	b, err := os.ReadFile(filepath.Join(dir, "positions.json"))
	if os.IsNotExist(err) {
		return pos
	}
	if err != nil || json.Unmarshal(b, &pos) != nil {
		t.Fatalf("positions file %q: %v", b, err)
	}
	return pos
}

func lines(t *testing.T, file string) []string {
	b, err := os.ReadFile(file)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for s := bufio.NewScanner(bytes.NewReader(b)); s.Scan(); {
		out = append(out, s.Text())
	}
	return out
}

// publish appends n events of entity type order (ids from first on), each
// followed by a noise event the consumer's filter excludes.
func publish(t *testing.T, api streamdv1.EventStreamServiceClient, first, n int) {
	var events []*streamdv1.Event
	for i := first; i < first+n; i++ {
		events = append(events,
			&streamdv1.Event{EntityType: "order", EntityId: fmt.Sprintf("o%04d", i), EventType: "Placed"},
			&streamdv1.Event{EntityType: "order", EntityId: fmt.Sprintf("n%04d", i), EventType: "Noise", Tags: []string{"noise"}})
	}
	for len(events) > 0 {
		k := min(len(events), 100)
		if _, err := api.Publish(context.Background(), &streamdv1.PublishRequest{Events: events[:k]}); err != nil {
			t.Fatal(err)
		}
		events = events[k:]
	}
}

// The TypeScript consumer reads 1,000 events with its filter, is killed
// (SIGKILL) after the first half, and resumes from its positions file: each
// event is written once, in order, and the producer shows the consumer.
func TestTypeScriptConsumer(t *testing.T) {
	build(t)
	d := streamdtest.Start(t, streamdtest.Options{DataDir: t.TempDir()})
	conn, err := grpc.NewClient(d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := streamdv1.NewEventStreamServiceClient(conn)
	dir := t.TempDir()
	out := filepath.Join(dir, "events.log")

	// Offsets 1…1000: the first 500 orders at the odd ones, noise between.
	publish(t, api, 0, 500)
	c, _ := consumer(t, dir, d.Addr)
	testwait.For(t, 60*time.Second, "the position past the first 500 events", func() bool { return position(t, dir).Offset >= 999 })
	c.Process.Kill()
	c.Wait()

	publish(t, api, 500, 500)
	c, stderr := consumer(t, dir, d.Addr)
	testwait.For(t, 60*time.Second, "1,000 events", func() bool { return len(lines(t, out)) >= 1000 })

	got := lines(t, out)
	var prev uint64
	for i, line := range got {
		var off, seq uint64
		var entity, typ string
		if _, err := fmt.Sscanf(line, "%d %s %d %s", &off, &entity, &seq, &typ); err != nil {
			t.Fatalf("line %d %q: %v", i+1, line, err)
		}
		if want := fmt.Sprintf("order/o%04d", i); entity != want || seq != 1 || typ != "Placed" || off <= prev {
			t.Fatalf("line %d = %q, want %s seqNr 1 Placed after offset %d", i+1, line, want, prev)
		}
		prev = off
	}
	if len(got) != 1000 {
		t.Fatalf("%d lines, want 1000 (each event once)", len(got))
	}

	// The consumer stored its position, and told the producer.
	pos := position(t, dir)
	info, err := api.JournalInfo(context.Background(), &streamdv1.JournalInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if pos.JournalID != fmt.Sprintf("%x", info.GetJournalId()) {
		t.Fatalf("positions file journal %s, the producer's is %x", pos.JournalID, info.GetJournalId())
	}
	adm := streamdv1.NewAdminServiceClient(conn)
	testwait.For(t, 30*time.Second, "the producer to show ts-consumer at the end", func() bool {
		resp, err := adm.ListConsumers(context.Background(), &streamdv1.ListConsumersRequest{Consumer: "ts-consumer"})
		if err != nil || len(resp.GetReaders()) != 1 {
			return false
		}
		r := resp.GetReaders()[0]
		return r.GetStoredOffset() >= prev && r.GetConnected() && len(r.GetFilter()) == 1
	})
	c.Process.Kill()
	c.Wait()
	if !strings.Contains(stderr.String(), "from offset 1000\n") && !strings.Contains(stderr.String(), "from offset 1001\n") {
		t.Fatalf("the restarted consumer did not resume after offset 999: %s", stderr)
	}
}

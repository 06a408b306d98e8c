package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// A failover between two streamd processes: the dry run reports the new
// primary's replication progress from the old one, and the old primary,
// killed, then started alone (it takes a write it does not know is fenced)
// and back in the project, counts that write in
// streamd_primary_conflicts_total.
func TestFailoverProgressAndConflictMetric(t *testing.T) {
	addrs := freeAddrs(t, 3)
	dir := t.TempDir()
	write := func(name string, us, eu string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, fmt.Appendf(nil, "regions:\n  - {name: us, addrs: [%q]}\n  - {name: eu, addrs: [%q]}\ndefault_primary: eu\nentity_types:\n  - {name: order, mode: pinned, primary: eu}\n", us, eu), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	project := write("project.yaml", addrs[0], addrs[1])
	alone := write("alone.yaml", addrs[2], addrs[1]) // us unreachable
	usDir, euDir := t.TempDir(), t.TempDir()
	us := startDaemon(t, usDir, "--region", "us", "--config", project, "--listen", addrs[0])
	eu := startDaemon(t, euDir, "--region", "eu", "--config", project, "--listen", addrs[1])
	ctx := context.Background()
	publish := func(d *daemon, id, data string) (*streamdv1.PublishResponse, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return streamdv1.NewEventStreamServiceClient(d.conn).Publish(cctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{
			{EntityType: "order", EntityId: id, EventType: "Changed", Payload: []byte(data)}}})
	}
	if _, err := publish(eu, "o1", "1"); err != nil {
		t.Fatal(err)
	}
	usPrimary := streamdv1.NewPrimaryServiceClient(us.conn)
	var plan *streamdv1.FailoverResponse
	if !testwait.Until(20*time.Second, func() bool {
		var err error
		plan, err = usPrimary.Failover(ctx, &streamdv1.FailoverRequest{From: "eu", To: "us"})
		return err == nil && len(plan.Progress) == 1 && plan.Progress[0].AppliedOffset >= 1 && plan.FromAppliedUnixNano != 0
	}) {
		t.Fatalf("dry run: %v; want us to have applied eu's first event", plan)
	}
	if p := plan.Progress[0]; p.Region != "us" || !p.Reachable || p.KnownOffset < p.AppliedOffset || plan.Executed {
		t.Fatalf("dry run: %v", plan)
	}
	// eu is one journal: one entry, under eu's journal id, the sums its own.
	if js := plan.Progress[0].Journals; len(js) != 1 || len(js[0].JournalId) == 0 || js[0].AppliedOffset != plan.Progress[0].AppliedOffset || js[0].KnownOffset != plan.Progress[0].KnownOffset {
		t.Fatalf("dry run's journals of eu: %v; want eu's one journal", js)
	}

	if err := eu.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("eu exited cleanly after SIGKILL")
	}
	if plan, err := usPrimary.Failover(ctx, &streamdv1.FailoverRequest{From: "eu", To: "us", Execute: true}); err != nil || !plan.Executed {
		t.Fatalf("failover: %v, %v", plan, err)
	}
	if resp, err := publish(us, "o1", "2"); err != nil || resp.Appended[0].Region != "us" {
		t.Fatalf("write in us after the failover: %v, %v", resp, err)
	}

	eu = startDaemon(t, euDir, "--region", "eu", "--config", alone, "--listen", addrs[1])
	if resp, err := publish(eu, "o1", "late"); err != nil || resp.Appended[0].Region != "eu" {
		t.Fatalf("write in eu alone: %v, %v", resp, err)
	}
	if err := eu.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("eu exited cleanly after SIGKILL")
	}
	eu = startDaemon(t, euDir, "--region", "eu", "--config", project, "--listen", addrs[1])
	var got float64
	if !testwait.Until(30*time.Second, func() bool {
		for _, m := range scrape(t, eu.MetricsAddr)["streamd_primary_conflicts_total"].GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["from"] == "eu" && labels["entity_type"] == "order" {
				got = m.GetCounter().GetValue()
			}
		}
		return got == 1
	}) {
		t.Fatalf("streamd_primary_conflicts_total{from=eu,entity_type=order} = %v in eu; want 1", got)
	}
	if resp, err := publish(eu, "o1", "3"); err != nil || resp.Appended[0].Region != "us" {
		t.Fatalf("write in eu back in the project: %v, %v; want it forwarded to us", resp, err)
	}
}

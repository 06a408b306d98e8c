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

// publishSpread publishes n events over n/2 entities (so over many slices)
// in one request; ids continue from first.
func publishSpread(t *testing.T, d *daemon, first, n int) {
	t.Helper()
	req := &streamdv1.PublishRequest{}
	for i := first; i < first+n; i++ {
		req.Events = append(req.Events, &streamdv1.Event{EntityType: "cart", EntityId: fmt.Sprintf("c%d", i/2), EventType: "Added", Payload: fmt.Appendf(nil, "%d", i)})
	}
	if _, err := streamdv1.NewEventStreamServiceClient(d.conn).Publish(context.Background(), req); err != nil {
		t.Fatal(err)
	}
}

// A replication run with streams: N keeps one offset per part of the
// slices, shows one lag per source in /metrics, and, restarted with
// another N, copies what was published meanwhile once.
func TestReplicationStreamsFromConfig(t *testing.T) {
	us := startDaemon(t, t.TempDir(), "--region", "us")
	publishSpread(t, us, 0, 200)
	cfg := filepath.Join(t.TempDir(), "eu.yaml")
	euDir := t.TempDir()
	run := func(streams int, events uint64) {
		t.Helper()
		if err := os.WriteFile(cfg, fmt.Appendf(nil, "replicate:\n  - from: us\n    addrs: [%q]\n    streams: %d\n", us.Addr, streams), 0o600); err != nil {
			t.Fatal(err)
		}
		eu := startDaemon(t, euDir, "--region", "eu", "--config", cfg)
		admin := streamdv1.NewAdminServiceClient(eu.conn)
		var parts int
		if !testwait.Until(30*time.Second, func() bool {
			offs, err := admin.ListOffsets(context.Background(), &streamdv1.ListOffsetsRequest{Consumer: "replicate-us-all"})
			if err != nil {
				return false
			}
			parts = len(offs.GetOffsets())
			mfs := scrape(t, eu.MetricsAddr)
			return journalInfo(t, eu).GetEvents() == events && parts == streams &&
				mfs["streamd_consumer_lag_events"] != nil && len(mfs["streamd_consumer_lag_events"].GetMetric()) == 1 &&
				value(mfs["streamd_consumer_lag_events"]) == 0 && value(mfs["streamd_consumer_connected"]) == 1
		}) {
			t.Fatalf("streams %d: eu holds %d events (want %d), %d stored offsets", streams, journalInfo(t, eu).GetEvents(), events, parts)
		}
		if err := eu.stop(t, syscall.SIGTERM); err != nil {
			t.Fatalf("SIGTERM: %v", err)
		}
	}
	run(4, 200)
	publishSpread(t, us, 200, 100)
	run(3, 300)
	publishSpread(t, us, 300, 100)
	run(1, 400)
}

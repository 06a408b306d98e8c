package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// publishSpread publishes n events over n/2 entities (so over many slices)
// in one request; ids continue from first.
func publishSpread(t *testing.T, d *daemon, first, n int) error {
	req := &streamdv1.PublishRequest{}
	for i := first; i < first+n; i++ {
		req.Events = append(req.Events, &streamdv1.Event{EntityType: "cart", EntityId: fmt.Sprintf("c%d", i/2), EventType: "Added", Payload: fmt.Appendf(nil, "%d", i)})
	}
	_, err := streamdv1.NewEventStreamServiceClient(d.conn).Publish(context.Background(), req)
	return err
}

// A replication run with streams: N, killed (SIGKILL) or stopped (SIGTERM)
// while the source is written and restarted with another N, copies every
// event once; it keeps one offset per part of the slices and shows one
// lag series per source in /metrics.
func TestReplicationStreamsFromConfig(t *testing.T) {
	us := startDaemon(t, t.TempDir(), "--region", "us")
	var published atomic.Int64
	stop := make(chan struct{})
	var pub sync.WaitGroup
	pub.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond) // a pace, not a synchronisation
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if err := publishSpread(t, us, int(published.Load()), 20); err != nil {
				t.Error(err)
				return
			}
			published.Add(20)
		}
	})
	stopPublishing := sync.OnceFunc(func() { close(stop); pub.Wait() })
	defer stopPublishing()

	cfg := filepath.Join(t.TempDir(), "eu.yaml")
	euDir := t.TempDir()
	start := func(streams int) *daemon {
		t.Helper()
		if err := os.WriteFile(cfg, fmt.Appendf(nil, "replicate:\n  - from: us\n    addrs: [%q]\n    streams: %d\n", us.Addr, streams), 0o600); err != nil {
			t.Fatal(err)
		}
		return startDaemon(t, euDir, "--region", "eu", "--config", cfg)
	}
	for _, phase := range []struct {
		streams int
		sig     syscall.Signal
	}{{4, syscall.SIGKILL}, {3, syscall.SIGTERM}, {8, syscall.SIGKILL}, {2, syscall.SIGKILL}} {
		eu := start(phase.streams)
		before := journalInfo(t, eu).GetEvents()
		testwait.For(t, 30*time.Second, fmt.Sprintf("streams %d: 300 events copied", phase.streams), func() bool {
			return journalInfo(t, eu).GetEvents() >= before+300
		})
		err := eu.stop(t, phase.sig)
		if phase.sig == syscall.SIGTERM && err != nil {
			t.Fatalf("SIGTERM: %v", err)
		}
	}

	stopPublishing()
	eu := start(1)
	admin := streamdv1.NewAdminServiceClient(eu.conn)
	total := uint64(published.Load())
	var parts int
	if !testwait.Until(60*time.Second, func() bool {
		offs, err := admin.ListOffsets(context.Background(), &streamdv1.ListOffsetsRequest{Consumer: "replicate-us-all"})
		if err != nil {
			return false
		}
		parts = len(offs.GetOffsets())
		mfs := scrape(t, eu.MetricsAddr)
		return journalInfo(t, eu).GetEvents() == total && parts == 1 &&
			mfs["streamd_consumer_lag_events"] != nil && len(mfs["streamd_consumer_lag_events"].GetMetric()) == 1 &&
			value(mfs["streamd_consumer_lag_events"]) == 0 && value(mfs["streamd_consumer_connected"]) == 1
	}) {
		t.Fatalf("eu holds %d events (us wrote %d), %d stored offsets (want 1)", journalInfo(t, eu).GetEvents(), total, parts)
	}
	if got := journalInfo(t, us).GetEvents(); got != total {
		t.Fatalf("us holds %d events, %d were published", got, total)
	}
}

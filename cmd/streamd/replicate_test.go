package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func publishN(t *testing.T, d *daemon, n int) {
	t.Helper()
	client := streamdv1.NewEventStreamServiceClient(d.conn)
	for i := range n {
		_, err := client.Publish(context.Background(), &streamdv1.PublishRequest{Events: []*streamdv1.Event{
			{EntityType: "cart", EntityId: "c1", EventType: "Added", Payload: fmt.Appendf(nil, "%d", i)}}})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func journalInfo(t *testing.T, d *daemon) *streamdv1.JournalInfoResponse {
	t.Helper()
	info, err := streamdv1.NewEventStreamServiceClient(d.conn).JournalInfo(context.Background(), &streamdv1.JournalInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// A replication streamd runs from its config copies the source's events
// once, shows its lag in /metrics, survives a SIGTERM restart without
// copying anything twice.
func TestReplicationFromConfig(t *testing.T) {
	us := startDaemon(t, t.TempDir(), "--region", "us")
	publishN(t, us, 3)
	cfg := filepath.Join(t.TempDir(), "eu.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "replicate:\n  - from: us\n    addrs: [%q]\n", us.Addr), 0o600); err != nil {
		t.Fatal(err)
	}
	euDir := t.TempDir()
	eu := startDaemon(t, euDir, "--region", "eu", "--config", cfg)
	waitMetrics := func(d *daemon, events uint64) {
		t.Helper()
		var mfs map[string]*dto.MetricFamily
		if !testwait.Until(20*time.Second, func() bool {
			mfs = scrape(t, d.MetricsAddr)
			return journalInfo(t, d).GetEvents() == events && mfs["streamd_consumer_lag_events"] != nil &&
				value(mfs["streamd_consumer_lag_events"]) == 0 && value(mfs["streamd_consumer_connected"]) == 1 &&
				value(mfs["streamd_consumer_running"]) == 1
		}) {
			t.Fatalf("eu holds %d events (want %d); consumer metrics: lag %v connected %v", journalInfo(t, d).GetEvents(), events,
				mfs["streamd_consumer_lag_events"], mfs["streamd_consumer_connected"])
		}
	}
	waitMetrics(eu, 3)
	if err := eu.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	publishN(t, us, 2)
	eu = startDaemon(t, euDir, "--region", "eu", "--config", cfg)
	waitMetrics(eu, 5)

	// Every event once, in order, with its origin.
	st, err := streamdv1.NewEventStreamServiceClient(eu.conn).EntityEvents(context.Background(), &streamdv1.EntityEventsRequest{EntityType: "cart", EntityId: "c1", FromSeqNr: 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		resp, err := st.Recv()
		if err != nil {
			break
		}
		for _, e := range resp.GetEvents() {
			got = append(got, fmt.Sprintf("%s/%d:%s", e.GetOrigin(), e.GetOriginSeqNr(), e.GetPayload()))
		}
	}
	want := []string{"us/1:0", "us/2:1", "us/3:2", "us/4:0", "us/5:1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("eu holds %v, want %v", got, want)
	}
}

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
)

// Each call that uses an entity of an on-demand type in eu — LoadEvent,
// EntityEvents, a PublishStream write — is served after the entity's
// history from us is in eu; another region's copy of a history (the pull
// header) registers no interest. ListInterests and the metrics show it.
func TestOnDemandUses(t *testing.T) {
	addrs := freeAddrs(t, 2)
	cfg := filepath.Join(t.TempDir(), "project.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `regions:
  - {name: us, addrs: [%q]}
  - {name: eu, addrs: [%q]}
default_primary: us
entity_types:
  - {name: note, mode: local, replication: on-demand, inactivity: 1h}
`, addrs[0], addrs[1]), 0o600); err != nil {
		t.Fatal(err)
	}
	us := startDaemon(t, t.TempDir(), "--region", "us", "--config", cfg, "--listen", addrs[0])
	eu := startDaemon(t, t.TempDir(), "--region", "eu", "--config", cfg, "--listen", addrs[1])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	usAPI, euAPI := streamdv1.NewEventStreamServiceClient(us.conn), streamdv1.NewEventStreamServiceClient(eu.conn)
	for _, id := range []string{"n1", "n2", "n3", "n4"} {
		for _, ev := range []string{"Written", "Edited"} {
			if _, err := usAPI.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: "note", EntityId: id, EventType: ev}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	history := func(ctx context.Context, id string) []string {
		t.Helper()
		st, err := euAPI.EntityEvents(ctx, &streamdv1.EntityEventsRequest{EntityType: "note", EntityId: id, FromSeqNr: 1})
		if err != nil {
			t.Fatal(err)
		}
		var evs []string
		for {
			resp, err := st.Recv()
			if err != nil {
				break
			}
			for _, e := range resp.GetEvents() {
				evs = append(evs, fmt.Sprintf("%d %s %s", e.GetSeqNr(), e.GetEventType(), e.GetOrigin()))
			}
		}
		return evs
	}

	// A copy by another region: served from eu's journal, no interest.
	if evs := history(metadata.AppendToOutgoingContext(ctx, topology.PullHeader, "ap"), "n4"); len(evs) != 0 {
		t.Fatalf("a pull of n4 from eu: %v, want nothing (eu has no interest in it)", evs)
	}
	// LoadEvent: the event is there when the answer comes.
	got, err := euAPI.LoadEvent(ctx, &streamdv1.LoadEventRequest{EntityType: "note", EntityId: "n1", SeqNr: 2})
	if err != nil || got.GetEvent().GetEventType() != "Edited" {
		t.Fatalf("LoadEvent n1 2 in eu: %v, %v", got, err)
	}
	// EntityEvents: the whole history.
	if evs := history(ctx, "n2"); !slices.Equal(evs, []string{"1 Written us", "2 Edited us"}) {
		t.Fatalf("EntityEvents n2 in eu: %v", evs)
	}
	// A write through PublishStream comes after the history: seqNr 3 here.
	ps, err := euAPI.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.Send(&streamdv1.PublishStreamRequest{Events: []*streamdv1.Event{{EntityType: "note", EntityId: "n3", EventType: "Shared"}}}); err != nil {
		t.Fatal(err)
	}
	resp, err := ps.Recv()
	if err != nil || len(resp.GetAppended()) != 1 || resp.GetAppended()[0].GetSeqNr() != 3 {
		t.Fatalf("PublishStream of n3 in eu: %v, %v; want seqNr 3, after us's two", resp, err)
	}
	ps.CloseSend()

	list, err := streamdv1.NewInterestServiceClient(eu.conn).ListInterests(ctx, &streamdv1.ListInterestsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, x := range list.GetInterests() {
		ids = append(ids, x.GetEntityId())
		if !slices.Equal(x.GetEntityTypes(), []string{"note"}) || !slices.Equal(x.GetRegions(), []string{"us"}) ||
			x.GetExpiresAtUnixNano()-x.GetSinceUnixNano() != int64(time.Hour) {
			t.Errorf("interest %v: want type note, region us, expiring an hour after it began", x)
		}
	}
	if !slices.Equal(ids, []string{"n1", "n2", "n3"}) {
		t.Fatalf("eu has interest in %v, want n1 n2 n3", ids)
	}
	mfs := scrape(t, eu.MetricsAddr)
	if ms := mfs["streamd_interest_entities"].GetMetric(); len(ms) != 1 || ms[0].GetGauge().GetValue() != 3 {
		t.Errorf("streamd_interest_entities = %v, want note 3", ms)
	}
	if ms := mfs["streamd_interest_history_fetches_total"].GetMetric(); len(ms) != 1 || ms[0].GetCounter().GetValue() != 3 {
		t.Errorf("streamd_interest_history_fetches_total = %v, want us ok 3", ms)
	}
}

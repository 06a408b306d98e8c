package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/streamd/streamd/internal/streamdtest"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// BenchmarkPublishByMode measures the latency of Publish over loopback
// between two streamd processes (us, eu) of one project, durable (fsync)
// journals, by mode: local (appended in us), pinned in its primary (eu),
// forwarded (pinned to eu, published in us), takeover (request-region, home
// eu, each publish in us of a new entity takes it over first) and
// replicated (three CRDT ops in us). Publishes are sent open-loop at 1,000
// a second over entities of their own (one entity's writes are serialised);
// each mode reports p50 and p99 of 1,000 publishes.
//
//	go test -run '^$' -bench BenchmarkPublishByMode -benchtime=1x ./cmd/streamd
func BenchmarkPublishByMode(b *testing.B) {
	const (
		rate    = 1000
		samples = 1000
	)
	addrs := freeAddrs(b, 2)
	cfg := filepath.Join(b.TempDir(), "project.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `regions:
  - {name: us, addrs: [%q]}
  - {name: eu, addrs: [%q]}
default_primary: eu
entity_types:
  - {name: account, mode: request-region, home: eu}
  - {name: cart, mode: replicated}
  - {name: click, mode: local}
`, addrs[0], addrs[1]), 0o600); err != nil {
		b.Fatal(err)
	}
	clients := map[string]streamdv1.EventStreamServiceClient{}
	for i, region := range []string{"us", "eu"} {
		d := streamdtest.Start(b, streamdtest.Options{DataDir: b.TempDir(), Args: []string{"--region", region, "--config", cfg, "--listen", addrs[i]}})
		cc, err := grpc.NewClient(d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		clients[region] = streamdv1.NewEventStreamServiceClient(cc)
	}
	ops := []*streamdv1.CrdtOp{
		{Field: "items", Op: &streamdv1.CrdtOp_AddElement{AddElement: "sku"}},
		{Field: "qty", Op: &streamdv1.CrdtOp_AddCounter{AddCounter: 1}},
		{Field: "note", Op: &streamdv1.CrdtOp_SetRegister{SetRegister: "x"}},
	}
	payload := make([]byte, 100)
	for _, mode := range []struct {
		name, region string
		event        func(i int) *streamdv1.Event
	}{
		{"local", "us", func(i int) *streamdv1.Event {
			return &streamdv1.Event{EntityType: "click", EntityId: fmt.Sprint(i % 64), EventType: "Clicked", Payload: payload}
		}},
		{"pinned-in-primary", "eu", func(i int) *streamdv1.Event {
			return &streamdv1.Event{EntityType: "order", EntityId: fmt.Sprint("p", i%64), EventType: "Placed", Payload: payload}
		}},
		{"forwarded", "us", func(i int) *streamdv1.Event {
			return &streamdv1.Event{EntityType: "order", EntityId: fmt.Sprint("f", i%64), EventType: "Placed", Payload: payload}
		}},
		{"takeover", "us", func(i int) *streamdv1.Event {
			return &streamdv1.Event{EntityType: "account", EntityId: fmt.Sprint(b.N, "-", i), EventType: "Opened", Payload: payload}
		}},
		{"replicated", "us", func(i int) *streamdv1.Event {
			return &streamdv1.Event{EntityType: "cart", EntityId: fmt.Sprint(i % 64), CrdtOps: ops}
		}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			c := clients[mode.region]
			for b.Loop() {
				lat := make([]time.Duration, samples)
				errs := make([]error, samples)
				var wg sync.WaitGroup
				tick := time.NewTicker(time.Second / rate)
				for i := range samples {
					<-tick.C
					wg.Go(func() {
						start := time.Now()
						_, errs[i] = c.Publish(context.Background(), &streamdv1.PublishRequest{Events: []*streamdv1.Event{mode.event(i)}})
						lat[i] = time.Since(start)
					})
				}
				tick.Stop()
				wg.Wait()
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			}
		})
	}
}

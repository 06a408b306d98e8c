package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/streamd/streamd/internal/streamdtest"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// BenchmarkPublishByMode measures the latency of Publish over loopback
// between two streamd processes (us, eu) of one project, durable (fsync)
// journals, by mode: plain (a third streamd, of no project: the reference),
// local (appended in us), pinned in its primary (eu), forwarded (pinned to
// eu, published in us), takeover (request-region, home eu, each publish in
// us of a new entity takes it over first) and replicated (three CRDT ops in
// us). Publishes are sent open-loop at 1,000 a second on a fixed schedule
// (a late one is sent at once, not dropped) over entities of their own (one
// entity's writes are serialised); each mode reports p50 and p99 of 1,000
// publishes, timed from the call, after 200 unmeasured ones (connections,
// caches, the journals' first segments).
//
// On a shared machine the figures follow its load: a publish waits for one
// to three fsyncs (takeover: the owner's handover, its copy here, the
// write) and for wake-ups in three processes. So each mode also reports
// what the machine gave it during the same second: rtt, a Health.Check (no
// disk) to the same streamd, 100 a second, and fsync, the mean fsync of the
// journals written (their group commits): the two regions', or plain's.
//
//	go test -run '^$' -bench BenchmarkPublishByMode -benchtime=1x ./cmd/streamd
func BenchmarkPublishByMode(b *testing.B) {
	const (
		rate    = 1000
		warmup  = 200
		samples = 1000
		rttRate = 100
	)
	cfg, addrs := twoRegionProject(b)
	clients := map[string]streamdv1.EventStreamServiceClient{}
	health := map[string]healthpb.HealthClient{}
	metricsAddrs := map[string]string{}
	for i, region := range []string{"us", "eu", "plain"} {
		args := []string{"--listen", "127.0.0.1:0"}
		if region != "plain" {
			args = []string{"--region", region, "--config", cfg, "--listen", addrs[i]}
		}
		d := streamdtest.Start(b, streamdtest.Options{DataDir: b.TempDir(), Metrics: true, Args: args})
		metricsAddrs[region] = d.MetricsAddr
		cc, err := grpc.NewClient(d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cc.Close() })
		clients[region] = streamdv1.NewEventStreamServiceClient(cc)
		health[region] = healthpb.NewHealthClient(cc)
	}
	// fsyncs is the count and total time so far of the fsyncs of the
	// journals a publish to region writes.
	fsyncs := func(region string) (n uint64, total float64) {
		written := []string{"us", "eu"}
		if region == "plain" {
			written = []string{"plain"}
		}
		for _, r := range written {
			h := scrape(b, metricsAddrs[r])["streamd_journal_fsync_seconds"].GetMetric()[0].GetHistogram()
			n, total = n+h.GetSampleCount(), total+h.GetSampleSum()
		}
		return n, total
	}
	ops := []*streamdv1.CrdtOp{
		{Field: "items", Op: &streamdv1.CrdtOp_AddElement{AddElement: "sku"}},
		{Field: "qty", Op: &streamdv1.CrdtOp_AddCounter{AddCounter: 1}},
		{Field: "note", Op: &streamdv1.CrdtOp_SetRegister{SetRegister: "x"}},
	}
	payload := make([]byte, 100)
	var accounts int // takeover: every publish is of a new account
	for _, mode := range []struct {
		name, region string
		event        func(i int) *streamdv1.Event
	}{
		{"plain", "plain", func(i int) *streamdv1.Event {
			return &streamdv1.Event{EntityType: "click", EntityId: fmt.Sprint(i % 64), EventType: "Clicked", Payload: payload}
		}},
		{"local", "us", func(i int) *streamdv1.Event {
			return &streamdv1.Event{EntityType: "click", EntityId: fmt.Sprint(i % 64), EventType: "Clicked", Payload: payload}
		}},
		{"pinned-in-primary", "eu", func(i int) *streamdv1.Event {
			return &streamdv1.Event{EntityType: "order", EntityId: fmt.Sprint("p", i%64), EventType: "Placed", Payload: payload}
		}},
		{"forwarded", "us", func(i int) *streamdv1.Event {
			return &streamdv1.Event{EntityType: "order", EntityId: fmt.Sprint("f", i%64), EventType: "Placed", Payload: payload}
		}},
		{"takeover", "us", func(int) *streamdv1.Event {
			accounts++ // called on the pacing goroutine only
			return &streamdv1.Event{EntityType: "account", EntityId: fmt.Sprint(accounts), EventType: "Opened", Payload: payload}
		}},
		{"replicated", "us", func(i int) *streamdv1.Event {
			return &streamdv1.Event{EntityType: "cart", EntityId: fmt.Sprint(i % 64), CrdtOps: ops}
		}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			c := clients[mode.region]
			publish := func(i int) func(context.Context) error {
				req := &streamdv1.PublishRequest{Events: []*streamdv1.Event{mode.event(i)}}
				return func(ctx context.Context) error { _, err := c.Publish(ctx, req); return err }
			}
			check := func(int) func(context.Context) error {
				return func(ctx context.Context) error {
					_, err := health[mode.region].Check(ctx, &healthpb.HealthCheckRequest{})
					return err
				}
			}
			for b.Loop() {
				if _, err := paced(rate, warmup, publish); err != nil {
					b.Fatalf("warm-up: %v", err)
				}
				n0, sum0 := fsyncs(mode.region)
				var rtt []time.Duration
				var rttErr error
				var wg sync.WaitGroup
				wg.Go(func() { rtt, rttErr = paced(rttRate, samples*rttRate/rate, check) })
				lat, err := paced(rate, samples, publish)
				wg.Wait()
				if err != nil {
					b.Fatal(err)
				}
				if rttErr != nil {
					b.Fatalf("health check: %v", rttErr)
				}
				n1, sum1 := fsyncs(mode.region)
				b.ReportMetric(float64(quantile(lat, .5).Microseconds()), "p50-µs")
				b.ReportMetric(float64(quantile(lat, .99).Microseconds()), "p99-µs")
				b.ReportMetric(float64(quantile(rtt, .5).Microseconds()), "rtt-p50-µs")
				b.ReportMetric(float64(quantile(rtt, .99).Microseconds()), "rtt-p99-µs")
				b.ReportMetric((sum1-sum0)/float64(max(n1-n0, 1))*1e6, "fsync-µs")
			}
		})
	}
}

// paced calls call(i)'s result for i in 0..n-1, each on its own goroutine,
// at rate a second on a fixed schedule from the first (one running late
// is sent at once), and returns each call's latency; call(i) itself runs on
// the calling goroutine, in order.
func paced(rate, n int, call func(i int) func(context.Context) error) ([]time.Duration, error) {
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range n {
		do := call(i)
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))))
		wg.Go(func() {
			called := time.Now()
			errs[i] = do(context.Background())
			lat[i] = time.Since(called)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return lat, nil
}

// quantile is the q-quantile of d (sorted in place).
func quantile(d []time.Duration, q float64) time.Duration {
	slices.Sort(d)
	return d[min(len(d)-1, int(float64(len(d))*q))]
}

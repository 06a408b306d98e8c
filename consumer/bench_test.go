package consumer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"runtime/pprof"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

var catchUpEvents = flag.Int("catchup.events", 100_000, "BenchmarkCatchUp: events stored and read by each run")

// catchUpEntities and catchUpPayload shape BenchmarkCatchUp's events as
// the bench harness's workload 2: 128-byte payloads over 10,000 entities.
const (
	catchUpEntities = 10_000
	catchUpPayload  = 128
)

// BenchmarkCatchUp reads -catchup.events stored events from a producer over
// loopback TCP: raw, a Subscribe stream decoded and counted; positions, a
// Consumer at-least-once with an offsets store on disk, saving every 1,000
// events (the defaults), its handler counting. Both report events/s; the
// gap is what the consumer library costs.
func BenchmarkCatchUp(b *testing.B) {
	addr := catchUpProducer(b, *catchUpEvents)
	n := *catchUpEvents
	b.Run("raw", func(b *testing.B) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		client := streamdv1.NewEventStreamServiceClient(conn)
		begin := time.Now()
		for b.Loop() {
			var err error
			pprof.Do(context.Background(), pprof.Labels("side", "raw"), func(context.Context) { err = catchUpRaw(client, n) })
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n*b.N)/time.Since(begin).Seconds(), "events/s")
	})
	b.Run("positions", func(b *testing.B) {
		var elapsed time.Duration
		for i := 0; b.Loop(); i++ {
			// The label marks the client's goroutines (Badger's of the
			// store too) in a CPU profile: -tagfocus=side=consumer.
			var err error
			pprof.Do(context.Background(), pprof.Labels("side", "consumer"), func(context.Context) {
				var store *offsets.Store
				if store, err = offsets.Open(b.TempDir(), offsets.Options{Logger: quiet}); err != nil {
					return
				}
				begin := time.Now()
				err = catchUpConsumer(addr, store, fmt.Sprint("bench-", i), n)
				elapsed += time.Since(begin)
				if cerr := store.Close(); err == nil {
					err = cerr
				}
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "events/s")
	})
}

// catchUpProducer serves a producer over TCP on 127.0.0.1 holding n events.
func catchUpProducer(b *testing.B, n int) string {
	b.Helper()
	p, err := producer.Open(b.TempDir(), producer.Options{Journal: journal.Options{Durability: journal.DurabilityAsync, Logger: quiet}})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.Close()
		b.Fatal(err)
	}
	g := grpc.NewServer()
	streamdv1.RegisterEventStreamServiceServer(g, p.Server())
	served := make(chan error, 1)
	go func() { served <- g.Serve(lis) }()
	b.Cleanup(func() {
		p.Server().Shutdown()
		g.Stop()
		if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			b.Error(err)
		}
		if err := p.Close(); err != nil {
			b.Error(err)
		}
	})
	const batch = 1000
	for i := 0; i < n; i += batch {
		evs := make([]*streamdv1.Event, min(batch, n-i))
		for k := range evs {
			evs[k] = &streamdv1.Event{EntityType: "device", EntityId: fmt.Sprint("device-", (i+k)%catchUpEntities),
				EventType: "Measured", Payload: make([]byte, catchUpPayload)}
		}
		if _, err := p.Publish(context.Background(), evs...); err != nil {
			b.Fatal(err)
		}
	}
	return lis.Addr().String()
}

// catchUpRaw reads n events from the earliest offset with a bare Subscribe.
func catchUpRaw(client streamdv1.EventStreamServiceClient, n int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := client.Subscribe(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
		ConsumerName: "bench-raw", StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST}}}); err != nil {
		return err
	}
	got, bytes := 0, 0
	for got < n {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		for _, e := range m.GetEvents().GetEvents() {
			got++
			bytes += len(e.Payload)
		}
	}
	if bytes != n*catchUpPayload {
		return fmt.Errorf("raw: %d payload bytes, want %d", bytes, n*catchUpPayload)
	}
	return nil
}

// catchUpConsumer reads n events from the earliest offset with a Consumer
// that keeps its positions in store, and checks that the last one is saved.
func catchUpConsumer(addr string, store *offsets.Store, name string, n int) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got, bytes := 0, 0
	c, err := New(Options{
		Producers:   []string{addr},
		Name:        name,
		Store:       store,
		StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST,
		Logger:      quiet,
		Handler: func(_ context.Context, e *streamdv1.Event) error {
			got++
			bytes += len(e.Payload)
			if got == n {
				cancel()
			}
			return nil
		},
	})
	if err != nil {
		return err
	}
	if err := c.Run(ctx); err != nil {
		return err
	}
	if got != n || bytes != n*catchUpPayload {
		return fmt.Errorf("consumer: %d events of %d payload bytes, want %d of %d", got, bytes, n, n*catchUpPayload)
	}
	st := c.Status()
	if len(st) != 1 || st[0].Offset != uint64(n) {
		return fmt.Errorf("consumer: status %+v, want offset %d", st, n)
	}
	r, err := store.Resolve(offsets.Key{Consumer: name, JournalID: st[0].JournalID, Slices: offsets.AllSlices})
	if err != nil {
		return err
	}
	if r.Offset.Offset != uint64(n) {
		return fmt.Errorf("consumer: stored offset %d, want %d", r.Offset.Offset, n)
	}
	return nil
}

package producer

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// BenchmarkCatchUp: 1,000,000 stored 128-byte events streamed to one
// consumer over loopback TCP.
func BenchmarkCatchUp(b *testing.B) {
	const events = 1_000_000
	h := start(b, Options{Journal: journal.Options{Durability: journal.DurabilityAsync}})
	for i := 0; i < events; i += 1000 {
		batch := make([]*streamdv1.Event, 1000)
		for k := range batch {
			batch[k] = car(fmt.Sprint("car-", (i+k)%10_000), "x")
		}
		if _, err := h.p.Publish(context.Background(), batch...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	total := 0
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		st, err := h.client.Subscribe(ctx)
		if err != nil {
			b.Fatal(err)
		}
		st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
			Stream: DefaultStream, ConsumerName: "bench", StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST}}})
		got := 0
		for got < events {
			m, err := st.Recv()
			if err != nil {
				b.Fatal(err)
			}
			got += len(m.GetEvents().GetEvents())
		}
		cancel()
		total += got
	}
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkLiveLatency: events published at 10,000/s; latency from Publish
// returning to the consumer receiving the event, p50 and p99.
func BenchmarkLiveLatency(b *testing.B) {
	h := start(b, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := h.client.Subscribe(ctx)
	if err != nil {
		b.Fatal(err)
	}
	st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
		Stream: DefaultStream, ConsumerName: "bench", StartPolicy: streamdv1.StartPolicy_START_POLICY_LATEST}}})
	if _, err := st.Recv(); err != nil {
		b.Fatal(err)
	}
	n := max(b.N, 2000)
	acked := make([]time.Time, n+1) // by offset
	received := make(chan time.Time, n+1)
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			now := time.Now()
			for range m.GetEvents().GetEvents() {
				received <- now
			}
		}
	}()
	const rate = 10_000
	interval := time.Second / rate
	b.ResetTimer()
	begin := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Paced publishers: 16 in flight, each event at its scheduled time.
		sem := make(chan struct{}, 16)
		for i := range n {
			time.Sleep(time.Until(begin.Add(time.Duration(i) * interval)))
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				res, err := h.p.Publish(context.Background(), car(fmt.Sprint("car-", i%100), "x"))
				if err != nil {
					b.Error(err)
					return
				}
				acked[res[0].Offset] = time.Now()
			}()
		}
		for range cap(sem) {
			sem <- struct{}{}
		}
	}()
	recv := make([]time.Time, 0, n)
	for range n {
		recv = append(recv, <-received)
	}
	<-done
	lat := make([]time.Duration, 0, n)
	for i, r := range recv {
		if a := acked[i+1]; !a.IsZero() {
			lat = append(lat, max(r.Sub(a), 0))
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(n)/time.Since(begin).Seconds(), "events/s")
}

// BenchmarkPublishStream: one client, many requests in flight, sync durability.
func BenchmarkPublishStream(b *testing.B) {
	h := start(b, Options{})
	st, err := h.client.PublishStream(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	begin := time.Now()
	go func() {
		for i := range b.N {
			st.Send(&streamdv1.PublishStreamRequest{Events: []*streamdv1.Event{car(fmt.Sprint("car-", i%1000), "x")}})
		}
		st.CloseSend()
	}()
	for range b.N {
		r, err := st.Recv()
		if err != nil || r.Code != 0 {
			b.Fatal(err, r)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(begin).Seconds(), "events/s")
}

package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/streamd/streamd/internal/kubetest"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/publisher"
)

// BenchmarkEntityGroupPublish measures durable publishing through one pod
// of a group of two (real processes, the Kubernetes API from kubetest):
// one publisher.Publisher, 256 publishes awaiting their answer, events of
// 10,000 entities, so about half are forwarded to the other pod, each in a
// Publish of its own. The reference, plain, is one streamd without a
// group, the same publisher and events. It reports events/s of each.
//
//	go test -run '^$' -bench BenchmarkEntityGroupPublish -benchtime=100000x ./cmd/streamd
func BenchmarkEntityGroupPublish(b *testing.B) {
	api := kubetest.New()
	srv := httptest.NewServer(api)
	defer srv.Close()
	cfg := filepath.Join(b.TempDir(), "orders.yaml")
	if err := os.WriteFile(cfg, []byte("group:\n  name: orders\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	pods := map[string]*daemon{}
	for _, id := range []string{"orders-0", "orders-1"} {
		pods[id] = startPod(b, b.TempDir(), "eu", cfg, id, srv.URL)
	}
	for id, d := range pods {
		waitWriting(b, "two pods", id, d, 512)
	}
	plain := startDaemon(b, b.TempDir())
	for _, sys := range []struct {
		name string
		d    *daemon
	}{{"plain", plain}, {"group", pods["orders-0"]}} {
		b.Run(sys.name, func(b *testing.B) {
			pub, err := publisher.New(context.Background(), sys.d.conn, publisher.Options{})
			if err != nil {
				b.Fatal(err)
			}
			acks := make(chan *publisher.Ack, 256)
			done := make(chan error, 1)
			go func() {
				var first error
				for a := range acks {
					if _, err := a.Result(); err != nil && first == nil {
						first = err
					}
				}
				done <- first
			}()
			b.ResetTimer()
			start := time.Now()
			for i := range b.N {
				acks <- pub.PublishAsync(&streamdv1.Event{EntityType: "order", EntityId: fmt.Sprint("o", i%10000), EventType: "Placed", Payload: make([]byte, 128)})
			}
			close(acks)
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
			if err := pub.Close(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

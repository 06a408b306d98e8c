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
	"github.com/streamd/streamd/internal/testwait"
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
	var pods []*daemon
	for _, id := range []string{"orders-0", "orders-1"} {
		pods = append(pods, startDaemon(b, b.TempDir(), "--region", "eu", "--config", cfg, "--pod-name", id, "--pod-namespace", "shop",
			"--kube-api", srv.URL, "--group-lease-duration", "3s"))
	}
	for _, d := range pods {
		if !testwait.Until(60*time.Second, func() bool {
			return value(scrape(b, d.MetricsAddr)["streamd_group_slices"]) == 512
		}) {
			b.Fatal("the pods did not split the slices")
		}
	}
	plain := startDaemon(b, b.TempDir())
	for _, sys := range []struct {
		name string
		d    *daemon
	}{{"plain", plain}, {"group", pods[0]}} {
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

package publisher

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPublish: one publisher, one event per publish, 256 publishes
// awaiting their answer, sync durability, over loopback TCP. Compare with
// producer's BenchmarkPublishStream (one event per request).
func BenchmarkPublish(b *testing.B) {
	s := serve(b)
	pub := s.publisher(b, Options{})
	acks := make(chan *Ack, 256)
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
	begin := time.Now()
	for i := range b.N {
		acks <- pub.PublishAsync(car(fmt.Sprint("car-", i%1000)))
	}
	close(acks)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(begin).Seconds(), "events/s")
	b.ReportMetric(float64(b.N)/float64(s.requests.Load()), "events/request")
	if err := pub.Close(); err != nil {
		b.Fatal(err)
	}
}

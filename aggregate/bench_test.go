package aggregate

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// BenchmarkStage measures a stage reading a journal of car readings (three
// groups, two value fields with every op, payload time): events/s into the
// stage and CPU time per event (user + system of the whole process, so the
// journal's reads count too).
func BenchmarkStage(b *testing.B) {
	const events = 50_000
	j := openJournal(b)
	tags := []string{"sports", "family", "truck"}
	batch := make([]*streamdv1.Event, 0, 1000)
	for i := range events {
		batch = append(batch, reading(fmt.Sprintf("c%d", i%300), tags[i%3], int64(i)*2, float64(i%200)))
		if len(batch) == cap(batch) {
			publish(b, j, batch...)
			batch = batch[:0]
		}
	}
	last := j.LastOffset()
	o := carOptions(j)
	var cpu time.Duration
	var n int
	b.ResetTimer()
	for b.Loop() {
		// A stage of its own, with summary entities of its own.
		o.Name, o.Output.EntityType = fmt.Sprintf("bench-%d", n), fmt.Sprintf("summary-%d", n)
		n++
		s, err := New(o)
		if err != nil {
			b.Fatal(err)
		}
		before := cpuTime()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		for st := s.Status(); st.Next <= last && st.Err == nil; st = s.Status() {
			time.Sleep(time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime() - before
	}
	total := float64(events * n)
	b.ReportMetric(total/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Nanoseconds())/total, "cpu-ns/event")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

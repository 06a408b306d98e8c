package topology_test

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
)

var streamsEvents = flag.Int("streams.events", 20_000, "BenchmarkReplicationStreams: events in the source journal, copied once per run")

// cpuTime is the CPU time this process has used (user and system).
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReplicationStreams copies a source journal of -streams.events
// events (128-byte payloads over 10,000 entities, so every slice has
// events) into an empty region over 1, 2 and 4 streams, over loopback TCP,
// and reports events/s, the CPU time of the process (source and
// destination both) per event copied, and the events per group commit of
// the destination journal (its appends from the streams, merged).
func BenchmarkReplicationStreams(b *testing.B) {
	src := lagStartRegion(b, "a")
	const batch = 100
	payload := make([]byte, lagPayloadSize)
	for i := 0; i < *streamsEvents; i += batch {
		events := make([]*streamdv1.Event, 0, batch)
		for j := i; j < min(i+batch, *streamsEvents); j++ {
			events = append(events, &streamdv1.Event{EntityType: "cart", EntityId: fmt.Sprintf("c%d", j%10_000), EventType: "Added", Payload: payload})
		}
		if _, err := src.p.Publish(context.Background(), events...); err != nil {
			b.Fatal(err)
		}
	}
	want := src.p.Journal().Info().LastOffset
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	for _, n := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			var copied, commits int64
			var elapsed, cpu time.Duration
			for b.Loop() {
				dst := lagStartRegion(b, "b")
				repl, err := topology.NewReplication(topology.ReplicationOptions{
					From: topology.Region{Name: "a", Addrs: []string{src.addr}}, Streams: n,
					Journal: dst.p.Journal(), Logger: log,
				})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				t0, cpu0 := time.Now(), cpuTime(b)
				go func() { done <- repl.Run(ctx) }()
				tick := time.NewTicker(time.Millisecond)
				for dst.p.Journal().Info().LastOffset < want {
					select {
					case err := <-done:
						b.Fatalf("replication stopped: %v", err)
					case <-tick.C:
					}
				}
				tick.Stop()
				elapsed, cpu = elapsed+time.Since(t0), cpu+cpuTime(b)-cpu0
				copied += int64(want)
				commits += dst.commits.commits.Load()
				cancel()
				if err := <-done; err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(copied)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(cpu)/float64(copied)/float64(time.Microsecond), "cpu-µs/event")
			b.ReportMetric(float64(copied)/float64(commits), "events/commit")
		})
	}
}

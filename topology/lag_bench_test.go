package topology_test

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
)

var (
	lagDuration = flag.Duration("lag.duration", 5*time.Second, "BenchmarkReplicationLag: how long each run publishes")
	lagRate     = flag.Int("lag.rate", 10_000, "BenchmarkReplicationLag: events published per second")
)

// The workload of BenchmarkReplicationLag: -lag.rate events a second of
// lagPayloadSize bytes, lagBatch per Publish, over lagEntities entities, by
// up to lagPublishers concurrent Publish calls (with sync durability a
// Publish waits for its fsync; concurrent ones share it).
const (
	lagBatch       = 10
	lagPayloadSize = 128
	lagEntities    = 100
	lagPublishers  = 32
)

// lagRegion is a region of the benchmark: a producer with default (sync)
// durability served over TCP on 127.0.0.1.
type lagRegion struct {
	commits *lagCommits
	p       *producer.Producer
	g       *grpc.Server
	addr    string
	served  chan error
}

func lagStartRegion(b *testing.B, name string) *lagRegion {
	b.Helper()
	commits := &lagCommits{}
	p, err := producer.Open(b.TempDir(), producer.Options{Journal: journal.Options{Region: name, Observer: commits}})
	if err != nil {
		b.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.Close()
		b.Fatal(err)
	}
	r := &lagRegion{commits: commits, p: p, g: grpc.NewServer(), addr: lis.Addr().String(), served: make(chan error, 1)}
	streamdv1.RegisterEventStreamServiceServer(r.g, p.Server())
	go func() { r.served <- r.g.Serve(lis) }()
	b.Cleanup(func() {
		r.p.Server().Shutdown()
		r.g.Stop()
		if err := <-r.served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			b.Error(err)
		}
		if err := r.p.Close(); err != nil {
			b.Error(err)
		}
	})
	return r
}

// lagCommits counts a journal's group commits, their events and the time
// spent in fsync.
type lagCommits struct {
	commits, events, fsync atomic.Int64
}

func (c *lagCommits) Committed(appends, events int, bytes int64, fsync time.Duration) {
	c.commits.Add(1)
	c.events.Add(int64(events))
	c.fsync.Add(int64(fsync))
}

func (c *lagCommits) RetentionDeleted(int) {}

// report reports the commits since the counts were before: events per
// commit and mean fsync time, as metrics named after the region.
func (c *lagCommits) report(b *testing.B, region string, before [3]int64) {
	commits := c.commits.Load() - before[0]
	if commits == 0 {
		return
	}
	b.ReportMetric(float64(c.events.Load()-before[1])/float64(commits), region+"-events/commit")
	b.ReportMetric(float64(c.fsync.Load()-before[2])/float64(commits)/float64(time.Microsecond), region+"-fsync-µs")
}

func (c *lagCommits) counts() [3]int64 {
	return [3]int64{c.commits.Load(), c.events.Load(), c.fsync.Load()}
}

// lagEvent is event id of the workload: its payload starts with the id.
func lagEvent(id uint64, entities []string) *streamdv1.Event {
	payload := make([]byte, lagPayloadSize)
	binary.BigEndian.PutUint64(payload, id)
	return &streamdv1.Event{EntityType: "lag", EntityId: entities[id%lagEntities], EventType: "Sampled", Payload: payload}
}

// lagObserver follows a journal from its next offset and records, for the
// events with ids in [first, first+n), when each became readable there.
type lagObserver struct {
	seenAt []time.Duration // since t0; 0 until seen
	seen   atomic.Int64
	done   chan error // nil once every event was seen
}

func lagObserve(ctx context.Context, j *journal.Journal, first uint64, n int, t0 time.Time) *lagObserver {
	o := &lagObserver{seenAt: make([]time.Duration, n), done: make(chan error, 1)}
	cur := j.NewCursor(j.LastOffset() + 1)
	go func() {
		var buf []journal.Record
		seen := 0
		for seen < n {
			var err error
			if buf, err = cur.Wait(ctx, 4096, buf[:0]); err != nil {
				o.done <- err
				return
			}
			at := time.Since(t0) // every record of the read was committed by now
			for i := range buf {
				e, err := buf[i].Event()
				if err != nil {
					o.done <- err
					return
				}
				if len(e.Payload) < 8 {
					continue
				}
				if k := binary.BigEndian.Uint64(e.Payload) - first; k < uint64(n) && o.seenAt[k] == 0 {
					o.seenAt[k] = at
					seen++
				}
			}
			o.seen.Store(int64(seen))
		}
		o.done <- nil
	}()
	return o
}

// lagRun publishes d's worth of the workload in a, paced, and returns for
// each event the time from its Publish returning in a to its being readable
// in b's journal, and the publish rate achieved.
func lagRun(tb testing.TB, a, b *lagRegion, first uint64, d time.Duration, entities []string) (lags []time.Duration, rate float64) {
	tb.Helper()
	batches := max(1, int(d.Seconds()*float64(*lagRate)/lagBatch))
	n := batches * lagBatch
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	t0 := time.Now()
	obs := lagObserve(ctx, b.p.Journal(), first, n, t0)
	ackedAt := make([]time.Duration, n)

	work := make(chan int, lagPublishers)
	var wg sync.WaitGroup
	var errOnce sync.Once
	var publishErr error
	for range lagPublishers {
		wg.Go(func() {
			for k := range work {
				evs := make([]*streamdv1.Event, lagBatch)
				for i := range evs {
					evs[i] = lagEvent(first+uint64(k*lagBatch+i), entities)
				}
				if _, err := a.p.Publish(ctx, evs...); err != nil {
					errOnce.Do(func() { publishErr = err })
					continue
				}
				at := time.Since(t0)
				for i := range lagBatch {
					ackedAt[k*lagBatch+i] = at
				}
			}
		})
	}
	// Batch k is due at k·interval; when the publishers fall behind, the
	// due batches go out as soon as one is free.
	interval := time.Second * lagBatch / time.Duration(*lagRate)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for k := range batches {
		if wait := time.Duration(k)*interval - time.Since(t0); wait > 0 {
			timer.Reset(wait)
			<-timer.C
		}
		work <- k
	}
	close(work)
	wg.Wait()
	elapsed := time.Since(t0)
	if publishErr != nil {
		tb.Fatalf("publish: %v", publishErr)
	}

	// Wait for every event in b, failing after a deadline.
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	select {
	case err := <-obs.done:
		if err != nil {
			tb.Fatalf("observing b: %v", err)
		}
	case <-deadline.C:
		tb.Fatalf("%d of %d events reached b within 30s of the last publish", obs.seen.Load(), n)
	}
	lags = make([]time.Duration, n)
	for i := range lags {
		lags[i] = obs.seenAt[i] - ackedAt[i]
	}
	return lags, float64(n) / elapsed.Seconds()
}

// BenchmarkReplicationLag: two regions over TCP on 127.0.0.1 with default
// (sync) durability, a replication from a to b. a publishes -lag.rate
// events/s (default 10,000: 128-byte payloads, 10 per Publish every
// millisecond) for -lag.duration (default 5s);
// for each event, the lag is the time from its Publish returning in a to
// its being readable in b's journal (committed there and, with sync
// durability, fsync'd). Reports the lag's percentiles and the publish rate
// achieved. The workload is fixed, whatever b.N: run it with -benchtime=1x.
func BenchmarkReplicationLag(b *testing.B) {
	ra, rb := lagStartRegion(b, "a"), lagStartRegion(b, "b")
	repl, err := topology.NewReplication(topology.ReplicationOptions{
		From:    topology.Region{Name: "a", Addrs: []string{ra.addr}},
		Journal: rb.p.Journal(),
		Logger:  slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	replicating := make(chan error, 1)
	go func() { replicating <- repl.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-replicating; err != nil {
			b.Errorf("replication: %v", err)
		}
	}()
	entities := make([]string, lagEntities)
	for i := range entities {
		entities[i] = fmt.Sprintf("entity-%02d", i)
	}

	// The stream is up before the measurement: one batch across.
	warm, _ := lagRun(b, ra, rb, 0, 0, entities)
	first := uint64(len(warm))

	var lags []time.Duration
	var rates []float64
	aBefore, bBefore := ra.commits.counts(), rb.commits.counts()
	for b.Loop() {
		l, rate := lagRun(b, ra, rb, first, *lagDuration, entities)
		first += uint64(len(l))
		lags, rates = append(lags, l...), append(rates, rate)
	}
	slices.Sort(lags)
	early := 0
	for _, l := range lags {
		if l < 0 {
			early++
		}
	}
	if early > 0 {
		// b committed them before a's Publish returned to its caller: the
		// publisher goroutine was not scheduled in time.
		b.Logf("%d of %d events were readable in b before their Publish returned in a", early, len(lags))
	}
	quantile := func(q float64) float64 {
		return float64(lags[min(len(lags)-1, int(q*float64(len(lags))))]) / float64(time.Microsecond)
	}
	b.ReportMetric(quantile(0.50), "p50-µs")
	b.ReportMetric(quantile(0.99), "p99-µs")
	b.ReportMetric(quantile(0.999), "p99.9-µs")
	b.ReportMetric(float64(lags[len(lags)-1])/float64(time.Microsecond), "max-µs")
	var sum float64
	for _, r := range rates {
		sum += r
	}
	b.ReportMetric(sum/float64(len(rates)), "events/s")
	ra.commits.report(b, "a", aBefore)
	rb.commits.report(b, "b", bBefore)
}

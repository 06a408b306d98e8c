package journal

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

var payload128 = make([]byte, 128)

func benchEvent(i int) *streamdv1.Event {
	return &streamdv1.Event{
		EntityType: "device", EntityId: fmt.Sprintf("device-%d", i%10_000),
		EventType: "Measured", Payload: payload128,
	}
}

// BenchmarkAppend: concurrent single-event appends, each waiting for its ack.
// Compare with BenchmarkRawBadger in the same run: batch=N there is the
// physical limit of N appenders here.
func BenchmarkAppend(b *testing.B) {
	for _, d := range []Durability{DurabilitySync, DurabilityAsync} {
		for _, appenders := range []int{1, 16, 256} {
			b.Run(fmt.Sprintf("%s/appenders=%d", d, appenders), func(b *testing.B) {
				obs := &countingObserver{}
				j, err := Open(b.TempDir(), Options{Durability: d, Observer: obs})
				if err != nil {
					b.Fatal(err)
				}
				defer j.Close()
				var next atomic.Int64
				total := int64(b.N)
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for range appenders {
					wg.Go(func() {
						for {
							i := next.Add(1)
							if i > total {
								return
							}
							if _, err := j.Append(context.Background(), benchEvent(int(i))); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
				obs.report(b)
			})
		}
	}
}

// BenchmarkAppendPaced: open-loop appends (each event appended at its
// scheduled time, whether or not earlier ones were acknowledged), sync
// durability, for two seconds per rate whatever b.N: run it with
// -benchtime=1x. Latency is from the call to the ack. (Not from the
// scheduled time: an idle Go timer wakes up to a millisecond late, which
// would swamp the figure.)
func BenchmarkAppendPaced(b *testing.B) {
	for _, rate := range []int{1_000, 10_000, 50_000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			obs := &countingObserver{}
			j, err := Open(b.TempDir(), Options{Observer: obs})
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			events := rate * 2
			lat := make([]time.Duration, events)
			interval := time.Second / time.Duration(rate)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for i := range events {
				at := start.Add(time.Duration(i) * interval)
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				}
				wg.Go(func() {
					called := time.Now()
					if _, err := j.Append(context.Background(), benchEvent(i)); err != nil {
						b.Error(err)
					}
					lat[i] = time.Since(called)
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			slices.Sort(lat)
			b.ReportMetric(float64(lat[events/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[events*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(lat[events*999/1000].Microseconds()), "p99.9-µs")
			b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
			obs.report(b)
		})
	}
}

// BenchmarkRawBadger is the baseline: the same encoded events written with
// plain Badger, one transaction of `batch` events per fsync (SyncWrites).
func BenchmarkRawBadger(b *testing.B) {
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			db, err := badger.Open(badger.DefaultOptions(b.TempDir()).WithSyncWrites(true).
				WithDetectConflicts(false).WithLogger(nil))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i += batch {
				txn := db.NewTransaction(true)
				for k := i; k < min(i+batch, b.N); k++ {
					e := benchEvent(k)
					e.Offset = uint64(k + 1)
					val, _ := proto.Marshal(e)
					if err := txn.Set(blockKey(uint64(k+1)), val); err != nil {
						b.Fatal(err)
					}
				}
				if err := txn.Commit(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkScan: catch-up read of 1,000,000 stored 128-byte events.
func BenchmarkScan(b *testing.B) {
	const events = 1_000_000
	j, err := Open(b.TempDir(), Options{Durability: DurabilityAsync})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	for i := 0; i < events; i += 1000 {
		batch := make([]*streamdv1.Event, 1000)
		for k := range batch {
			batch[k] = benchEvent(i + k)
		}
		if _, err := j.Append(context.Background(), batch...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	start := time.Now()
	read := 0
	for b.Loop() {
		buf := make([]*streamdv1.Event, 0, 1000)
		for from := uint64(1); ; {
			batch, err := j.Read(from, 1000, buf[:0])
			if err != nil {
				b.Fatal(err)
			}
			if len(batch) == 0 {
				break
			}
			read += len(batch)
			from = batch[len(batch)-1].Offset + 1
		}
	}
	if read%events != 0 {
		b.Fatalf("read %d events, not a multiple of %d", read, events)
	}
	b.ReportMetric(float64(read)/time.Since(start).Seconds(), "events/s")
}

type countingObserver struct{ commits, events, fsyncNanos atomic.Int64 }

// report adds the events per commit and the time per fsync to b's metrics.
func (o *countingObserver) report(b *testing.B) {
	commits := float64(max(o.commits.Load(), 1))
	b.ReportMetric(float64(o.events.Load())/commits, "events/commit")
	b.ReportMetric(float64(o.fsyncNanos.Load())/1e3/commits, "µs/fsync")
}

func (o *countingObserver) Committed(appends, events int, bytes int64, fsync time.Duration) {
	o.commits.Add(1)
	o.events.Add(int64(events))
	o.fsyncNanos.Add(int64(fsync))
}
func (o *countingObserver) RetentionDeleted(int) {}

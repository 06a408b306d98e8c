package topology_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamd/streamd/internal/regiontest"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// parts is how a replication over n streams splits the slices.
func parts(n int) []offsets.SliceRange {
	out := make([]offsets.SliceRange, n)
	for k := range n {
		out[k] = offsets.SliceRange{First: uint32(k * journal.Slices / n), Last: uint32((k+1)*journal.Slices/n - 1)}
	}
	return out
}

// A replication restarted with another number of streams, while the source
// is written, copies every event exactly once: each new part resumes from
// the offsets of the former parts it overlaps, and drops what they copied.
// Most entities have one event, so an event skipped by a re-split would
// not be healed by a later event's gap replay: it would be missing.
func TestStreamsResplitWhileEventsFlow(t *testing.T) {
	src := regiontest.Start(t, "us", t.TempDir(), "127.0.0.1:0")
	dst := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	defer src.Stop()
	defer dst.Stop()
	w := &world{&regiontest.World{T: t, Regions: map[string]*regiontest.Region{"us": src, "eu": dst}}}
	store, err := offsets.Wrap(dst.Producer.Journal(), offsets.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	const name = "region-us"

	// The source is written throughout, at a bounded pace, 8 events per
	// publish: entities of one event each, and every tenth event one of a
	// few long-lived entities.
	published, stopPublishing := publishCarts(t, src.Producer, time.Millisecond, 7)
	defer stopPublishing()

	run := func(n int, last bool) {
		t.Helper()
		c, err := topology.NewReplication(topology.ReplicationOptions{
			From: topology.Region{Name: "us", Addrs: []string{src.Addr}}, Name: name, Streams: n,
			Journal: dst.Producer.Journal(), MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: quiet,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("streams %d: %v", n, err)
			}
		}()
		before := len(w.check("eu"))
		// Each part has passed the offsets of the former parts it
		// overlaps: the stored offsets are the n parts, no piece left.
		want := parts(n)
		if !testwait.Until(30*time.Second, func() bool {
			entries, err := store.List(name)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]offsets.SliceRange, len(entries))
			for i, e := range entries {
				got[i] = e.Slices
			}
			return slices.Equal(got, want) && len(w.check("eu")) >= before+400
		}) {
			entries, _ := store.List(name)
			t.Fatalf("streams %d: stored offsets %v, want one per part %v", n, entries, want)
		}
		if !last {
			return
		}
		stopPublishing()
		total := int(published.Load())
		if !testwait.Until(60*time.Second, func() bool { return len(w.check("eu")) == total }) {
			t.Fatalf("eu holds %d events, %d were published in us; missing: %v", len(w.check("eu")), total, missing(t, src, w.check("eu")))
		}
	}
	for i, n := range []int{1, 4, 3, 8, 2, 1, 5} {
		run(n, i == 6)
	}
	// Every event once (check fails on a duplicate or a gap in an
	// entity's origin sequence), and every one of them.
	held := w.check("eu")
	if m := missing(t, src, held); len(m) > 0 {
		t.Fatalf("eu lacks %v", m)
	}
}

// missing lists the first 20 events of src that held lacks, with their
// offsets and slices in src.
func missing(t *testing.T, src *regiontest.Region, held map[originEvent]bool) []string {
	t.Helper()
	recs, err := src.Producer.Journal().Read(1, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range recs {
		k := originEvent{"us", e.GetEntityType() + "/" + e.GetEntityId(), e.GetSeqNr()}
		if !held[k] && len(out) < 20 {
			out = append(out, fmt.Sprintf("%s#%d at offset %d (slice %d)", k.entity, k.originSeqNr, e.GetOffset(), e.GetSlice()))
		}
	}
	return out
}

func TestStreamsOutOfRangeRefused(t *testing.T) {
	r := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	defer r.Stop()
	for _, n := range []int{-1, journal.Slices + 1} {
		_, err := topology.NewReplication(topology.ReplicationOptions{
			From: topology.Region{Name: "us", Addrs: []string{"127.0.0.1:1"}}, Journal: r.Producer.Journal(), Streams: n,
		})
		if err == nil || !errors.Is(err, topology.ErrInvalidOptions) || !strings.Contains(err.Error(), fmt.Sprintf("ReplicationOptions.Streams %d is not in 1-1024", n)) {
			t.Errorf("Streams %d: %v, want ErrInvalidOptions naming ReplicationOptions.Streams", n, err)
		}
	}
}

// publishCarts publishes batches of 8 cart events every interval until
// stop is called (once; later calls do nothing): entities u0, u1, … and,
// for every tenth event, one of hot entities m0…m(hot-1) that get many.
func publishCarts(t *testing.T, p *producer.Producer, interval time.Duration, hot int) (published *atomic.Int64, stop func()) {
	t.Helper()
	published = new(atomic.Int64)
	done := make(chan struct{})
	var pub sync.WaitGroup
	pub.Go(func() {
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			batch := make([]*streamdv1.Event, 8)
			for j := range batch {
				id := fmt.Sprintf("u%d", i)
				if i%10 == 0 {
					id = fmt.Sprintf("m%d", i%hot)
				}
				batch[j] = &streamdv1.Event{EntityType: "cart", EntityId: id, EventType: "ItemAdded"}
				i++
			}
			if _, err := p.Publish(context.Background(), batch...); err != nil {
				t.Error(err)
				return
			}
			published.Add(int64(len(batch)))
		}
	})
	return published, sync.OnceFunc(func() { close(done); pub.Wait() })
}

package primary_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/primary"
)

// benchPrimaries runs a Primary per region, each on its own journal and
// gRPC listener on loopback (no replication: writes and handovers do not
// need it).
func benchPrimaries(b *testing.B, names ...string) map[string]*primary.Primary {
	b.Helper()
	addrs := map[string]string{}
	listeners := map[string]net.Listener{}
	for _, n := range names {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		listeners[n], addrs[n] = lis, lis.Addr().String()
	}
	prims := map[string]*primary.Primary{}
	for _, n := range names {
		j, err := journal.Open(b.TempDir(), journal.Options{Region: n})
		if err != nil {
			b.Fatal(err)
		}
		var others []topology.Region
		for _, o := range names {
			if o != n {
				others = append(others, topology.Region{Name: o, Addrs: []string{addrs[o]}})
			}
		}
		p, err := primary.New(primary.Options{Journal: j, Config: testConfig, Regions: others})
		if err != nil {
			b.Fatal(err)
		}
		g := grpc.NewServer()
		streamdv1.RegisterPrimaryServiceServer(g, p.Server())
		go g.Serve(listeners[n])
		b.Cleanup(func() {
			g.Stop()
			p.Close()
			j.Close()
		})
		prims[n] = p
	}
	return prims
}

// BenchmarkPrimary measures, on loopback with durable (fsync'd) journals,
// the latency of a write in the pinned primary region, of a write forwarded
// to it from another region, and of a write that first switches a
// request-region entity's owner (a handover: the old owner's handover
// event, the new owner storing it, then the write), and of the switch
// alone (Takeover). Each reports p50 and p99 over its samples.
//
//	go test -run '^$' -bench BenchmarkPrimary -benchtime=1x ./topology/
func BenchmarkPrimary(b *testing.B) {
	const samples = 300
	prims := benchPrimaries(b, "eu", "us")
	ctx := context.Background()
	measure := func(b *testing.B, write func(i int) (primary.Written, error)) {
		for b.Loop() {
			lat := make([]time.Duration, 0, samples)
			for i := range samples {
				start := time.Now()
				if _, err := write(i); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		}
	}
	n := 0
	b.Run("primary-region", func(b *testing.B) {
		measure(b, func(i int) (primary.Written, error) {
			n++
			return prims["eu"].Write(ctx, "order", "o1", primary.AnyVersion, ev(fmt.Sprint(n)))
		})
	})
	b.Run("forwarded", func(b *testing.B) {
		measure(b, func(i int) (primary.Written, error) {
			n++
			return prims["us"].Write(ctx, "order", "o2", primary.AnyVersion, ev(fmt.Sprint(n)))
		})
	})
	b.Run("owner-region", func(b *testing.B) { // request-region, no switch
		measure(b, func(i int) (primary.Written, error) {
			n++
			return prims["us"].Write(ctx, "account", "a0", primary.AnyVersion, ev(fmt.Sprint(n)))
		})
	})
	b.Run("takeover", func(b *testing.B) { // the switch alone: a2 moves to the other region
		measure(b, func(i int) (primary.Written, error) {
			_, err := prims[[]string{"us", "eu"}[i%2]].Takeover(ctx, "account", "a2", false)
			return primary.Written{}, err
		})
	})
	b.Run("switch", func(b *testing.B) { // every write moves a1 to the other region
		measure(b, func(i int) (primary.Written, error) {
			n++
			return prims[[]string{"us", "eu"}[i%2]].Write(ctx, "account", "a1", primary.AnyVersion, ev(fmt.Sprint(n)))
		})
	})
}

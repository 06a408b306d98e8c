package regiontest

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/streamd/streamd/internal/netproxy"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
)

// Region is one region in the test process: a producer with a journal
// named after the region, served over TCP. Replications into it keep their
// progress in its journal.
type Region struct {
	Name, Dir, Addr string
	Producer        *producer.Producer
	g               *grpc.Server
}

// Start opens a producer on dir with a journal of region name and serves
// it on addr ("127.0.0.1:0" for an ephemeral port).
func Start(t testing.TB, name, dir, addr string) *Region {
	t.Helper()
	return StartWith(t, dir, addr, producer.Options{Journal: journal.Options{Region: name}})
}

// StartWith is Start with the producer's options; the region is
// opts.Journal.Region.
func StartWith(t testing.TB, dir, addr string, opts producer.Options) *Region {
	t.Helper()
	p, err := producer.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	streamdv1.RegisterEventStreamServiceServer(g, p.Server())
	go g.Serve(lis)
	return &Region{Name: opts.Journal.Region, Dir: dir, Addr: lis.Addr().String(), Producer: p, g: g}
}

// Stop stops serving and closes the producer.
func (r *Region) Stop() {
	r.Producer.Server().Shutdown()
	r.g.Stop()
	r.Producer.Close()
}

// Link is the replication into one region from another, through Proxy.
type Link struct {
	Proxy  *netproxy.Proxy
	cancel context.CancelFunc
	done   chan error
}

// Running reports whether the link's replication runs.
func (l *Link) Running() bool { return l.cancel != nil }

// World is regions that replicate from each other, each link through a
// proxy that a test can cut.
type World struct {
	T       testing.TB
	Regions map[string]*Region
	Links   map[[2]string]*Link // [from, to]
}

// NewWorld starts a region of each name, on its own temporary directory,
// and a proxy for every link between two of them; no replication runs
// until StartLink or StartAll. The test's cleanup stops everything.
func NewWorld(t testing.TB, names ...string) *World { return NewWorldWith(t, nil, names...) }

// NewWorldWith is NewWorld with each region's producer options: opts(name),
// whose Journal.Region is set to name (nil opts: the defaults).
func NewWorldWith(t testing.TB, opts func(region string) producer.Options, names ...string) *World {
	w := &World{T: t, Regions: map[string]*Region{}, Links: map[[2]string]*Link{}}
	for _, n := range names {
		var o producer.Options
		if opts != nil {
			o = opts(n)
		}
		o.Journal.Region = n
		w.Regions[n] = StartWith(t, t.TempDir(), "127.0.0.1:0", o)
	}
	for _, from := range names {
		for _, to := range names {
			if from != to {
				px, err := netproxy.Start(w.Regions[from].Addr)
				if err != nil {
					t.Fatal(err)
				}
				w.Links[[2]string{from, to}] = &Link{Proxy: px}
			}
		}
	}
	t.Cleanup(func() {
		for k := range w.Links {
			w.StopLink(k[0], k[1])
			w.Links[k].Proxy.Close()
		}
		for _, r := range w.Regions {
			r.Stop()
		}
	})
	return w
}

// StartLink runs the replication into region to from region from.
func (w *World) StartLink(from, to string) {
	w.T.Helper()
	l := w.Links[[2]string{from, to}]
	c, err := topology.NewReplication(topology.ReplicationOptions{
		From:       topology.Region{Name: from, Addrs: []string{l.Proxy.Addr()}},
		Journal:    w.Regions[to].Producer.Journal(),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		w.T.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan error, 1)
	go func() { l.done <- c.Run(ctx) }()
}

// StopLink stops the replication into region to from region from, if it
// runs, and fails the test if it ended with an error.
func (w *World) StopLink(from, to string) {
	l := w.Links[[2]string{from, to}]
	if l.cancel == nil {
		return
	}
	l.cancel()
	if err := <-l.done; err != nil {
		w.T.Errorf("replication %s -> %s: %v", from, to, err)
	}
	l.cancel = nil
}

// StartAll starts every link.
func (w *World) StartAll() {
	for k := range w.Links {
		w.StartLink(k[0], k[1])
	}
}

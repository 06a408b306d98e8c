package primary_test

import (
	"context"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/streamd/streamd/internal/netproxy"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testRegion is one region in the test process: a producer with a journal
// named after the region, served over TCP. Its replications keep their
// offsets in its journal.
type testRegion struct {
	name, dir, addr string
	p               *producer.Producer
	g               *grpc.Server
}

func startRegion(t *testing.T, name, dir, addr string) *testRegion {
	t.Helper()
	p, err := producer.Open(dir, producer.Options{Journal: journal.Options{Region: name}})
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
	return &testRegion{name: name, dir: dir, addr: lis.Addr().String(), p: p, g: g}
}

func (r *testRegion) stop() {
	r.p.Server().Shutdown()
	r.g.Stop()
	r.p.Close()
}

// link is a running replication into region to from region from.
type link struct {
	proxy  *netproxy.Proxy
	cancel context.CancelFunc
	done   chan error
}

// world is regions that replicate from each other, each link through a
// proxy that a test can cut.
type world struct {
	t       *testing.T
	regions map[string]*testRegion
	links   map[[2]string]*link // [from, to]
}

func newWorld(t *testing.T, names ...string) *world {
	w := &world{t: t, regions: map[string]*testRegion{}, links: map[[2]string]*link{}}
	for _, n := range names {
		w.regions[n] = startRegion(t, n, t.TempDir(), "127.0.0.1:0")
	}
	for _, from := range names {
		for _, to := range names {
			if from != to {
				px, err := netproxy.Start(w.regions[from].addr)
				if err != nil {
					t.Fatal(err)
				}
				w.links[[2]string{from, to}] = &link{proxy: px}
			}
		}
	}
	t.Cleanup(func() {
		for k := range w.links {
			w.stopLink(k[0], k[1])
			w.links[k].proxy.Close()
		}
		for _, r := range w.regions {
			r.stop()
		}
	})
	return w
}

func (w *world) startLink(from, to string) {
	w.t.Helper()
	l := w.links[[2]string{from, to}]
	c, err := topology.NewReplication(topology.ReplicationOptions{
		From:       topology.Region{Name: from, Addrs: []string{l.proxy.Addr()}},
		Journal:    w.regions[to].p.Journal(),
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
	})
	if err != nil {
		w.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel, l.done = cancel, make(chan error, 1)
	go func() { l.done <- c.Run(ctx) }()
}

func (w *world) stopLink(from, to string) {
	l := w.links[[2]string{from, to}]
	if l.cancel == nil {
		return
	}
	l.cancel()
	if err := <-l.done; err != nil {
		w.t.Errorf("replication %s -> %s: %v", from, to, err)
	}
	l.cancel = nil
}

func (w *world) startAll() {
	for k := range w.links {
		w.startLink(k[0], k[1])
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/internal/netproxy"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// cloudName is the cloud region's name.
const cloudName = "cloud"

// options size the example.
type options struct {
	streamd string   // the streamd binary
	regions []string // edge regions, each with its own cars
	cars    int      // per edge region
	rate    float64  // readings per car per second of simulated time
	speed   float64  // simulated seconds per real second
	epoch   time.Time
	dir     string // the daemons' config files, data and logs live in it
	// edgeConfig and cloudConfig are the streamd config files; the cloud's
	// has <REGION>_ADDR placeholders for the edges' link proxies.
	edgeConfig, cloudConfig []byte
	// durability of the daemons' journals: sync, or async for tests on a
	// busy disk (safe against a process crash, not an OS crash).
	durability string
	log        *slog.Logger
}

func (o options) validate() error {
	switch {
	case len(o.regions) == 0:
		return errors.New("telemetry: no edge region")
	case o.cars <= 0:
		return fmt.Errorf("telemetry: -cars %d: want > 0", o.cars)
	case o.rate <= 0:
		return fmt.Errorf("telemetry: -rate %g: want > 0", o.rate)
	case o.speed <= 0:
		return fmt.Errorf("telemetry: -speed %g: want > 0", o.speed)
	}
	for i, r := range o.regions {
		if r == "" || r == cloudName || slices.Contains(o.regions[:i], r) || strings.ContainsAny(r, "/- ") {
			return fmt.Errorf("telemetry: %q cannot name an edge region (names are unique, not %q, without /, - or spaces)", r, cloudName)
		}
		if !strings.Contains(string(o.cloudConfig), placeholder(r)) {
			return fmt.Errorf("telemetry: the cloud config has no %s for edge region %s: add a replicate: entry from %s with addrs: [\"%s\"]", placeholder(r), r, r, placeholder(r))
		}
	}
	return nil
}

// placeholder is where the cloud config takes the link address of region.
func placeholder(region string) string { return strings.ToUpper(region) + "_ADDR" }

// edge is an edge region: its streamd, the link proxy the cloud dials, and
// the cars publishing into it.
type edge struct {
	name string
	d    *daemon
	link *netproxy.Proxy
	conn *grpc.ClientConn
	sim  *simulator
}

// system is the whole example: the edge regions and the cloud.
type system struct {
	opts  options
	edges []*edge
	cloud *daemon
	conn  *grpc.ClientConn // to the cloud
	watch cloudWatch
}

// startSystem starts every region's streamd (edges first, then the cloud
// through the link proxies); the cars start with runSims.
func startSystem(o options) (_ *system, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	s := &system{opts: o}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.close())
		}
	}()
	cloudConfig := string(o.cloudConfig)
	for _, name := range o.regions {
		e := &edge{name: name}
		s.edges = append(s.edges, e)
		if e.d, err = startDaemon(o.streamd, o.dir, name, o.edgeConfig, o.durability); err != nil {
			return nil, err
		}
		if e.link, err = netproxy.Start(e.d.addr); err != nil {
			return nil, err
		}
		if e.conn, err = dial(e.d.addr); err != nil {
			return nil, err
		}
		api := streamdv1.NewEventStreamServiceClient(e.conn)
		e.sim = newSimulator(name, o.cars, o.rate, o.speed, o.epoch, func(ctx context.Context, evs ...*streamdv1.Event) error {
			return publish(ctx, api, evs)
		})
		cloudConfig = strings.ReplaceAll(cloudConfig, placeholder(name), e.link.Addr())
	}
	if s.cloud, err = startDaemon(o.streamd, o.dir, cloudName, []byte(cloudConfig), o.durability); err != nil {
		return nil, err
	}
	if s.conn, err = dial(s.cloud.addr); err != nil {
		return nil, err
	}
	return s, nil
}

func dial(addr string) (*grpc.ClientConn, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	return conn, nil
}

// publishRetry is how long a publish is retried while its edge's streamd
// is unavailable (restarting).
const publishRetry = 60 * time.Second

// publish publishes evs, retrying while the edge is unavailable. A retry
// after a crash may publish readings the crashed process had committed:
// they are then in the journal twice, as any client retry would put them.
func publish(ctx context.Context, api streamdv1.EventStreamServiceClient, evs []*streamdv1.Event) error {
	deadline := time.Now().Add(publishRetry)
	for {
		_, err := api.Publish(ctx, &streamdv1.PublishRequest{Events: evs})
		if err == nil || status.Code(err) != codes.Unavailable || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// runSims runs every edge's cars until ctx is done.
func (s *system) runSims(ctx context.Context) error {
	var fns []func(context.Context) error
	for _, e := range s.edges {
		fns = append(fns, e.sim.Run)
	}
	return runAll(ctx, fns...)
}

// runWatch follows the cloud's journal until ctx is done.
func (s *system) runWatch(ctx context.Context) error { return s.watch.run(ctx, s.conn) }

// raiseDetail adds criterion (filters syntax, with a ttl) to the filter of
// every replication of the cloud, as `streamctl filters add --consumer
// replicate-<edge>-all` does, and returns it as added.
func (s *system) raiseDetail(ctx context.Context, criterion string) (*streamdv1.FilterCriterion, error) {
	c, err := filters.Parse(criterion, time.Now())
	if err != nil {
		return nil, err
	}
	api := streamdv1.NewAdminServiceClient(s.conn)
	for _, e := range s.edges {
		if _, err := api.UpdateConsumerFilter(ctx, &streamdv1.UpdateConsumerFilterRequest{
			Consumer: replicationOf(e.name), Add: []*streamdv1.FilterCriterion{c}}); err != nil {
			return nil, fmt.Errorf("telemetry: raise detail in %s: %w", replicationOf(e.name), err)
		}
	}
	return c, nil
}

// replicationOf is the name of the cloud's replication from an edge.
func replicationOf(edge string) string { return "replicate-" + edge + "-all" }

// published is the raw telemetry published so far in every edge.
func (s *system) published() traffic {
	var t traffic
	for _, e := range s.edges {
		t.Events += e.sim.events.Load()
		t.Bytes += e.sim.bytes.Load()
	}
	return t
}

// link is every byte the links to the edges carried so far, both ways.
func (s *system) link() (down, up int64) {
	for _, e := range s.edges {
		to, from := e.link.Bytes() // the edge is the target
		down, up = down+from, up+to
	}
	return down, up
}

// close stops the cloud, the proxies and the edges.
func (s *system) close() error {
	var errs []error
	if s.conn != nil {
		s.conn.Close()
	}
	if s.cloud != nil {
		errs = append(errs, s.cloud.stop())
	}
	for _, e := range s.edges {
		if e.conn != nil {
			e.conn.Close()
		}
		if e.link != nil {
			e.link.Close()
		}
		if e.d != nil {
			errs = append(errs, e.d.stop())
		}
	}
	return errors.Join(errs...)
}

// runAll runs fns concurrently until ctx is done or one of them fails,
// which stops the others; it returns when all have returned, with the
// first error.
func runAll(ctx context.Context, fns ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(fns))
	for _, f := range fns {
		go func() { errs <- f(ctx) }()
	}
	var first error
	for range fns {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

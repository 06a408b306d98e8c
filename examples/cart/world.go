package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/internal/netproxy"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/crdt"
)

// region is one region of the example: a producer whose journal is named
// after the region, served over gRPC on an ephemeral 127.0.0.1 port (the
// replications into it keep their offsets in the journal), and the
// replicated-writes API through which its users edit carts.
type region struct {
	name   string
	prod   *producer.Producer
	carts  *topology.Replicated
	grpc   *grpc.Server
	addr   string
	served chan error
	// counted is what converge has counted of each cart so far.
	counted map[string]*cartCount
}

func openRegion(name string, o options) (_ *region, err error) {
	jopts := journal.Options{Region: name, Durability: o.durability, Logger: o.log}
	r := &region{name: name, served: make(chan error, 1), counted: map[string]*cartCount{}}
	if r.prod, err = producer.Open(filepath.Join(o.dir, name, "journal"), producer.Options{Journal: jopts}); err != nil {
		return nil, fmt.Errorf("cart: region %s: %w", name, err)
	}
	if r.carts, err = topology.NewReplicated(r.prod.Journal(), topology.ReplicatedOptions{Region: name}); err != nil {
		return nil, errors.Join(err, r.prod.Close())
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, errors.Join(fmt.Errorf("cart: region %s: %w", name, err), r.prod.Close())
	}
	r.addr = lis.Addr().String()
	r.grpc = grpc.NewServer(producer.Interceptors(o.log)...)
	streamdv1.RegisterEventStreamServiceServer(r.grpc, r.prod.Server())
	go func() { r.served <- r.grpc.Serve(lis) }()
	return r, nil
}

// close ends the region's streams and closes its server and journal.
// Stop the replications into the region first.
func (r *region) close() error {
	r.prod.Server().Shutdown()
	r.grpc.Stop()
	var errs []error
	if err := <-r.served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		errs = append(errs, fmt.Errorf("cart: region %s: grpc server: %w", r.name, err))
	}
	return errors.Join(append(errs, r.prod.Close())...)
}

// state is a cart as the region sees it now.
func (r *region) state(ctx context.Context, cart string) (*crdt.State, error) {
	s, err := r.carts.State(ctx, cartType, cart)
	if err != nil {
		return nil, fmt.Errorf("cart: %s: %s: %w", r.name, cart, err)
	}
	return s, nil
}

// events returns every event of a cart in the region's journal.
func (r *region) events(cart string) ([]*streamdv1.Event, error) {
	var out []*streamdv1.Event
	for {
		evs, err := r.prod.Journal().ReadEntity(cartType, cart, uint64(len(out))+1, 1000, nil)
		if err != nil {
			return nil, fmt.Errorf("cart: %s: read %s: %w", r.name, cart, err)
		}
		if len(evs) == 0 {
			return out, nil
		}
		out = append(out, evs...)
	}
}

// link is the replication that copies from's journal into to's, dialling
// from through a proxy that a partition cuts.
type link struct {
	from, to *region
	proxy    *netproxy.Proxy
	repl     *consumer.Consumer
}

// world is every region with a replication from each other region, running
// from openWorld to close.
type world struct {
	opts    options
	regions []*region
	links   []*link
	ledger  ledger

	isCut  atomic.Bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// failed receives the error that ended a replication.
	failed chan error
}

// openWorld opens the regions and starts the replications between them.
func openWorld(o options) (_ *world, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	if o.dir == "" {
		return nil, errors.New("cart: no data directory")
	}
	w := &world{opts: o, failed: make(chan error, len(o.regions)*len(o.regions))}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.close())
		}
	}()
	for _, name := range o.regions {
		r, err := openRegion(name, o)
		if err != nil {
			return nil, err
		}
		w.regions = append(w.regions, r)
	}
	for _, to := range w.regions {
		for _, from := range w.regions {
			if from == to {
				continue
			}
			l := &link{from: from, to: to}
			if l.proxy, err = netproxy.Start(from.addr); err != nil {
				return nil, fmt.Errorf("cart: link %s→%s: %w", from.name, to.name, err)
			}
			w.links = append(w.links, l)
			l.repl, err = topology.NewReplication(topology.ReplicationOptions{
				From:    topology.Region{Name: from.name, Addrs: []string{l.proxy.Addr()}},
				Journal: to.prod.Journal(),
				// Reconnect soon after a partition heals: the consumer
				// redials and reopens its stream on this backoff.
				MinBackoff: 10 * time.Millisecond,
				MaxBackoff: 250 * time.Millisecond,
				Logger:     o.log.With("replication", from.name+"→"+to.name),
			})
			if err != nil {
				return nil, err
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	for _, l := range w.links {
		w.wg.Go(func() {
			if err := l.repl.Run(ctx); err != nil {
				w.failed <- fmt.Errorf("cart: replication %s→%s: %w", l.from.name, l.to.name, err)
			}
		})
	}
	return w, nil
}

// close stops the replications, then closes the proxies and the regions.
func (w *world) close() error {
	if w.cancel != nil {
		w.cancel()
		w.wg.Wait()
		w.cancel = nil
	}
	var errs []error
drain:
	for {
		select {
		case err := <-w.failed:
			errs = append(errs, err)
		default:
			break drain
		}
	}
	for _, l := range w.links {
		errs = append(errs, l.proxy.Close())
	}
	w.links = nil
	for _, r := range w.regions {
		errs = append(errs, r.close())
	}
	w.regions = nil
	return errors.Join(errs...)
}

func (w *world) region(name string) *region {
	i := slices.IndexFunc(w.regions, func(r *region) bool { return r.name == name })
	return w.regions[i]
}

// cut closes every link to and from the named region and refuses new
// connections: its users go on editing, but nothing crosses until restore.
func (w *world) cut(name string) {
	for _, l := range w.links {
		if l.from.name == name || l.to.name == name {
			l.proxy.Cut()
		}
	}
	w.isCut.Store(true)
}

// restore lets the links of the named region through again; its
// replications reconnect by themselves.
func (w *world) restore(name string) {
	for _, l := range w.links {
		if l.from.name == name || l.to.name == name {
			l.proxy.Restore()
		}
	}
	w.isCut.Store(false)
}

// edit runs one command on a cart in region r and records what it
// appended once the journal acknowledged it.
func (w *world) edit(ctx context.Context, r *region, cart string, c command) error {
	var decided []crdt.Change
	_, err := r.carts.Update(ctx, cartType, cart, func(s *crdt.State) ([]crdt.Change, error) {
		decided = c.decide(s) // the last decision is the one appended
		return decided, nil
	})
	if err != nil {
		return fmt.Errorf("cart: %s: %s: %s: %w", r.name, cart, c, err)
	}
	w.ledger.ack(r.name, cart, len(decided))
	return nil
}

// snapshot is every cart's state in every region (in the order of
// world.regions) at one moment.
type snapshot map[string][]*crdt.State

func (w *world) snapshot(ctx context.Context, carts []string) (snapshot, error) {
	s := snapshot{}
	for _, c := range carts {
		for _, r := range w.regions {
			st, err := r.state(ctx, c)
			if err != nil {
				return nil, err
			}
			s[c] = append(s[c], st)
		}
	}
	return s, nil
}

// differing counts the carts whose states are not Equal in every region.
func (s snapshot) differing() int {
	n := 0
	for _, states := range s {
		for _, st := range states[1:] {
			if !st.Equal(states[0]) {
				n++
				break
			}
		}
	}
	return n
}

// originCounts counts a cart's events in the region's journal by origin,
// reading only the events appended since the last call. Not safe for
// concurrent use.
func (r *region) originCounts(cart string) (map[string]int, error) {
	c := r.counted[cart]
	if c == nil {
		c = &cartCount{byOrigin: map[string]int{}}
		r.counted[cart] = c
	}
	for {
		evs, err := r.prod.Journal().ReadEntity(cartType, cart, c.events+1, 1000, nil)
		if err != nil {
			return nil, fmt.Errorf("cart: %s: read %s: %w", r.name, cart, err)
		}
		if len(evs) == 0 {
			return c.byOrigin, nil
		}
		for _, e := range evs {
			c.byOrigin[e.Origin]++
		}
		c.events += uint64(len(evs))
	}
}

// cartCount is how many events of a cart a region's journal holds: in all,
// and by origin.
type cartCount struct {
	events   uint64
	byOrigin map[string]int
}

// replicated reports whether every region holds, for every cart, as many
// events of each origin as the origin itself holds: with no more edits,
// the journals then hold the same events.
func (w *world) replicated(carts []string) (bool, error) {
	for _, c := range carts {
		counts := make([]map[string]int, len(w.regions))
		for i, r := range w.regions {
			var err error
			if counts[i], err = r.originCounts(c); err != nil {
				return false, err
			}
		}
		for i, origin := range w.regions {
			for j := range w.regions {
				if counts[j][origin.name] != counts[i][origin.name] {
					return false, nil
				}
			}
		}
	}
	return true, nil
}

// converge waits, up to timeout, until every region holds every event of
// every cart, and returns how long it took.
func (w *world) converge(ctx context.Context, carts []string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	err := w.waitFor(ctx, "the regions to converge", timeout, func() (bool, error) { return w.replicated(carts) })
	return time.Since(start), err
}

// ledger records, per region and cart, how many events the acknowledged
// edits appended: that region's origin seqNrs 1..n of the cart. The zero
// value is empty.
type ledger struct {
	mu       sync.Mutex
	acked    map[string]map[string]uint64
	commands map[string]int // per region: acknowledged edits that changed something
}

func (l *ledger) ack(region, cart string, events int) {
	if events == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.acked == nil {
		l.acked, l.commands = map[string]map[string]uint64{}, map[string]int{}
	}
	if l.acked[region] == nil {
		l.acked[region] = map[string]uint64{}
	}
	l.acked[region][cart] += uint64(events)
	l.commands[region]++
}

// edits returns the number of acknowledged edits of a region.
func (l *ledger) edits(region string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.commands[region]
}

// ackedEvents returns a copy of the acknowledged events per region and cart.
func (l *ledger) ackedEvents() map[string]map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]map[string]uint64{}
	for r, carts := range l.acked {
		out[r] = map[string]uint64{}
		for c, n := range carts {
			out[r][c] = n
		}
	}
	return out
}

package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/streamd/streamd/offsets"
)

// Producer discovery. An entry "dns:///name:port" of Options.Producers
// stands for every address name resolves to: the pods of a headless
// Kubernetes Service, one A or AAAA record each. Each address gets its own
// follower — its own stream, journal id and offset — and the set is kept
// up to date by resolving the name again.
//
// The name is resolved here rather than by gRPC's DNS resolver because that
// resolver feeds one ClientConn that balances calls over the addresses: one
// Subscribe stream would reach one instance of the service, chosen by the
// balancer, where a consumer needs one stream to every instance (each
// journal has its own offsets).

// Resolver looks up the IP addresses of a host name. *net.Resolver is one
// (net.DefaultResolver is the default); tests inject their own, or a
// net.Resolver with PreferGo and Dial pointed at a DNS server of theirs.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Defaults of the discovery options.
const (
	DefaultResolveInterval = 10 * time.Second
	DefaultRemoveAfter     = time.Minute
)

// resolveTimeout bounds one resolution.
const resolveTimeout = 10 * time.Second

// dnsTarget is a "dns:///name:port" entry of Options.Producers.
type dnsTarget struct {
	index int // in Options.Producers
	entry string
	host  string
	port  uint16
}

// parseProducer returns the dnsTarget of entry i of Options.Producers, or
// ok false for one producer's address.
func parseProducer(i int, entry string) (t dnsTarget, ok bool, err error) {
	rest, ok := strings.CutPrefix(entry, "dns:")
	if !ok {
		return dnsTarget{}, false, nil
	}
	name, ok := strings.CutPrefix(rest, "///")
	if !ok {
		if strings.HasPrefix(rest, "//") {
			return dnsTarget{}, false, optionsErrorf("Options.Producers[%d] %q names a DNS server (dns://server/...), which is not supported: write dns:///name:port and set Options.Resolver", i, entry)
		}
		return dnsTarget{}, false, optionsErrorf("Options.Producers[%d] %q: want dns:///name:port", i, entry)
	}
	host, portText, err := net.SplitHostPort(name)
	if err != nil {
		return dnsTarget{}, false, optionsErrorf("Options.Producers[%d] %q: want dns:///name:port (the port is required): %v", i, entry, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	switch {
	case host == "":
		return dnsTarget{}, false, optionsErrorf("Options.Producers[%d] %q has no name (want dns:///name:port)", i, entry)
	case err != nil || port == 0:
		return dnsTarget{}, false, optionsErrorf("Options.Producers[%d] %q: port %q is not a number in 1-65535", i, entry, portText)
	}
	return dnsTarget{index: i, entry: entry, host: host, port: uint16(port)}, true, nil
}

// discovery keeps one follower per address its target resolves to.
type discovery struct {
	c    *Consumer
	t    dnsTarget
	log  *slog.Logger
	soon chan struct{} // a stream to an instance failed: resolve again soon
}

func newDiscovery(c *Consumer, t dnsTarget) *discovery {
	return &discovery{c: c, t: t, log: c.log.With("target", t.entry), soon: make(chan struct{}, 1)}
}

// instance is a discovered address and its followers (Options.Streams).
type instance struct {
	fs      []*follower
	cancel  context.CancelFunc
	done    chan struct{} // closed when every f.run returned
	missing time.Time     // first answer without the address; zero while present
}

// run resolves the target every ResolveInterval (sooner after a stream
// failed), starts a follower for each new address and stops those whose
// address has been missing for RemoveAfter. A follower's fatal error goes
// to fail. It returns when ctx is done and every follower it started has
// stopped.
func (d *discovery) run(ctx context.Context, fail func(error)) {
	instances := map[string]*instance{}
	defer func() {
		for _, in := range instances {
			in.cancel()
		}
		for _, in := range instances {
			d.stop(in)
		}
	}()
	o := d.c.opts
	soonest := min(time.Second, o.ResolveInterval) // after the last resolution
	var last time.Time
	next := time.Now()
	for {
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-d.soon:
			t.Stop()
			if n := last.Add(soonest); n.Before(next) {
				next = n
			}
			continue
		case <-t.C:
		}
		addrs, err := d.resolve(ctx)
		if ctx.Err() != nil {
			return
		}
		last = time.Now()
		next = last.Add(o.ResolveInterval)
		if err != nil {
			// No answer is no news: keep following what was found before.
			d.log.Warn("consumer: resolving the producers failed; following the instances found before", "error", err, "instances", len(instances))
			continue
		}
		d.update(ctx, instances, addrs, last, fail)
	}
}

// update starts and stops followers after an answer.
func (d *discovery) update(ctx context.Context, instances map[string]*instance, addrs []string, now time.Time, fail func(error)) {
	for _, addr := range addrs {
		if in := instances[addr]; in != nil {
			in.missing = time.Time{}
			continue
		}
		d.log.Info("consumer: following a new producer instance", "producer", addr)
		instances[addr] = d.start(ctx, addr, fail)
	}
	for addr, in := range instances {
		switch {
		case slices.Contains(addrs, addr):
		case in.missing.IsZero():
			in.missing = now
		case now.Sub(in.missing) >= d.c.opts.RemoveAfter:
			d.log.Info("consumer: producer instance gone, no longer following it", "producer", addr, "missing_since", in.missing)
			in.cancel()
			d.stop(in)
			delete(instances, addr)
		}
	}
}

func (d *discovery) start(ctx context.Context, addr string, fail func(error)) *instance {
	fctx, cancel := context.WithCancel(ctx)
	in := &instance{cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	for _, r := range streamSlices(d.c.opts.Slices, d.c.opts.Streams) {
		f := newFollower(d.c, addr, r)
		f.index, f.discovered, f.st.Target = d.t.index, true, d.t.entry
		f.failed = d.poke
		in.fs = append(in.fs, f)
		d.c.addFollower(f)
		wg.Go(func() {
			if err := f.run(fctx); err != nil {
				fail(err)
			}
		})
	}
	go func() {
		defer close(in.done)
		wg.Wait()
	}()
	return in
}

// stop waits for a cancelled instance's followers (which save what they
// handled) and forgets them.
func (d *discovery) stop(in *instance) {
	<-in.done
	for _, f := range in.fs {
		d.c.removeFollower(f)
	}
}

// poke asks for a resolution soon.
func (d *discovery) poke() {
	select {
	case d.soon <- struct{}{}:
	default:
	}
}

// resolve returns the sorted "ip:port" addresses of the target. A name that
// does not exist is an answer (no instance: a Service scaled to zero), any
// other failure is not.
func (d *discovery) resolve(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	ips, err := d.c.opts.Resolver.LookupNetIP(ctx, "ip", d.t.host)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("consumer: resolve %s: %w", d.t.host, err)
	}
	addrs := make([]string, 0, len(ips))
	for _, ip := range ips {
		addrs = append(addrs, netip.AddrPortFrom(ip.Unmap(), d.t.port).String())
	}
	slices.Sort(addrs)
	return slices.Compact(addrs), nil
}

// The followers of a Consumer: the static ones, made by New, and those
// discoveries start and stop while Run runs.

func (c *Consumer) addFollower(f *follower) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	c.followers = append(c.followers, f)
	slices.SortStableFunc(c.followers, func(a, b *follower) int {
		if a.index != b.index {
			return a.index - b.index
		}
		if c := strings.Compare(a.addr, b.addr); c != 0 {
			return c
		}
		return int(a.slices.First) - int(b.slices.First)
	})
}

func (c *Consumer) removeFollower(f *follower) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	c.followers = slices.DeleteFunc(c.followers, func(g *follower) bool { return g == f })
}

// following returns the followers now.
func (c *Consumer) following() []*follower {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	return slices.Clone(c.followers)
}

// errJournalFollowed: another follower streams the journal (retried).
var errJournalFollowed = errors.New("consumer: journal followed already")

// claimKey is the key of c.claims: a journal and slice range.
func claimKey(jid []byte, slices offsets.SliceRange) string {
	return string(jid) + "/" + slices.String()
}

// journalClaim records which follower streams a journal's slice range.
type journalClaim struct {
	f    *follower // the holder, or the last one
	open bool
}

// claim makes f the one follower streaming its slices of journal jid, so
// that an instance reached through two addresses (IPv4 and IPv6, a static
// entry and a DNS answer, an address a follower in its grace period still
// reaches) is streamed once. It fails, to be retried, while another
// follower holds them. takeover reports that another follower held them
// since f last did: what f remembers of jid is stale.
func (c *Consumer) claim(f *follower, jid []byte) (takeover bool, err error) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	key := claimKey(jid, f.slices)
	cl := c.claims[key]
	if cl != nil && cl.open && cl.f != f {
		return false, fmt.Errorf("%w: producer %s serves journal %x, which this consumer follows through %s already", errJournalFollowed, f.addr, jid, cl.f.addr)
	}
	c.releaseLocked(f)
	if cl == nil {
		cl = &journalClaim{}
		c.claims[key] = cl
	}
	takeover = cl.f != nil && cl.f != f
	cl.f, cl.open = f, true
	f.claimed = jid
	return takeover, nil
}

// release ends f's claim, after its stream ended and what it handled was
// saved.
func (c *Consumer) release(f *follower) {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	c.releaseLocked(f)
}

func (c *Consumer) releaseLocked(f *follower) {
	if f.claimed == nil {
		return
	}
	if cl := c.claims[claimKey(f.claimed, f.slices)]; cl != nil && cl.f == f {
		cl.open = false
	}
	f.claimed = nil
}

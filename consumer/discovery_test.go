package consumer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// world is a DNS (a Resolver) and a network: "ip:port" addresses routed to
// the fake producers' listeners, so that an instance can leave, come back
// at another address, or have its address taken by another instance.
type world struct {
	mu       sync.Mutex
	answers  map[string][]netip.Addr // by host
	err      error                   // returned by every lookup while set
	flapping bool                    // every other lookup finds nothing
	lookups  int
	routes   map[string]*bufconn.Listener // by "ip:port"
	conns    map[string][]net.Conn        // open connections, by "ip:port"
}

func newWorld() *world {
	return &world{answers: map[string][]netip.Addr{}, routes: map[string]*bufconn.Listener{}, conns: map[string][]net.Conn{}}
}

func (w *world) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lookups++
	if w.err != nil {
		return nil, w.err
	}
	as, ok := w.answers[host]
	if !ok || w.flapping && w.lookups%2 == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return slices.Clone(as), nil
}

func (w *world) lookupCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lookups
}

// answer sets what host resolves to (no ips: the name does not exist).
func (w *world) answer(host string, ips ...string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(ips) == 0 {
		delete(w.answers, host)
		return
	}
	var as []netip.Addr
	for _, ip := range ips {
		as = append(as, netip.MustParseAddr(ip))
	}
	w.answers[host] = as
}

// route makes addr reach lis; nil takes addr down, cutting its
// connections.
func (w *world) route(addr string, lis *bufconn.Listener) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.routes[addr] == lis {
		return
	}
	w.routes[addr] = lis
	for _, c := range w.conns[addr] {
		c.Close()
	}
	delete(w.conns, addr)
}

func (w *world) dialer() grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		w.mu.Lock()
		lis := w.routes[addr]
		w.mu.Unlock()
		if lis == nil {
			return nil, fmt.Errorf("connect %s: connection refused", addr)
		}
		c, err := lis.DialContext(ctx)
		if err != nil {
			return nil, err
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.routes[addr] != lis { // rerouted meanwhile
			c.Close()
			return nil, fmt.Errorf("connect %s: connection refused", addr)
		}
		w.conns[addr] = append(w.conns[addr], c)
		return c, nil
	})
}

const svc = "dns:///svc.test:7070"

// dnsOptions are the harness's options following svc through w.
func dnsOptions(h *harness, w *world) Options {
	o := h.options()
	o.Producers = []string{svc}
	o.DialOptions = []grpc.DialOption{w.dialer()}
	o.Resolver = w
	o.ResolveInterval = 2 * time.Millisecond
	o.RemoveAfter = 20 * time.Millisecond
	return o
}

// addrs lists the addresses in st.
func addrs(st []ProducerStatus) []string {
	var out []string
	for _, s := range st {
		out = append(out, s.Addr)
	}
	return out
}

func following(c *Consumer, want ...string) func() bool {
	return func() bool { return slices.Equal(addrs(c.Status()), want) }
}

// publishAs names entities after their producer, so that the recorder's
// "car/p1-a#1" says where an event came from, and returns those names.
func publishAs(p *fakeProducer, name string, ids ...string) []string {
	var out []string
	for _, id := range ids {
		for _, e := range p.publish(name + "-" + id) {
			out = append(out, fmt.Sprintf("%s/%s#%d", e.EntityType, e.EntityId, e.SeqNr))
		}
	}
	return out
}

// once fails unless every event in want was handled exactly once and
// nothing else was.
func once(t *testing.T, rec *recorder, want []string) {
	t.Helper()
	got := rec.got()
	seen := map[string]int{}
	for _, g := range got {
		seen[g]++
	}
	for _, w := range want {
		if seen[w] != 1 {
			t.Errorf("%s handled %d times", w, seen[w])
		}
		delete(seen, w)
	}
	for g, n := range seen {
		t.Errorf("%s handled %d times, not published", g, n)
	}
}

func TestValidateDiscoveryEntries(t *testing.T) {
	h := newHarness(t, 0)
	for _, tc := range []struct {
		name  string
		entry string
		want  string // "" = valid
	}{
		{"dns", "dns:///svc.ns.svc.cluster.local:7070", ""},
		{"static", "127.0.0.1:7070", ""},
		{"other grpc target", "passthrough:///p1", ""},
		{"no port", "dns:///svc", `Options.Producers[0] "dns:///svc": want dns:///name:port (the port is required)`},
		{"dns server", "dns://10.0.0.10/svc:7070", "names a DNS server"},
		{"two slashes missing", "dns:svc:7070", "want dns:///name:port"},
		{"no name", "dns:///:7070", "has no name"},
		{"port zero", "dns:///svc:0", `port "0" is not a number in 1-65535`},
		{"port name", "dns:///svc:grpc", `port "grpc" is not a number in 1-65535`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := h.options()
			o.Handler = (&recorder{}).handle
			o.Producers = []string{tc.entry}
			err := o.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate = %v, want nil", err)
			case tc.want != "" && (err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate = %v, want ErrInvalid with %q", err, tc.want)
			}
		})
	}
	o := h.options()
	o.Handler = (&recorder{}).handle
	o.Producers = []string{svc}
	o.ResolveInterval = -time.Second
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "Options.ResolveInterval -1s is negative") {
		t.Fatalf("Validate = %v", err)
	}
	o.ResolveInterval, o.RemoveAfter = 0, -time.Second
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "Options.RemoveAfter -1s is negative") {
		t.Fatalf("Validate = %v", err)
	}
}

// Instances are picked up and dropped as the answer changes; one that comes
// back at another address resumes from its stored offset; events published
// while it was gone come once.
func TestDiscoveryFollowsInstancesAsTheyComeAndGo(t *testing.T) {
	h := newHarness(t, 3)
	w := newWorld()
	p1, p2, p3 := h.fake(0), h.fake(1), h.fake(2)
	w.route("127.0.1.1:7070", h.lis["p1"])
	w.route("127.0.1.2:7070", h.lis["p2"])
	w.answer("svc.test", "127.0.1.2", "127.0.1.1")
	var want []string
	pub := func(p *fakeProducer, name string, ids ...string) { want = append(want, publishAs(p, name, ids...)...) }
	pub(p1, "p1", "a", "b")
	pub(p2, "p2", "a")
	pub(p3, "p3", "a")

	rec := &recorder{}
	o := dnsOptions(h, w)
	o.Handler = rec.handle
	c := newConsumer(t, o)
	if st := c.Status(); len(st) != 0 {
		t.Fatalf("Status before Run = %+v, want nothing (no instance is known)", st)
	}
	r := runBG(t, c)
	testwait.For(t, 10*time.Second, "the two instances", following(c, "127.0.1.1:7070", "127.0.1.2:7070"))
	testwait.For(t, 10*time.Second, "3 events", func() bool { return rec.count() == 3 })
	st := c.Status()
	if st[0].Target != svc || string(st[0].JournalID) != string(p1.jid()) || string(st[1].JournalID) != string(p2.jid()) {
		t.Fatalf("Status = %+v", st)
	}

	// A third instance is followed without a restart.
	w.route("127.0.1.3:7070", h.lis["p3"])
	w.answer("svc.test", "127.0.1.1", "127.0.1.2", "127.0.1.3")
	testwait.For(t, 10*time.Second, "p3's event", func() bool { return rec.count() == 4 })

	// p2 leaves; its follower is dropped after RemoveAfter. It gets events
	// meanwhile.
	w.answer("svc.test", "127.0.1.1", "127.0.1.3")
	w.route("127.0.1.2:7070", nil)
	testwait.For(t, 10*time.Second, "p2's follower dropped", following(c, "127.0.1.1:7070", "127.0.1.3:7070"))
	p2Before := h.stored(p2.jid())
	pub(p2, "p2", "a", "b")

	// p2 comes back at a new address and resumes from its offset.
	inits := len(p2.initList())
	w.route("127.0.1.9:7070", h.lis["p2"])
	w.answer("svc.test", "127.0.1.1", "127.0.1.3", "127.0.1.9")
	testwait.For(t, 10*time.Second, "p2's events", func() bool { return rec.count() == 6 })
	resumed := false
	for _, in := range p2.initList()[inits:] {
		if p := in.GetPosition(); p != nil && string(p.GetJournalId()) == string(p2.jid()) && p.GetOffset() == p2Before {
			resumed = true
		}
	}
	if !resumed {
		t.Fatalf("p2 at its new address was not resumed from offset %d: Inits %v", p2Before, p2.initList()[inits:])
	}

	// Every instance gone: the name no longer exists.
	w.answer("svc.test")
	testwait.For(t, 10*time.Second, "no follower", following(c))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	once(t, rec, want)
	if h.stored(p1.jid()) != 2 || h.stored(p2.jid()) != 3 || h.stored(p3.jid()) != 1 {
		t.Fatalf("offsets %d %d %d, want 2 3 1", h.stored(p1.jid()), h.stored(p2.jid()), h.stored(p3.jid()))
	}
}

// An address that another instance (another journal) has taken over is
// followed for that journal, also after a restart of the consumer: for a
// discovered address a new journal is another instance, not a journal
// change. The first instance, back elsewhere, resumes where it was.
func TestDiscoveredAddressTakenByAnotherInstance(t *testing.T) {
	h := newHarness(t, 2)
	w := newWorld()
	p1, p2 := h.fake(0), h.fake(1)
	publishAs(p1, "p1", "a", "b", "c")
	publishAs(p2, "p2", "a")
	w.route("127.0.1.1:7070", h.lis["p1"])
	w.answer("svc.test", "127.0.1.1")
	rec := &recorder{}
	o := dnsOptions(h, w)
	o.Handler = rec.handle
	r := runBG(t, newConsumer(t, o))
	testwait.For(t, 10*time.Second, "p1's events", func() bool { return rec.count() == 3 })
	testwait.For(t, 10*time.Second, "p1's offset", func() bool { return h.stored(p1.jid()) == 3 })

	// While the consumer runs: p2 takes p1's address.
	w.route("127.0.1.1:7070", h.lis["p2"])
	testwait.For(t, 10*time.Second, "p2's event", func() bool { return rec.count() == 4 })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil (another instance at the address is no journal change)", err)
	}

	// While it does not: p1 takes it back, then p2 again, with p1 at a new address.
	publishAs(p1, "p1", "d")
	w.route("127.0.1.1:7070", h.lis["p1"])
	r = runBG(t, newConsumer(t, o))
	testwait.For(t, 10*time.Second, "p1's new event", func() bool { return rec.count() == 5 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	publishAs(p1, "p1", "e")
	publishAs(p2, "p2", "b")
	w.route("127.0.1.1:7070", h.lis["p2"])
	w.route("127.0.1.7:7070", h.lis["p1"])
	w.answer("svc.test", "127.0.1.1", "127.0.1.7")
	c := newConsumer(t, o)
	r = runBG(t, c)
	testwait.For(t, 10*time.Second, "7 events", func() bool { return rec.count() == 7 })
	testwait.For(t, 10*time.Second, "both connected", func() bool {
		st := c.Status()
		return len(st) == 2 && st[0].Connected && st[1].Connected &&
			string(st[0].JournalID) == string(p2.jid()) && string(st[1].JournalID) == string(p1.jid())
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	once(t, rec, []string{"car/p1-a#1", "car/p1-b#1", "car/p1-c#1", "car/p1-d#1", "car/p1-e#1", "car/p2-a#1", "car/p2-b#1"})
	for _, in := range p1.initList() {
		if in.GetPosition() == nil && in.GetStartPolicy() != streamdv1.StartPolicy_START_POLICY_EARLIEST {
			t.Fatalf("p1 Init %v", in)
		}
	}
}

// A flapping answer does not stop and restart a stream: the instance is
// missing from every other answer, never for RemoveAfter.
func TestDiscoveryFlappingAnswerKeepsTheStream(t *testing.T) {
	h := newHarness(t, 1)
	w := newWorld()
	p1 := h.fake(0)
	publishAs(p1, "p1", "a")
	w.route("127.0.1.1:7070", h.lis["p1"])
	w.answer("svc.test", "127.0.1.1")
	w.flapping = true
	rec := &recorder{}
	o := dnsOptions(h, w)
	o.Handler = rec.handle
	o.RemoveAfter = time.Hour
	c := newConsumer(t, o)
	r := runBG(t, c)
	testwait.For(t, 10*time.Second, "the event", func() bool { return rec.count() == 1 })
	from := w.lookupCount()
	testwait.For(t, 10*time.Second, "40 more lookups", func() bool { return w.lookupCount() >= from+40 })
	if n := len(p1.initList()); n != 1 {
		t.Fatalf("%d streams opened, want 1: the flapping answer restarted it", n)
	}
	if st := c.Status(); len(st) != 1 || !st[0].Connected {
		t.Fatalf("Status = %+v", st)
	}
	// A failing resolver is no answer: what was found is still followed.
	w.mu.Lock()
	w.flapping, w.err = false, errors.New("server misbehaving")
	w.mu.Unlock()
	from = w.lookupCount()
	testwait.For(t, 10*time.Second, "failed lookups", func() bool { return w.lookupCount() >= from+10 })
	if st := c.Status(); len(st) != 1 || !st[0].Connected || len(p1.initList()) != 1 {
		t.Fatalf("Status = %+v after failed lookups", st)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// twoAddresses returns a harness whose one fake producer svc.test resolves
// to through two addresses, 127.0.1.1:7070 and [::1]:7070.
func twoAddresses(t *testing.T) (*harness, *world, *fakeProducer) {
	t.Helper()
	h := newHarness(t, 1)
	w := newWorld()
	w.route("127.0.1.1:7070", h.lis["p1"])
	w.route("[::1]:7070", h.lis["p1"])
	w.answer("svc.test", "127.0.1.1", "::1")
	return h, w, h.fake(0)
}

// One instance reached through two addresses (IPv4 and IPv6) is streamed
// once; the second follower waits and says why.
func TestDiscoverySameJournalTwiceIsStreamedOnce(t *testing.T) {
	h, w, p1 := twoAddresses(t)
	rec := &recorder{}
	o := dnsOptions(h, w)
	o.Handler = rec.handle
	c := newConsumer(t, o)
	r := runBG(t, c)
	// Live events while both addresses have been tried: two streams would
	// each hand them to the handler.
	testwait.For(t, 10*time.Second, "both addresses tried", func() bool { return len(p1.initList()) >= 2 })
	var want []string
	for i := range 50 {
		want = append(want, publishAs(p1, "p1", fmt.Sprint(i))...)
		time.Sleep(time.Millisecond) // spread over the second follower's retries, not a synchronisation
	}
	testwait.For(t, 10*time.Second, "50 events", func() bool { return rec.count() >= 50 })
	once(t, rec, want)
	testwait.For(t, 10*time.Second, "the second follower waiting", func() bool {
		for _, s := range c.Status() {
			if s.LastError != nil && strings.Contains(s.LastError.Error(), "which this consumer follows through") {
				return true
			}
		}
		return false
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// ExactlyOnce while events flow and the answer changes: instances leave,
// come back at the same or another address, the address of one is taken by
// the other, the consumer restarts. Every event is applied once.
func TestDiscoveryExactlyOnceWhileInstancesMove(t *testing.T) {
	h := newHarness(t, 2)
	w := newWorld()
	p1, p2 := h.fake(0), h.fake(1)
	for _, p := range []*fakeProducer{p1, p2} {
		p.set(func(p *fakeProducer) { p.batchSize = 7 })
	}
	w.route("127.0.1.1:7070", h.lis["p1"])
	w.route("127.0.1.2:7070", h.lis["p2"])
	w.answer("svc.test", "127.0.1.1", "127.0.1.2")

	// The handler counts applications per journal, entity and seqNr in its
	// own transaction.
	key := func(jid []byte, e *streamdv1.Event) []byte {
		return fmt.Appendf(nil, "test/%x/%s/%d", jid, e.EntityId, e.SeqNr)
	}
	var jmu sync.Mutex
	journals := map[string][]byte{"p1": p1.jid(), "p2": p2.jid()}
	o := dnsOptions(h, w)
	o.TxHandler = func(_ context.Context, txn *badger.Txn, e *streamdv1.Event) error {
		jmu.Lock()
		jid := journals[strings.SplitN(e.EntityId, "-", 2)[0]]
		jmu.Unlock()
		var n uint64
		if item, err := txn.Get(key(jid, e)); err == nil {
			v, _ := item.ValueCopy(nil)
			n = binary.BigEndian.Uint64(v)
		}
		return txn.Set(key(jid, e), binary.BigEndian.AppendUint64(nil, n+1))
	}

	ctx, stopPub := context.WithCancel(context.Background())
	var pubs sync.WaitGroup
	var total [2]int
	for i, p := range []*fakeProducer{p1, p2} {
		pubs.Go(func() {
			for ctx.Err() == nil {
				publishAs(p, fmt.Sprint("p", i+1), fmt.Sprint("e", total[i]%5))
				total[i]++
				time.Sleep(100 * time.Microsecond)
			}
		})
	}
	c := newConsumer(t, o)
	r := runBG(t, c)
	progress := func(what string) {
		t.Helper()
		a, b := h.stored(p1.jid()), h.stored(p2.jid())
		testwait.For(t, 10*time.Second, what, func() bool { return h.stored(p1.jid()) > a+20 && h.stored(p2.jid()) > b+20 })
	}
	progress("both instances consumed")

	steps := []struct {
		what string
		do   func()
	}{
		{"p2 left and came back at its address", func() {
			w.answer("svc.test", "127.0.1.1")
			w.route("127.0.1.2:7070", nil)
			testwait.For(t, 10*time.Second, "p2 dropped", following(c, "127.0.1.1:7070"))
			w.route("127.0.1.2:7070", h.lis["p2"])
			w.answer("svc.test", "127.0.1.1", "127.0.1.2")
		}},
		{"p1 leaves briefly (not dropped)", func() {
			w.route("127.0.1.1:7070", nil)
			w.answer("svc.test", "127.0.1.2")
			w.route("127.0.1.1:7070", h.lis["p1"])
			w.answer("svc.test", "127.0.1.1", "127.0.1.2")
		}},
		{"consumer restart", func() {
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			r = runBG(t, c)
		}},
		{"p2 at a new address", func() {
			w.route("127.0.1.2:7070", nil)
			w.route("127.0.1.3:7070", h.lis["p2"])
			w.answer("svc.test", "127.0.1.1", "127.0.1.3")
		}},
		{"p1 takes p2's old address, p2 moves again", func() {
			w.route("127.0.1.1:7070", nil)
			w.route("127.0.1.2:7070", h.lis["p1"])
			w.route("127.0.1.3:7070", nil)
			w.route("127.0.1.4:7070", h.lis["p2"])
			w.answer("svc.test", "127.0.1.2", "127.0.1.4")
		}},
	}
	for _, s := range steps {
		s.do()
		progress("progress after " + s.what)
	}
	stopPub()
	pubs.Wait()
	testwait.For(t, 10*time.Second, "everything applied", func() bool {
		return h.stored(p1.jid()) == uint64(total[0]) && h.stored(p2.jid()) == uint64(total[1])
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	applied := map[string]uint64{}
	err := h.store.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("test/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			applied[string(it.Item().Key())] = binary.BigEndian.Uint64(v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range []*fakeProducer{p1, p2} {
		for n := range total[i] {
			e := &streamdv1.Event{EntityId: fmt.Sprintf("p%d-e%d", i+1, n%5), SeqNr: uint64(n/5 + 1)}
			k := string(key(p.jid(), e))
			if applied[k] != 1 {
				t.Errorf("%s applied %d times", k, applied[k])
			}
			delete(applied, k)
		}
	}
	if len(applied) != 0 {
		t.Errorf("applied events never published: %v", applied)
	}
	t.Logf("p1 %d events, p2 %d events, each applied once across %d steps", total[0], total[1], len(steps))
}

// dnsServer answers A queries for one name from a list it can change, over
// UDP on 127.0.0.1; any other name does not exist (NXDOMAIN).
type dnsServer struct {
	pc   net.PacketConn
	name dnsmessage.Name
	mu   sync.Mutex
	ips  [][4]byte
	done chan struct{}
}

func startDNSServer(t *testing.T, name string) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &dnsServer{pc: pc, name: dnsmessage.MustNewName(name), done: make(chan struct{})}
	go s.serve()
	t.Cleanup(func() { pc.Close(); <-s.done })
	return s
}

func (s *dnsServer) set(ips ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ips = nil
	for _, ip := range ips {
		s.ips = append(s.ips, netip.MustParseAddr(ip).As4())
	}
}

func (s *dnsServer) serve() {
	defer close(s.done)
	buf := make([]byte, 512)
	for {
		n, from, err := s.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		resp := dnsmessage.Message{
			Header:    dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionAvailable: true},
			Questions: []dnsmessage.Question{q},
		}
		s.mu.Lock()
		switch {
		case !strings.EqualFold(q.Name.String(), s.name.String()) || len(s.ips) == 0:
			resp.RCode = dnsmessage.RCodeNameError
		case q.Type == dnsmessage.TypeA:
			for _, ip := range s.ips {
				resp.Answers = append(resp.Answers, dnsmessage.Resource{
					Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 1},
					Body:   &dnsmessage.AResource{A: ip},
				})
			}
		}
		s.mu.Unlock()
		out, err := resp.Pack()
		if err != nil {
			continue
		}
		s.pc.WriteTo(out, from)
	}
}

// A real DNS exchange: Go's resolver asks a DNS server on 127.0.0.1.
func TestDiscoveryThroughARealDNSServer(t *testing.T) {
	h := newHarness(t, 2)
	w := newWorld() // the network only
	p1, p2 := h.fake(0), h.fake(1)
	publishAs(p1, "p1", "a")
	publishAs(p2, "p2", "a")
	w.route("127.0.1.1:7070", h.lis["p1"])
	w.route("127.0.1.2:7070", h.lis["p2"])
	dns := startDNSServer(t, "svc.test.")
	dns.set("127.0.1.1")
	rec := &recorder{}
	o := dnsOptions(h, w)
	o.Handler = rec.handle
	o.ResolveInterval = 10 * time.Millisecond
	// Go's resolver waits out its 5 s timeout on a query the server never
	// answers (one in flight when the server closes at cleanup) even after
	// the lookup is cancelled; closing the connection with its context ends
	// that wait, so no resolver goroutine outlives the test.
	o.Resolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "udp", dns.pc.LocalAddr().String())
		if err == nil {
			context.AfterFunc(ctx, func() { c.Close() })
		}
		return c, err
	}}
	c := newConsumer(t, o)
	r := runBG(t, c)
	testwait.For(t, 10*time.Second, "p1's event", func() bool { return rec.count() == 1 })
	dns.set("127.0.1.1", "127.0.1.2")
	testwait.For(t, 10*time.Second, "p2's event", func() bool { return rec.count() == 2 })
	testwait.For(t, 10*time.Second, "both followed", following(c, "127.0.1.1:7070", "127.0.1.2:7070"))
	dns.set() // NXDOMAIN: no instance
	testwait.For(t, 10*time.Second, "none followed", following(c))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	once(t, rec, []string{"car/p1-a#1", "car/p2-a#1"})
}

// With Options.Streams, a discovered instance gets one stream per part of
// the slices; an instance reached through two addresses is still streamed
// once per part (the journal is claimed per slice range).
func TestDiscoveryStreamsEachPartOnce(t *testing.T) {
	h, w, p1 := twoAddresses(t)
	rec := &recorder{}
	o := dnsOptions(h, w)
	o.Handler, o.Streams = rec.handle, 2
	c := newConsumer(t, o)
	r := runBG(t, c)
	testwait.For(t, 10*time.Second, "both addresses followed", following(c, "127.0.1.1:7070", "[::1]:7070"))
	var want []string
	for i := range 40 {
		want = append(want, publishAs(p1, "p1", fmt.Sprint(i))...)
	}
	testwait.For(t, 10*time.Second, "40 events", func() bool { return rec.count() >= 40 })
	once(t, rec, want)
	testwait.For(t, 10*time.Second, "two streams open, one per part", func() bool { return p1.openStreams() == 2 })
	parts := map[string]bool{}
	for _, in := range p1.initList() {
		parts[fmt.Sprintf("%d-%d", in.GetSliceRange().GetFirst(), in.GetSliceRange().GetLast())] = true
	}
	if len(parts) != 2 || !parts["0-511"] || !parts["512-1023"] {
		t.Fatalf("Inits over %v, want 0-511 and 512-1023", parts)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

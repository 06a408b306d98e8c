package fault

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamd/streamd/internal/netproxy"
	"github.com/streamd/streamd/internal/streamdtest"
)

// cluster is one streamd, publishers and an exactly-once and an
// at-least-once consumer process, each talking to streamd through its own
// proxy.
type cluster struct {
	t                         *testing.T
	dataDir                   string
	d                         *streamdtest.Daemon
	pubLink, eoLink, aloLink  *netproxy.Proxy
	pubs                      *publishers
	eo, alo                   *consumerProc
	daemonStarts, daemonKills int
}

func newCluster(t *testing.T, po publishOptions) *cluster {
	t.Helper()
	c := &cluster{t: t, dataDir: t.TempDir()}
	c.d = startDaemon(t, c.dataDir)
	c.daemonStarts++
	c.pubLink, c.eoLink, c.aloLink = startProxy(t, c.d.Addr), startProxy(t, c.d.Addr), startProxy(t, c.d.Addr)
	c.eo, c.alo = newConsumer(t, "eo", c.eoLink.Addr()), newConsumer(t, "alo", c.aloLink.Addr())
	c.eo.start()
	c.alo.start()
	c.pubs = startPublishers(t, c.pubLink.Addr(), po)
	t.Cleanup(c.pubs.stop)
	return c
}

func (c *cluster) links() []*netproxy.Proxy { return []*netproxy.Proxy{c.pubLink, c.eoLink, c.aloLink} }

func (c *cluster) consumers() []*consumerProc { return []*consumerProc{c.eo, c.alo} }

// restartDaemon starts the stopped streamd again on the same data directory
// and points the links at it.
func (c *cluster) restartDaemon() {
	c.t.Helper()
	c.d = c.d.Restart(c.t)
	c.daemonStarts++
	for _, l := range c.links() {
		l.SetTarget(c.d.Addr)
	}
}

// recovery is one fault and how long things took to work again after it
// was healed: a publish sent after the heal acknowledged, and each consumer
// having processed that event.
type recovery struct {
	fault         string
	held          time.Duration
	pub, eo, alo  time.Duration
	note          string
	acksAtHealing int
}

const recoveryTimeout = 60 * time.Second

// measure waits for the first publish sent at or after heal to be
// acknowledged and for both consumers to process it.
func (c *cluster) measure(r *recovery, heal time.Time) {
	c.t.Helper()
	r.acksAtHealing = c.pubs.count()
	ev, ackAt, ok := c.pubs.firstAckSentAfter(heal, recoveryTimeout)
	if !ok {
		c.t.Fatalf("%s: no publish acknowledged within %v after the fault was healed; errors %v; streamd stderr:\n%s",
			r.fault, recoveryTimeout, c.pubs.errors(), c.d.Log())
	}
	r.pub = ackAt.Sub(heal)
	for _, cons := range c.consumers() {
		at, ok := cons.waitOffset(ev.Offset, recoveryTimeout)
		if !ok {
			c.t.Fatalf("%s: %s did not process offset %d within %v (at %d, exited %v: %v); its stderr:\n%s",
				r.fault, cons.name(), ev.Offset, recoveryTimeout, cons.offset.get(), cons.proc.exited(), cons.proc.err, cons.proc.stderr.String())
		}
		if cons.kind == "eo" {
			r.eo = at.Sub(heal)
		} else {
			r.alo = at.Sub(heal)
		}
	}
}

// A fault is injected into a running cluster, held, healed, and its
// recovery measured.
type fault struct {
	name string
	run  func(c *cluster, rng *rand.Rand) recovery
}

// holdFor is how long a link fault lasts; in the long run up to 8s, past
// the publishers' 5s timeout.
func holdFor(rng *rand.Rand) time.Duration {
	if longRun() && rng.IntN(4) == 0 {
		return time.Duration(1000+rng.IntN(7000)) * time.Millisecond
	}
	return time.Duration(300+rng.IntN(900)) * time.Millisecond
}

var faults = []fault{
	{"kill -9 streamd", func(c *cluster, rng *rand.Rand) recovery {
		r := recovery{fault: "kill -9 streamd"}
		down := time.Now()
		c.d.Stop(c.t, syscall.SIGKILL, time.Minute)
		c.daemonKills++
		heal := time.Now()
		r.held = heal.Sub(down)
		c.restartDaemon()
		c.measure(&r, heal)
		return r
	}},
	{"SIGTERM streamd", func(c *cluster, rng *rand.Rand) recovery {
		r := recovery{fault: "SIGTERM streamd"}
		down := time.Now()
		err := c.d.Stop(c.t, syscall.SIGTERM, time.Minute)
		if code := c.d.ExitCode(); code != 0 {
			c.t.Errorf("streamd exited with %v (code %d) after SIGTERM under load, want 0; its stderr:\n%s", err, code, c.d.Log())
		}
		heal := time.Now()
		r.held = heal.Sub(down)
		r.note = "exit 0 after " + r.held.Round(time.Millisecond).String()
		c.restartDaemon()
		c.measure(&r, heal)
		return r
	}},
	{"kill -9 eo consumer", func(c *cluster, rng *rand.Rand) recovery {
		return killConsumer(c, c.eo)
	}},
	{"kill -9 alo consumer", func(c *cluster, rng *rand.Rand) recovery {
		return killConsumer(c, c.alo)
	}},
	{"partition all links", func(c *cluster, rng *rand.Rand) recovery {
		return linkFault(c, "partition all links", c.links(), holdFor(rng), (*netproxy.Proxy).Cut, (*netproxy.Proxy).Restore)
	}},
	{"partition consumers", func(c *cluster, rng *rand.Rand) recovery {
		return linkFault(c, "partition consumers", []*netproxy.Proxy{c.eoLink, c.aloLink}, holdFor(rng), (*netproxy.Proxy).Cut, (*netproxy.Proxy).Restore)
	}},
	{"stall all links", func(c *cluster, rng *rand.Rand) recovery {
		return linkFault(c, "stall all links", c.links(), holdFor(rng), (*netproxy.Proxy).Stall, (*netproxy.Proxy).Resume)
	}},
	{"reset all links", func(c *cluster, rng *rand.Rand) recovery {
		return linkFault(c, "reset all links", c.links(), 0, (*netproxy.Proxy).Reset, func(*netproxy.Proxy) {})
	}},
	{"latency 50ms", func(c *cluster, rng *rand.Rand) recovery {
		// Measured while the latency is on: every hop carries it.
		r := recovery{fault: "latency 50ms", note: "measured with the latency on"}
		for _, l := range c.links() {
			l.SetLatency(50 * time.Millisecond)
		}
		held := holdFor(rng)
		time.Sleep(held) // the fault's duration, under load
		r.held = held
		c.measure(&r, time.Now())
		for _, l := range c.links() {
			l.SetLatency(0)
		}
		return r
	}},
}

func killConsumer(c *cluster, cons *consumerProc) recovery {
	r := recovery{fault: "kill -9 " + cons.kind + " consumer"}
	down := time.Now()
	cons.kill9()
	heal := time.Now()
	r.held = heal.Sub(down)
	cons.start()
	c.measure(&r, heal)
	return r
}

// linkFault applies inject to links, holds it, heals, and measures.
func linkFault(c *cluster, name string, links []*netproxy.Proxy, held time.Duration, inject, heal func(*netproxy.Proxy)) recovery {
	r := recovery{fault: name, held: held}
	for _, l := range links {
		inject(l)
	}
	time.Sleep(held) // the fault's duration, under load
	for _, l := range links {
		heal(l)
	}
	c.measure(&r, time.Now())
	return r
}

// schedule is the order of faults: the short run has every fault once plus
// 20 kill -9 and 20 partition cycles; the long run picks at random.
func schedule(rng *rand.Rand) []fault {
	n := *cyclesArg
	if n == 0 && longRun() {
		n = 150
	}
	if n > 0 {
		s := make([]fault, n)
		for i := range s {
			s[i] = faults[rng.IntN(len(faults))]
		}
		return s
	}
	// Every fault once, then 20 kill -9 cycles (streamd and each consumer
	// in turn) and 20 partitions.
	s := slices.Clone(faults)
	byName := func(name string) fault {
		i := slices.IndexFunc(faults, func(f fault) bool { return f.name == name })
		return faults[i]
	}
	kills := []string{"kill -9 streamd", "kill -9 eo consumer", "kill -9 alo consumer"}
	partitions := []string{"partition all links", "partition consumers"}
	for i := range 20 {
		s = append(s, byName(kills[i%len(kills)]), byName(partitions[i%len(partitions)]))
	}
	rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}

func seed(t *testing.T) uint64 {
	s := *seedFlag
	if s == 0 {
		s = uint64(time.Now().UnixNano())
	}
	t.Logf("fault seed %d (rerun with -fault-seed %d)", s, s)
	return s
}

// TestFaults runs publishers, an exactly-once and an at-least-once consumer
// against streamd and, under load, kills streamd (-9 and SIGTERM) and the
// consumers at random points and partitions, stalls, resets and slows the
// links. Afterwards every acknowledged event must be in the journal at the
// offset it was acknowledged with, the exactly-once consumer must have
// applied every journal event once, in order per entity, and the
// at-least-once one every event at least once, in order within each process.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs streamd and consumer processes under faults")
	}
	rng := rand.New(rand.NewPCG(seed(t), 0))
	po := publishOptions{workers: 4, entitiesPerWorker: 8, rate: 1500, payloadSize: 64, timeout: 5 * time.Second}
	if longRun() {
		po.workers, po.rate = 8, 3000
	}
	c := newCluster(t, po)
	c.pubs.waitAcks(t, 200, recoveryTimeout)
	var rows []recovery
	for i, f := range schedule(rng) {
		// A random point under load: after some more acknowledged publishes.
		c.pubs.waitAcks(t, c.pubs.count()+50+rng.IntN(400), recoveryTimeout)
		r := f.run(c, rng)
		t.Logf("fault %3d %-22s held %-8v recovered: publish %-8v eo %-8v alo %-8v %s", i+1, r.fault,
			r.held.Round(time.Millisecond), r.pub.Round(time.Millisecond), r.eo.Round(time.Millisecond), r.alo.Round(time.Millisecond), r.note)
		rows = append(rows, r)
	}
	report := c.finish()
	t.Logf("%d faults, streamd started %d times (%d kill -9); publish errors seen: %v", len(rows), c.daemonStarts, c.daemonKills, c.pubs.errors())
	t.Logf("recovery after each kind of fault (min / median / max):\n%s", recoveryTable(rows))
	t.Logf("checker:\n%s", report)
	if f := report.Failures(); len(f) > 0 {
		t.Errorf("correctness: %s", strings.Join(f, ", "))
	}
}

// finish stops publishing, lets the consumers catch up with the journal's
// last offset, stops everything gracefully and checks the history.
func (c *cluster) finish() *Report {
	c.t.Helper()
	c.pubs.stop()
	// A publish the client gave up on may still be committed by streamd; a
	// graceful restart waits for those, so the last offset is final after.
	if err := c.d.Stop(c.t, syscall.SIGTERM, time.Minute); err != nil {
		c.t.Errorf("streamd after SIGTERM: %v; its stderr:\n%s", err, c.d.Log())
	}
	c.restartDaemon()
	last := journalInfo(c.t, c.d.Addr).LastOffset
	for _, cons := range c.consumers() {
		if _, ok := cons.waitOffset(last, recoveryTimeout); !ok {
			c.t.Fatalf("%s did not catch up with offset %d (at %d); its stderr:\n%s", cons.name(), last, cons.offset.get(), cons.proc.stderr.String())
		}
		cons.stop()
	}
	if err := c.d.Stop(c.t, syscall.SIGTERM, time.Minute); err != nil {
		c.t.Errorf("streamd after SIGTERM: %v; its stderr:\n%s", err, c.d.Log())
	}
	acked, sent := c.pubs.history()
	return Check(History{
		Acked: acked, Sent: sent, Journal: readJournal(c.t, c.dataDir),
		ExactlyOnce: c.eo.deliveries(), AtLeastOnce: c.alo.deliveries(),
	})
}

func recoveryTable(rows []recovery) string {
	byFault := map[string][]recovery{}
	var names []string
	for _, r := range rows {
		if byFault[r.fault] == nil {
			names = append(names, r.fault)
		}
		byFault[r.fault] = append(byFault[r.fault], r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-22s %3s  %-26s %-26s %-26s\n", "fault", "n", "publish", "exactly-once consumer", "at-least-once consumer")
	for _, name := range names {
		rs := byFault[name]
		fmt.Fprintf(&b, "%-22s %3d  %-26s %-26s %-26s\n", name, len(rs),
			spread(rs, func(r recovery) time.Duration { return r.pub }),
			spread(rs, func(r recovery) time.Duration { return r.eo }),
			spread(rs, func(r recovery) time.Duration { return r.alo }))
	}
	return b.String()
}

func spread(rs []recovery, f func(recovery) time.Duration) string {
	ds := make([]time.Duration, len(rs))
	for i, r := range rs {
		ds[i] = f(r)
	}
	slices.Sort(ds)
	ms := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return ms(ds[0]) + " / " + ms(ds[len(ds)/2]) + " / " + ms(ds[len(ds)-1])
}

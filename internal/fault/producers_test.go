package fault

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamd/streamd/internal/netproxy"
	"github.com/streamd/streamd/internal/streamdtest"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// producerProc is one streamd of TestManyProducers, reached through a proxy
// so that it keeps its address across restarts (the consumers' static list).
type producerProc struct {
	name, dir string
	d         *streamdtest.Daemon
	link      *netproxy.Proxy
	pubs      *publishers
}

// restart starts streamd again on its data directory after it exited.
func (p *producerProc) restart(t *testing.T) {
	t.Helper()
	p.d = startDaemon(t, p.dir)
	p.link.SetTarget(p.d.Addr)
}

// finish stops publishing and returns the journal's final last offset. A
// publish the client gave up on may still be committed by streamd after the
// publishers stopped; a graceful restart waits for those, so the last offset
// read after it is final.
func (p *producerProc) finish(t *testing.T) *streamdv1.JournalInfoResponse {
	t.Helper()
	p.pubs.stop()
	if err := p.d.Stop(t, syscall.SIGTERM, time.Minute); err != nil {
		t.Fatalf("streamd %s after SIGTERM: %v", p.name, err)
	}
	p.restart(t)
	return journalInfo(t, p.d.Addr)
}

// Three streamd processes, each with its own journal, publishers writing to
// all three, and two exactly-once consumer processes, each with its own
// store, that follow the three through a static list and split the slices
// (0-511, 512-1023). Mid-stream the consumers are killed (SIGKILL) or stopped
// and started again, one streamd is stopped (SIGTERM) and another killed,
// each started again on its data directory. At the end every event of every
// journal was applied exactly once, by the consumer owning its slice.
func TestManyProducers(t *testing.T) {
	if testing.Short() {
		t.Skip("runs streamd and consumer processes")
	}
	start := time.Now()
	ps := make([]*producerProc, 3)
	var addrs []string
	for i := range ps {
		p := &producerProc{name: fmt.Sprintf("p%d", i+1), dir: t.TempDir()}
		p.d = startDaemon(t, p.dir)
		p.link = startProxy(t, p.d.Addr)
		addrs = append(addrs, p.link.Addr())
		ps[i] = p
	}
	ranges := []string{"0-511", "512-1023"}
	cs := make([]*consumerProc, len(ranges))
	for i, r := range ranges {
		cs[i] = newConsumer(t, "eo", strings.Join(addrs, ","))
		cs[i].slices = r
		cs[i].start()
	}
	for _, p := range ps {
		p.pubs = startPublishers(t, p.link.Addr(), publishOptions{
			workers: 2, entitiesPerWorker: 16, rate: 300, payloadSize: 32, timeout: 5 * time.Second, entityPrefix: p.name + "-",
		})
		t.Cleanup(p.pubs.stop)
	}

	// published waits for n more acknowledgements from each running producer.
	published := func(n int, running ...*producerProc) {
		t.Helper()
		for _, p := range running {
			p.pubs.waitAcks(t, p.pubs.count()+n, recoveryTimeout)
		}
	}
	// consumed waits until c processed n more offsets (over all producers).
	consumed := func(c *consumerProc, n uint64) {
		t.Helper()
		if _, ok := c.waitOffset(c.offset.get()+n, recoveryTimeout); !ok {
			t.Fatalf("%s processed no %d more offsets (at %d, exited %v); its stderr:\n%s", c.name(), n, c.offset.get(), c.proc.exited(), c.proc.stderr.String())
		}
	}
	published(100, ps...)
	consumed(cs[0], 100)
	consumed(cs[1], 100)

	// A consumer killed and started again.
	cs[0].kill9()
	published(100, ps...)
	cs[0].start()
	consumed(cs[0], 300)

	// A producer stopped: the consumers go on with the other two; it is
	// started again on its data directory and followed again.
	if err := ps[1].d.Stop(t, syscall.SIGTERM, time.Minute); err != nil {
		t.Fatalf("streamd %s after SIGTERM: %v", ps[1].name, err)
	}
	published(100, ps[0], ps[2])
	consumed(cs[1], 100)
	ps[1].restart(t)
	published(100, ps...)

	// A consumer stopped cleanly and started again, while another producer
	// is killed and restarted and the other consumer killed.
	cs[1].stop()
	if err := ps[2].d.Stop(t, syscall.SIGKILL, time.Minute); err == nil {
		t.Fatalf("streamd %s exited 0 after SIGKILL", ps[2].name)
	}
	cs[0].kill9()
	ps[2].restart(t)
	published(100, ps...)
	cs[0].start()
	cs[1].start()
	published(200, ps...)

	// The end: every offset of every journal processed by both consumers.
	var total uint64
	for _, p := range ps {
		total += p.finish(t).GetLastOffset()
	}
	for _, c := range cs {
		if _, ok := c.waitOffset(total, recoveryTimeout); !ok {
			t.Fatalf("%s processed %d of %d offsets; its stderr:\n%s", c.name(), c.offset.get(), total, c.proc.stderr.String())
		}
		c.stop()
	}
	for _, p := range ps {
		if err := p.d.Stop(t, syscall.SIGTERM, time.Minute); err != nil {
			t.Fatalf("streamd %s after SIGTERM: %v", p.name, err)
		}
	}

	// Each consumer applied only its slices; together, each journal once.
	byProducer := map[string][]Delivery{}
	for i, c := range cs {
		r, err := offsets.ParseSliceRange(ranges[i])
		if err != nil {
			t.Fatal(err)
		}
		ds := c.deliveries()
		for _, d := range ds {
			if !r.Contains(journal.SliceOf(d.EntityID)) {
				t.Errorf("%s (slices %s) applied %s, of slice %d", c.name(), r, d.Event, journal.SliceOf(d.EntityID))
			}
			name, _, _ := strings.Cut(d.EntityID, "-")
			byProducer[name] = append(byProducer[name], d)
		}
		t.Logf("consumer %s: %d events applied over %d processes", r, len(ds), c.run)
	}
	checkProducers(t, ps, byProducer)
	t.Logf("3 producers (one stopped, one killed), 2 consumers (3 kills, 1 stop): %v", time.Since(start).Round(time.Millisecond))
}

// checkProducers checks each producer's history — acknowledged, sent, in
// its journal — against the events the consumers applied exactly-once
// (byProducer, by producer name, in journal order).
func checkProducers(t *testing.T, ps []*producerProc, byProducer map[string][]Delivery) {
	t.Helper()
	for _, p := range ps {
		acked, sent := p.pubs.history()
		rep := Check(History{Acked: acked, Sent: sent, Journal: readJournal(t, p.dir), ExactlyOnce: byProducer[p.name]})
		if f := rep.Failures(); len(f) > 0 {
			t.Errorf("%s: %s\n%s", p.name, strings.Join(f, ", "), rep)
		}
		if rep.ExactlyOnce.Deliveries == 0 {
			t.Errorf("%s: nothing applied", p.name)
		}
		t.Logf("%s: %d acknowledged, %d in the journal, %d applied; publish errors %v", p.name, rep.Acked, rep.JournalEvents, rep.ExactlyOnce.Deliveries, p.pubs.errors())
	}
}

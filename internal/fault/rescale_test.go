package fault

import (
	"encoding/hex"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamd/streamd/consumer/group"
	"github.com/streamd/streamd/internal/kubetest"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
)

const (
	rescaleGroup = "projection"
	rescaleNS    = "default"
	rescaleLease = 5 * time.Second // a loaded CI machine delays renewals by seconds
)

// memberProc is a groupconsumer process, a member of the consumer group.
type memberProc struct {
	identity string
	storeDir string
	proc     *process
}

// TestRescale runs three streamd processes with publishers, and exactly-once
// consumer processes (internal/fault/groupconsumer), each with its own
// offsets store, that follow the three through a static list and split the
// slices with consumer/group over the Kubernetes API, served by this test
// (kubetest over HTTP on 127.0.0.1). The group goes 1→4→2 members under
// load (joins, and leaves on SIGTERM). On every write to the API no two
// members' Leases claim the same slice; after each step the slices are
// split as Assign says; at the end every event of every journal was
// applied exactly once across all the consumers' stores, and each store
// applied each entity's events in order.
func TestRescale(t *testing.T) {
	if testing.Short() {
		t.Skip("runs streamd and consumer processes")
	}
	begin := time.Now()
	bin := filepath.Join(t.TempDir(), "groupconsumer")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/streamd/streamd/internal/fault/groupconsumer").CombinedOutput(); err != nil {
		t.Fatalf("build groupconsumer: %v\n%s", err, out)
	}

	api := kubetest.New()
	writes := 0
	api.OnWrite(func(s kubetest.State) {
		writes++
		if err := leasesDisjoint(s); err != nil {
			t.Errorf("after API write %d: %v", writes, err)
		}
	})
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)

	ps := make([]*producerProc, 3)
	var addrs []string
	for i := range ps {
		p := &producerProc{name: fmt.Sprintf("p%d", i+1), dir: t.TempDir()}
		p.d = startDaemon(t, p.dir)
		p.link = startProxy(t, p.d.Addr)
		addrs = append(addrs, p.link.Addr())
		ps[i] = p
	}
	for _, p := range ps {
		p.pubs = startPublishers(t, p.link.Addr(), publishOptions{
			workers: 2, entitiesPerWorker: 32, rate: 300, payloadSize: 32, timeout: 5 * time.Second, entityPrefix: p.name + "-",
		})
		t.Cleanup(p.pubs.stop)
	}
	published := func(n int) {
		t.Helper()
		for _, p := range ps {
			p.pubs.waitAcks(t, p.pubs.count()+n, recoveryTimeout)
		}
	}

	members := map[string]*memberProc{}
	var all []*memberProc
	join := func(id string) {
		t.Helper()
		m := &memberProc{identity: id, storeDir: filepath.Join(t.TempDir(), "store")}
		cmd := exec.Command(bin, "-producers", strings.Join(addrs, ","), "-store", m.storeDir, "-api", srv.URL,
			"-namespace", rescaleNS, "-group", rescaleGroup, "-identity", id, "-lease-duration", rescaleLease.String())
		cmd.Env = os.Environ()
		m.proc = start(t, "groupconsumer "+id, cmd, nil, nil)
		members[id] = m
		all = append(all, m)
	}
	leave := func(id string) {
		t.Helper()
		m := members[id]
		delete(members, id)
		if err := m.proc.signal(t, syscall.SIGTERM); err != nil {
			t.Fatalf("%s after SIGTERM: %v; its stderr:\n%s", m.proc.name, err, m.proc.stderr.String())
		}
	}
	settle := func(what string) {
		t.Helper()
		from := time.Now()
		var ids []string
		for id := range members {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		var err error
		if !testwait.Until(recoveryTimeout, func() bool {
			if err = assigned(api.Snapshot(), ids); err == nil {
				return true
			}
			for _, m := range members {
				if m.proc.exited() {
					t.Fatalf("%s exited (%v); its stderr:\n%s", m.proc.name, m.proc.err, m.proc.stderr.String())
				}
			}
			return false
		}) {
			t.Fatalf("%s: not settled within %v: %v", what, recoveryTimeout, err)
		}
		t.Logf("%s: settled in %v", what, time.Since(from).Round(time.Millisecond))
	}

	join("c1")
	settle("1 member")
	published(300)
	join("c2")
	join("c3")
	join("c4")
	settle("4 members")
	published(300)
	leave("c3")
	leave("c4")
	settle("2 members (c3, c4 left)")
	published(300)

	// The end: wait until the offsets the members publish reach the last
	// offset of every journal on every slice, then stop them (they hand off).
	last := map[string]uint64{}
	for _, p := range ps {
		info := p.finish(t)
		last[hex.EncodeToString(info.GetJournalId())] = info.GetLastOffset()
	}
	var err error
	if !testwait.Until(recoveryTimeout, func() bool { err = caughtUp(api.Snapshot(), last); return err == nil }) {
		t.Fatalf("the consumers did not catch up within %v: %v", recoveryTimeout, err)
	}
	leave("c1")
	leave("c2")
	if err := caughtUp(api.Snapshot(), last); err != nil {
		t.Errorf("after the last members left: %v", err)
	}
	if n := len(api.Snapshot().Leases); n != 0 {
		t.Errorf("%d leases left after every member left", n)
	}
	for _, p := range ps {
		if err := p.d.Stop(t, syscall.SIGTERM, time.Minute); err != nil {
			t.Fatalf("streamd %s after SIGTERM: %v", p.name, err)
		}
	}

	byProducer := map[string][]Delivery{}
	for _, m := range all {
		ds := (&consumerProc{t: t, kind: "eo", storeDir: m.storeDir}).deliveries()
		last := map[string]uint64{} // each store applies an entity's events in order
		for _, d := range ds {
			if e := d.EntityType + "/" + d.EntityID; d.SeqNr <= last[e] {
				t.Errorf("member %s applied %s after seqNr %d", m.identity, d.Event, last[e])
			} else {
				last[e] = d.SeqNr
			}
			name, _, _ := strings.Cut(d.EntityID, "-")
			byProducer[name] = append(byProducer[name], d)
		}
		t.Logf("member %s: %d events applied", m.identity, len(ds))
	}
	// The stores' logs have no common clock: merge them in journal order,
	// so that Check finds what is lost or applied twice across them.
	for _, ds := range byProducer {
		sort.SliceStable(ds, func(i, j int) bool { return ds[i].Offset < ds[j].Offset })
	}
	checkProducers(t, ps, byProducer)
	t.Logf("3 producers, consumer group 1→4→2 (lease %v), %d API writes: %v", rescaleLease, writes, time.Since(begin).Round(time.Millisecond))
	if t.Failed() { // what the members had to say: renewals late, hand-offs failed
		for _, m := range all {
			for line := range strings.SplitSeq(m.proc.stderr.String(), "\n") {
				if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") || strings.Contains(line, "expired") {
					t.Logf("%s: %s", m.identity, line)
				}
			}
		}
	}
}

// leasesDisjoint checks that no two Leases of the group show overlapping
// slices.
func leasesDisjoint(s kubetest.State) error {
	type claim struct {
		name string
		r    offsets.SliceRange
	}
	var cs []claim
	for _, l := range s.Leases {
		v := l.Annotations[group.AnnotationSlices]
		if v == "" {
			continue
		}
		r, err := offsets.ParseSliceRange(v)
		if err != nil {
			return fmt.Errorf("lease %s: %v", l.Name, err)
		}
		cs = append(cs, claim{l.Name, r})
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i].r.First < cs[j].r.First })
	for i := 1; i < len(cs); i++ {
		if cs[i].r.Overlaps(cs[i-1].r) {
			return fmt.Errorf("leases %s (%s) and %s (%s) overlap", cs[i-1].name, cs[i-1].r, cs[i].name, cs[i].r)
		}
	}
	return nil
}

// assigned checks that the Leases are those of ids and show, like the
// ConfigMap's owner entries, the ranges group.Assign gives them.
func assigned(s kubetest.State, ids []string) error {
	if len(s.Leases) != len(ids) {
		return fmt.Errorf("%d leases for %d members", len(s.Leases), len(ids))
	}
	if len(s.ConfigMaps) != 1 {
		return fmt.Errorf("%d ConfigMaps", len(s.ConfigMaps))
	}
	data := s.ConfigMaps[0].Data
	for k, id := range ids {
		want := group.Assign(k, len(ids)).String()
		l := s.Leases[k]
		if l.Name != rescaleGroup+"-"+id || l.Annotations[group.AnnotationSlices] != want {
			return fmt.Errorf("lease %s shows %q, want %s of %s", l.Name, l.Annotations[group.AnnotationSlices], want, id)
		}
		if got := data["owner."+id]; got != want+" "+string(l.UID) {
			return fmt.Errorf("ConfigMap: owner.%s is %q, want %q", id, got, want+" "+string(l.UID))
		}
	}
	return nil
}

// caughtUp checks that the offsets in the ConfigMap cover every slice of
// every journal in last at its last offset.
func caughtUp(s kubetest.State, last map[string]uint64) error {
	if len(s.ConfigMaps) != 1 {
		return fmt.Errorf("%d ConfigMaps", len(s.ConfigMaps))
	}
	for jid, off := range last {
		v, ok := s.ConfigMaps[0].Data["journal."+jid]
		if !ok {
			return fmt.Errorf("no offsets for journal %s", jid)
		}
		covered := 0
		for _, frag := range strings.Split(v, ",") {
			rs, ps, _ := strings.Cut(frag, "=")
			r, err := offsets.ParseSliceRange(rs)
			if err != nil {
				return err
			}
			if p, err := strconv.ParseUint(ps, 10, 64); err != nil || p < off {
				return fmt.Errorf("journal %s: slices %s at %s, last offset %d", jid, r, ps, off)
			}
			covered += r.Len()
		}
		if covered != journal.Slices {
			return fmt.Errorf("journal %s: offsets cover %d slices", jid, covered)
		}
	}
	return nil
}

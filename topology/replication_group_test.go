package topology_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/streamd/streamd/consumer/group"
	"github.com/streamd/streamd/internal/kubetest"
	"github.com/streamd/streamd/internal/regiontest"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/topology"
)

// gapCounter is a slog handler that counts the replication's gap warnings
// (an origin gap refused by the journal) and drops everything else.
type gapCounter struct{ n *atomic.Int64 }

func (h gapCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h gapCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "gap in an origin's events") {
		h.n.Add(1)
	}
	return nil
}
func (h gapCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h gapCounter) WithGroup(string) slog.Handler      { return h }

// pod is a streamd of region eu in a StatefulSet: its own journal, and a
// group member that runs the replication from us over the slices it owns.
type pod struct {
	id     string
	dir    string
	region *regiontest.Region
	member *group.Member
	lost   atomic.Bool // its API calls fail (a crash, as the others see it)
	cancel context.CancelFunc
	done   chan error
}

type spread struct {
	t    *testing.T
	api  *kubetest.API
	src  *regiontest.Region
	gaps atomic.Int64
	pods map[string]*pod // the members running
	dirs map[string]string
}

const spreadLease = 3 * time.Second

// start runs pod id (its journal in the same directory as before, if it
// ran before: a pod restarted with its volume).
func (s *spread) start(id string) *pod {
	s.t.Helper()
	if s.dirs[id] == "" {
		s.dirs[id] = s.t.TempDir()
	}
	p := &pod{id: id, dir: s.dirs[id], done: make(chan error, 1)}
	p.region = regiontest.Start(s.t, "eu", p.dir, "127.0.0.1:0")
	cs := s.api.Clientset()
	cs.PrependReactor("*", "*", func(k8stesting.Action) (bool, runtime.Object, error) {
		if p.lost.Load() {
			return true, nil, errors.New("dial tcp: connection refused")
		}
		return false, nil, nil
	})
	log := slog.New(gapCounter{&s.gaps})
	m, err := group.New(group.Options{
		Client: cs, Namespace: "shop", Group: "eu-from-us", Identity: id, LeaseDuration: spreadLease, Logger: quiet,
		Runner: func(ctx context.Context, part offsets.SliceRange) error {
			c, err := topology.NewReplication(topology.ReplicationOptions{
				From: topology.Region{Name: "us", Addrs: []string{s.src.Addr}}, Name: "region-us",
				Slices: part, Streams: 2, Journal: p.region.Producer.Journal(),
				MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: log,
			})
			if err != nil {
				return err
			}
			return c.Run(ctx)
		},
	})
	if err != nil {
		s.t.Fatal(err)
	}
	p.member = m
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- m.Run(ctx) }()
	s.pods[id] = p
	return p
}

// stop ends pod id's member (a graceful leave, unless its API is lost)
// and closes its journal.
func (s *spread) stop(id string) {
	s.t.Helper()
	p := s.pods[id]
	delete(s.pods, id)
	p.cancel()
	if err := <-p.done; err != nil {
		s.t.Errorf("pod %s: %v", id, err)
	}
	p.region.Stop()
}

// settle waits until the running pods (but those that lost the API) each
// own and copy Assign of their rank, the slices of the pods in identity
// order.
func (s *spread) settle(what string) {
	s.t.Helper()
	var live []string
	for id, p := range s.pods {
		if !p.lost.Load() {
			live = append(live, id)
		}
	}
	slices.Sort(live)
	var why string
	if !testwait.Until(60*time.Second, func() bool {
		for k, id := range live {
			want := group.Assign(k, len(live))
			if st := s.pods[id].member.Status(); st.Owned != want || st.Consuming != want || len(st.Members) != len(live) {
				why = fmt.Sprintf("%s owns %s, copies %s, sees members %v; want %s", id, st.Owned, st.Consuming, st.Members, want)
				return false
			}
		}
		return true
	}) {
		s.t.Fatalf("%s: not settled: %s", what, why)
	}
}

// held reads pod id's journal: the source events it holds by (entity,
// origin seqNr), failing on an event twice or an entity's history with a
// hole (origin seqNrs 1, 2, 3… in order, as the journal applies them).
func (s *spread) held(r *regiontest.Region) map[originEvent]bool {
	s.t.Helper()
	held := map[originEvent]bool{}
	last := map[string]uint64{}
	recs, err := r.Producer.Journal().Read(1, 1<<20, nil)
	if err != nil && !errors.Is(err, journal.ErrNotFound) {
		s.t.Fatal(err)
	}
	for _, e := range recs {
		k := originEvent{e.GetOrigin(), e.GetEntityType() + "/" + e.GetEntityId(), e.GetOriginSeqNr()}
		if k.origin != "us" {
			s.t.Fatalf("pod %s: event at offset %d has origin %q", r.Dir, e.GetOffset(), k.origin)
		}
		if held[k] {
			s.t.Fatalf("pod %s holds %v twice", r.Dir, k)
		}
		if k.originSeqNr != last[k.entity]+1 {
			s.t.Fatalf("pod %s: %s origin seqNr %d follows %d: a hole in its history", r.Dir, k.entity, k.originSeqNr, last[k.entity])
		}
		held[k], last[k.entity] = true, k.originSeqNr
	}
	return held
}

// sourceEvents are the source's events with their slices.
func (s *spread) sourceEvents() map[originEvent]uint32 {
	s.t.Helper()
	recs, err := s.src.Producer.Journal().Read(1, 1<<20, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	out := make(map[originEvent]uint32, len(recs))
	for _, e := range recs {
		out[originEvent{"us", e.GetEntityType() + "/" + e.GetEntityId(), e.GetSeqNr()}] = e.GetSlice()
	}
	return out
}

// owned waits until every running pod holds every source event of the
// slices it owns, and returns what each holds.
func (s *spread) owned(what string) {
	s.t.Helper()
	var why string
	if !testwait.Until(60*time.Second, func() bool {
		src := s.sourceEvents()
		for id, p := range s.pods {
			part := p.member.Status().Owned
			held := s.held(p.region)
			for k, slice := range src {
				if part.Contains(slice) && !held[k] {
					why = fmt.Sprintf("pod %s (slices %s) lacks %s#%d (slice %d)", id, part, k.entity, k.originSeqNr, slice)
					return false
				}
			}
		}
		return true
	}) {
		s.t.Fatalf("%s: %s", what, why)
	}
}

// The replication of us into eu is spread over the pods of eu's
// StatefulSet (a consumer/group of Runners, each pod its own journal),
// while us is written: scale 2→3→2, a pod that loses the API (a crash, as
// the others see it) and comes back with its volume. Each pod's journal
// holds whole histories (no entity's events with a hole, none twice, no
// origin gap refused on the way), each pod holds every event of the slices
// it owns, and the pods together hold every event. Most entities have one
// event, so a pod that started taken slices from another pod's offset
// would lack them; the long-lived ones would arrive with gaps.
func TestReplicationSpreadOverGroup(t *testing.T) {
	s := &spread{t: t, api: kubetest.New(), pods: map[string]*pod{}, dirs: map[string]string{}}
	s.src = regiontest.Start(t, "us", t.TempDir(), "127.0.0.1:0")
	defer s.src.Stop()

	published, stopPublishing := publishCarts(t, s.src.Producer, 5*time.Millisecond, 70)
	defer stopPublishing()
	defer func() {
		for id := range s.pods {
			s.stop(id)
		}
	}()
	// flow waits for more events to be published while the pods copy.
	flow := func() {
		t.Helper()
		at := published.Load()
		if !testwait.Until(30*time.Second, func() bool { return published.Load() >= at+400 }) {
			t.Fatal("the publisher is stuck")
		}
	}

	s.start("eu-0")
	s.start("eu-1")
	s.settle("2 pods")
	flow()
	s.owned("2 pods")
	s.start("eu-2")
	s.settle("3 pods")
	flow()
	s.owned("3 pods")
	s.stop("eu-2") // scaled down: its journal stays on its volume
	s.settle("2 pods (eu-2 gone)")
	flow()
	s.owned("2 pods (eu-2 gone)")
	s.pods["eu-1"].lost.Store(true)
	s.settle("eu-1 lost") // eu-0 takes eu-1's slices once its Lease expired
	flow()
	s.stop("eu-1")
	s.start("eu-1") // back with its volume, under the same name
	s.settle("eu-1 back")
	flow()
	stopPublishing()
	s.owned("the end")

	// Every event is somewhere: in the running pods or eu-2's journal.
	union := map[originEvent]bool{}
	for _, p := range s.pods {
		for k := range s.held(p.region) {
			union[k] = true
		}
	}
	gone := regiontest.Start(t, "eu", s.dirs["eu-2"], "127.0.0.1:0")
	defer gone.Stop()
	for k := range s.held(gone) {
		union[k] = true
	}
	src := s.sourceEvents()
	if int64(len(src)) != published.Load() {
		t.Fatalf("us holds %d events, %d published", len(src), published.Load())
	}
	for k := range src {
		if !union[k] {
			t.Fatalf("no pod holds %s#%d", k.entity, k.originSeqNr)
		}
	}
	if n := s.gaps.Load(); n > 0 {
		t.Errorf("the pods' journals refused %d events for a gap in their origin's sequence (a pod started slices without their history)", n)
	}
	// An exactly-once consumer of the three journals applies each source
	// event once, though they hold copies of many.
	applied, copies := regiontest.ApplyByOrigin(t, s.pods["eu-0"].region.Addr, s.pods["eu-1"].region.Addr, gone.Addr)
	if copies <= len(src) {
		t.Fatalf("the pods' journals hold %d events, %d published: no copy to dedupe", copies, len(src))
	}
	for k := range src {
		if n := applied[regiontest.OriginEvent{Origin: k.origin, Entity: k.entity, SeqNr: k.originSeqNr}]; n != 1 {
			t.Fatalf("%s#%d applied %d times", k.entity, k.originSeqNr, n)
		}
	}
	if len(applied) != len(src) {
		t.Fatalf("%d events applied, %d published", len(applied), len(src))
	}
	t.Logf("%d events published, copied by 3 pods over 2→3→2 pods, a lost pod and its return (%d copies in all); an exactly-once consumer of the three journals applied each once", len(src), copies)
}

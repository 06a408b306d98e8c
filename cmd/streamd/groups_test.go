package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamd/streamd/admin"

	"github.com/streamd/streamd/consumer/group"
	"github.com/streamd/streamd/internal/kubetest"
	"github.com/streamd/streamd/internal/regiontest"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
)

// entityHistory is an entity's events in a journal: its slice there and
// the origin seqNrs in the order the journal holds them.
type entityHistory struct {
	slice   uint32
	seqNrs  []uint64
	origins []string
}

// histories reads every event d's journal holds, by entity.
func histories(t *testing.T, d *daemon) map[string]*entityHistory {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := streamdv1.NewEventStreamServiceClient(d.conn).Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
		StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST, ConsumerName: "test-histories"}}}); err != nil {
		t.Fatal(err)
	}
	out := map[string]*entityHistory{}
	for last, at := uint64(0), uint64(0); last == 0 || at < last; {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if h := m.GetHello(); h != nil {
			if last = h.GetLastOffset(); last == 0 {
				break
			}
		}
		at = max(at, m.GetProgress().GetOffset())
		for _, e := range m.GetEvents().GetEvents() {
			seq, origin := e.GetOriginSeqNr(), e.GetOrigin()
			if origin == "" { // at the source
				seq, origin = e.GetSeqNr(), "us"
			}
			h := out[e.GetEntityId()]
			if h == nil {
				h = &entityHistory{slice: e.GetSlice()}
				out[e.GetEntityId()] = h
			}
			h.seqNrs, h.origins = append(h.seqNrs, seq), append(h.origins, origin)
			at = e.GetOffset()
		}
	}
	return out
}

// The pods of region eu (real streamd processes, one journal each) share
// the copying of us through the group of their replicate: entry, over the
// Kubernetes API (kubetest over HTTP, --kube-api), while us is written:
// two pods, one killed (SIGKILL) whose slices the other takes, the killed
// one back on its volume. Then each pod holds the whole history of every
// entity of the slices it owns, and of every other entity it holds a
// prefix: never a hole.
func TestReplicationGroupFromConfig(t *testing.T) {
	us := startDaemon(t, t.TempDir(), "--region", "us")
	api := kubetest.New()
	srv := httptest.NewServer(api)
	defer srv.Close()

	var published atomic.Int64
	stop := make(chan struct{})
	var pub sync.WaitGroup
	pub.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond) // a pace, not a synchronisation
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			// Two events of long-lived entities, two of entities of one event.
			req := &streamdv1.PublishRequest{}
			for _, id := range []string{fmt.Sprintf("c%d", (2*i)%16), fmt.Sprintf("c%d", (2*i+1)%16), fmt.Sprintf("u%d", 2*i), fmt.Sprintf("u%d", 2*i+1)} {
				req.Events = append(req.Events, &streamdv1.Event{EntityType: "cart", EntityId: id, EventType: "Added"})
			}
			if _, err := streamdv1.NewEventStreamServiceClient(us.conn).Publish(context.Background(), req); err != nil {
				t.Error(err)
				return
			}
			published.Add(4)
		}
	})
	stopPublishing := sync.OnceFunc(func() { close(stop); pub.Wait() })
	defer stopPublishing()
	flow := func() {
		t.Helper()
		at := published.Load()
		if !testwait.Until(30*time.Second, func() bool { return published.Load() >= at+200 }) {
			t.Fatal("the publisher is stuck")
		}
	}

	cfg := filepath.Join(t.TempDir(), "eu.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "replicate:\n  - from: us\n    addrs: [%q]\n    streams: 2\n    group: eu-from-us\n", us.Addr), 0o600); err != nil {
		t.Fatal(err)
	}
	dirs := map[string]string{"eu-0": t.TempDir(), "eu-1": t.TempDir()}
	pods := map[string]*daemon{}
	start := func(id string) {
		pods[id] = startDaemon(t, dirs[id], "--region", "eu", "--config", cfg, "--pod-name", id, "--pod-namespace", "shop",
			"--kube-api", srv.URL, "--group-lease-duration", "3s")
	}
	// settle waits until the Leases of the group are those of ids, each
	// showing the slices Assign gives it; it returns them by pod.
	settle := func(what string, ids ...string) map[string]offsets.SliceRange {
		t.Helper()
		var got map[string]offsets.SliceRange
		if !testwait.Until(60*time.Second, func() bool {
			got = map[string]offsets.SliceRange{}
			for _, l := range api.Snapshot().Leases {
				r, err := offsets.ParseSliceRange(l.Annotations[group.AnnotationSlices])
				if err != nil || l.Spec.HolderIdentity == nil {
					return false
				}
				got[*l.Spec.HolderIdentity] = r
			}
			if len(got) != len(ids) {
				return false
			}
			for k, id := range ids {
				if got[id] != group.Assign(k, len(ids)) {
					return false
				}
			}
			return true
		}) {
			t.Fatalf("%s: the group's Leases show %v, want %v split by group.Assign", what, got, ids)
		}
		return got
	}

	// listed waits until each pod's AdminService lists its member of the
	// group running over the slices its Lease shows, and its metrics
	// show it running.
	listed := func(what string, owned map[string]offsets.SliceRange) {
		t.Helper()
		for id, d := range pods {
			var got *streamdv1.ConsumerStatus
			if !testwait.Until(60*time.Second, func() bool {
				resp, err := streamdv1.NewAdminServiceClient(d.conn).ListConsumers(context.Background(), &streamdv1.ListConsumersRequest{})
				if err != nil || len(resp.GetConsumers()) != 1 {
					return false
				}
				got = resp.GetConsumers()[0]
				r, err := offsets.SliceRangeFromProto(got.GetSlices())
				mfs := scrape(t, d.MetricsAddr)
				return err == nil && got.GetGroup() == "eu-from-us" && got.GetRunning() && r == owned[id] &&
					mfs["streamd_consumer_running"] != nil && value(mfs["streamd_consumer_running"]) >= 1
			}) {
				t.Fatalf("%s: pod %s lists %v, want its member of eu-from-us running over %s", what, id, got, owned[id])
			}
		}
	}

	start("eu-0")
	start("eu-1")
	listed("2 pods", settle("2 pods", "eu-0", "eu-1"))
	flow()
	pods["eu-1"].Kill()
	delete(pods, "eu-1")
	listed("eu-1 killed", settle("eu-1 killed", "eu-0"))
	flow()
	start("eu-1")
	owned := settle("eu-1 back", "eu-0", "eu-1")
	listed("eu-1 back", owned)
	flow()
	stopPublishing()

	src := histories(t, us)
	var total int
	for _, h := range src {
		total += len(h.seqNrs)
	}
	if int64(total) != published.Load() {
		t.Fatalf("us holds %d events, %d published", total, published.Load())
	}
	for id, d := range pods {
		var why string
		if !testwait.Until(60*time.Second, func() bool {
			held := histories(t, d)
			for e, src := range src {
				if h := held[e]; owned[id].Contains(src.slice) && (h == nil || len(h.seqNrs) != len(src.seqNrs)) {
					why = fmt.Sprintf("pod %s (slices %s) lacks events of %s (slice %d): it holds %v of %d", id, owned[id], e, src.slice, h, len(src.seqNrs))
					return false
				}
			}
			for e, h := range held {
				for k, seq := range h.seqNrs {
					if seq != uint64(k+1) || h.origins[k] != "us" {
						t.Fatalf("pod %s: %s holds %v (origins %v): not a whole history from us", id, e, h.seqNrs, h.origins)
					}
				}
			}
			return true
		}) {
			t.Fatal(why)
		}
	}
	// An exactly-once consumer of both pods applies each source event once,
	// though eu-0 copied eu-1's slices while eu-1 was down.
	var addrs []string
	for _, d := range pods {
		addrs = append(addrs, d.Addr)
	}
	applied, copies := regiontest.ApplyByOrigin(t, addrs...)
	if copies <= total {
		t.Fatalf("the pods hold %d events, us %d: no copy to dedupe", copies, total)
	}
	for e, h := range src {
		for _, seq := range h.seqNrs {
			if n := applied[regiontest.OriginEvent{Origin: "us", Entity: "cart/" + e, SeqNr: seq}]; n != 1 {
				t.Fatalf("cart/%s#%d applied %d times by an exactly-once consumer of both pods", e, seq, n)
			}
		}
	}
	if len(applied) != total {
		t.Fatalf("%d events applied, us holds %d", len(applied), total)
	}
	t.Logf("%d events over %d entities, %d copies in the pods; pods %v own %v", total, len(src), copies, slices.Sorted(maps.Keys(pods)), owned)
}

// grouped is one pod of region eu running its member of group eu-from-us
// in the test process, as startConsumers does.
type grouped struct {
	region *regiontest.Region
	reg    *admin.Registry
	cancel context.CancelFunc
	done   chan struct{}
}

// startGrouped runs pod id's member with run wrapped by wrap (nil: the
// replication itself) and join by gate (nil: none).
func startGrouped(t *testing.T, api *kubetest.API, src string, id string, wrap func(run func(context.Context, offsets.SliceRange) error) func(context.Context, offsets.SliceRange) error, gate func()) *grouped {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	r := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	g := groupedReplication{group: "eu-from-us", opts: topology.ReplicationOptions{From: topology.Region{Name: "us", Addrs: []string{src}}, Name: "replicate-us", Streams: 2}}
	p := pod{name: id, namespace: "shop", leaseDuration: 3 * time.Second, client: api.Clientset()}
	reg := admin.NewRegistry(log)
	c, err := g.replication(log, r.Producer.Journal(), offsets.SliceRange{})
	if err != nil {
		t.Fatal(err)
	}
	m, err := reg.AddMember(c, g.group)
	if err != nil {
		t.Fatal(err)
	}
	run := g.runner(log, r.Producer.Journal(), m, nil)
	if wrap != nil {
		run = wrap(run)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gp := &grouped{region: r, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(gp.done)
		runMember(ctx, log, g.group, func() (*group.Member, error) {
			if gate != nil {
				gate()
			}
			return p.newMember(log, g, run)
		}, m.Stopped, [2]time.Duration{10 * time.Millisecond, 100 * time.Millisecond})
	}()
	t.Cleanup(gp.stop)
	return gp
}

func (gp *grouped) stop() {
	gp.cancel()
	<-gp.done
	gp.region.Stop()
}

func (gp *grouped) state(t *testing.T) admin.State {
	t.Helper()
	st, err := gp.reg.States("replicate-us")
	if err != nil || len(st) != 1 {
		t.Fatalf("States(replicate-us) = %v, %v", st, err)
	}
	return st[0]
}

// A pod's member of a group whose replication fails rejoins after its
// backoff and copies again; its state shows the stop meanwhile, and the
// slices it copies as they move when a second pod joins.
func TestGroupedReplicationRejoinsAndShows(t *testing.T) {
	us := regiontest.Start(t, "us", t.TempDir(), "127.0.0.1:0")
	defer us.Stop()
	const n = 40
	for i := range n {
		if _, err := us.Producer.Publish(context.Background(), &streamdv1.Event{EntityType: "cart", EntityId: fmt.Sprint("c", i), EventType: "Added"}); err != nil {
			t.Fatal(err)
		}
	}
	api := kubetest.New()
	var runs atomic.Int64
	failOnce := func(run func(context.Context, offsets.SliceRange) error) func(context.Context, offsets.SliceRange) error {
		return func(ctx context.Context, part offsets.SliceRange) error {
			if runs.Add(1) == 1 {
				return errors.New("injected failure")
			}
			return run(ctx, part)
		}
	}
	var joins atomic.Int64
	release := make(chan struct{})
	eu0 := startGrouped(t, api, us.Addr, "eu-0", failOnce, func() {
		if joins.Add(1) == 2 {
			<-release
		}
	})
	testwait.For(t, 30*time.Second, "the stopped member to show its error and its rejoin", func() bool {
		st := eu0.state(t)
		return joins.Load() == 2 && !st.Running && st.Err != nil &&
			strings.Contains(st.Err.Error(), "injected failure") && strings.Contains(st.Err.Error(), "rejoins group eu-from-us")
	})
	if st := eu0.state(t); st.Group != "eu-from-us" || st.Slices.Len() != 0 {
		t.Fatalf("stopped: group %q, slices %s; want eu-from-us and none", st.Group, st.Slices)
	}
	close(release)
	testwait.For(t, 30*time.Second, "the rejoined member to copy every event", func() bool {
		st := eu0.state(t)
		return st.Running && st.Err == nil && st.Slices == offsets.AllSlices && eu0.region.Producer.Journal().LastOffset() == n
	})

	eu1 := startGrouped(t, api, us.Addr, "eu-1", nil, nil)
	testwait.For(t, 60*time.Second, "the slices to be split between eu-0 and eu-1", func() bool {
		s0, s1 := eu0.state(t), eu1.state(t)
		return s0.Running && s0.Slices == group.Assign(0, 2) && s1.Running && s1.Slices == group.Assign(1, 2)
	})
}

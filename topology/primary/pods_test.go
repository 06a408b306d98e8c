package primary_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/primary"
)

// podRegion is region us spread over pods that share its entities: each
// pod its own journal, Primary and PrimaryService on 127.0.0.1, with
// Options.Pods the others' PrimaryService over TCP. Region eu is known but
// never reached.
type podRegion struct {
	t        *testing.T
	journals []*journal.Journal
	prims    []*primary.Primary
	servers  []*grpc.Server
	clients  []namedClient // of each pod
	podCalls atomic.Int64  // calls of any pod's Options.Pods
	obs      conflictObserver
}

// namedClient is a pod's PrimaryService client that names the pod.
type namedClient struct {
	streamdv1.PrimaryServiceClient
	name string
}

func (c namedClient) String() string { return c.name }

func newPodRegion(t *testing.T, progress ...primary.ProgressFunc) *podRegion {
	r := &podRegion{t: t, obs: make(conflictObserver, 10)}
	var listeners []net.Listener
	for i := range progress {
		j, err := journal.Open(t.TempDir(), journal.Options{Region: "us"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { j.Close() })
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		r.journals, listeners = append(r.journals, j), append(listeners, lis)
		r.clients = append(r.clients, namedClient{streamdv1.NewPrimaryServiceClient(cc), fmt.Sprintf("us-%d", i)})
	}
	for i := range progress {
		p, err := primary.New(primary.Options{
			Journal: r.journals[i], Config: testConfig, CallTimeout: 2 * time.Second, Progress: progress[i], Observer: r.obs,
			Regions: []topology.Region{{Name: "eu", Addrs: []string{"127.0.0.1:1"}}},
			Pods: func() ([]streamdv1.PrimaryServiceClient, error) {
				r.podCalls.Add(1)
				var others []streamdv1.PrimaryServiceClient
				for k, c := range r.clients {
					if k != i {
						others = append(others, c)
					}
				}
				return others, nil
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		g := grpc.NewServer()
		streamdv1.RegisterPrimaryServiceServer(g, p.Server())
		go g.Serve(listeners[i])
		t.Cleanup(func() { g.Stop(); p.Close() })
		r.prims, r.servers = append(r.prims, p), append(r.servers, g)
	}
	return r
}

// append appends events to pod i's journal as they are (origins kept).
func (r *podRegion) append(i int, evs ...*streamdv1.Event) []journal.Appended {
	r.t.Helper()
	a, err := r.journals[i].Append(context.Background(), evs...)
	if err != nil {
		r.t.Fatal(err)
	}
	return a
}

// euEvent is eu's event of an order (pinned to eu), version v, written at.
func euEvent(id string, v uint64, at time.Time) *streamdv1.Event {
	return &streamdv1.Event{
		EntityType: "order", EntityId: id, EventType: "Changed", Payload: []byte(fmt.Sprintf("%s-%d", id, v)),
		Origin: "eu", OriginSeqNr: v, OriginTimestampUnixNano: at.UnixNano(), VersionVector: map[string]uint64{"eu": v},
	}
}

// Two pods of us each copy their slices of eu's two journals: the
// region's progress is, per journal, the least any pod applied and the
// most any knows, and its last event of eu the latest of either pod's;
// the failover point is that. A pod that cannot be asked fails the
// region's answer, naming it.
func TestPodsProgress(t *testing.T) {
	r := newPodRegion(t,
		journals(primary.JournalProgress{JournalID: []byte("eu-0"), Applied: 10, Known: 12}, primary.JournalProgress{JournalID: []byte("eu-1"), Applied: 5, Known: 5}),
		journals(primary.JournalProgress{JournalID: []byte("eu-1"), Applied: 8, Known: 15}, primary.JournalProgress{JournalID: []byte("eu-2"), Applied: 4, Known: 4}),
	)
	ctx := context.Background()
	t1, t2 := time.Now().Add(-time.Hour), time.Now().Add(-time.Minute)
	r.append(0, euEvent("o1", 1, t1))
	r.append(1, euEvent("o2", 1, t2))

	sp, err := r.prims[0].Progress(ctx, "eu")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := describeJournals(sp.Journals), "[eu-0 10/12 eu-1 5/15 eu-2 4/4]"; got != want || !sp.Replicating || sp.LastApplied != t2.UnixNano() {
		t.Fatalf("region's progress %s, last applied %d, replicating %v; want %s, %d (pod 1's), true", got, sp.LastApplied, sp.Replicating, want, t2.UnixNano())
	}
	resp, err := r.clients[1].Progress(ctx, &streamdv1.ProgressRequest{Source: "eu"})
	if err != nil || resp.AppliedOffset != 19 || resp.KnownOffset != 31 || len(resp.Journals) != 3 || resp.LastAppliedUnixNano != t2.UnixNano() {
		t.Fatalf("region's progress over gRPC, at pod 1: %v, %v; want the same, sums 19/31", resp, err)
	}
	resp, err = r.clients[0].Progress(ctx, &streamdv1.ProgressRequest{Source: "eu", Pod: true})
	if err != nil || resp.AppliedOffset != 15 || resp.KnownOffset != 17 || len(resp.Journals) != 2 || resp.LastAppliedUnixNano != t1.UnixNano() {
		t.Fatalf("pod 0's own progress: %v, %v; want its journals, sums 15/17, its last event", resp, err)
	}

	plan, err := r.prims[0].Failover(ctx, "eu", "us", true)
	if err != nil {
		t.Fatal(err)
	}
	if plan.FromApplied != t2.UnixNano() || plan.AtRisk != 12 || describeJournals(plan.Progress[0].Journals) != "[eu-0 10/12 eu-1 5/15 eu-2 4/4]" {
		t.Fatalf("failover: point %d, at risk %d, progress %+v; want pod 1's last event (%d), 2+10 at risk, the region's journals", plan.FromApplied, plan.AtRisk, plan.Progress, t2.UnixNano())
	}
	evs, err := r.journals[0].ReadEntity(primary.FailoverEntityType, primary.FailoverEntityID, 1, 10, nil)
	if err != nil || len(evs) != 1 {
		t.Fatalf("failover records: %v, %v", evs, err)
	}
	rec := &streamdv1.FailoverRecord{}
	if err := proto.Unmarshal(evs[0].Payload, rec); err != nil || rec.Held["eu"] != t2.UnixNano() {
		t.Fatalf("the record's failover point: %v, %v; want %d (the latest of either pod)", rec, err, t2.UnixNano())
	}

	r.servers[1].Stop()
	_, err = r.prims[0].Progress(ctx, "eu")
	if !errors.Is(err, primary.ErrUnavailable) || !strings.Contains(err.Error(), "pod us-1") {
		t.Fatalf("progress with pod 1 down: %v; want ErrUnavailable naming pod us-1", err)
	}
	if _, err := r.prims[0].Failover(ctx, "eu", "us", false); !errors.Is(err, primary.ErrUnavailable) || !strings.Contains(err.Error(), "pod us-1") {
		t.Fatalf("failover dry run with pod 1 down: %v; want ErrUnavailable naming pod us-1", err)
	}
	_, err = r.clients[0].Progress(ctx, &streamdv1.ProgressRequest{Source: "eu"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "pod us-1") {
		t.Fatalf("progress over gRPC with pod 1 down: %v; want Unavailable naming pod us-1", err)
	}
	if _, err := r.clients[0].Progress(ctx, &streamdv1.ProgressRequest{Source: "eu", Pod: true}); err != nil {
		t.Fatalf("pod 0's own progress with pod 1 down: %v", err)
	}
}

// Both pods hold eu's fenced event of o1 (its slice moved from one to the
// other), and each one more of its own: the region's conflicts list each
// event once, a pod's (ConflictsRequest.pod) its own; WatchConflicts
// watches its own journal and does not ask the other pods.
func TestPodsConflicts(t *testing.T) {
	r := newPodRegion(t, nil, nil)
	ctx := context.Background()
	cutoff := time.Now().Add(-time.Hour)
	held := euEvent("o1", 1, cutoff)
	record, err := proto.Marshal(&streamdv1.FailoverRecord{From: "eu", To: "us", Held: map[string]int64{"eu": cutoff.UnixNano()}})
	if err != nil {
		t.Fatal(err)
	}
	r.append(0, &streamdv1.Event{EntityType: primary.FailoverEntityType, EntityId: primary.FailoverEntityID, EventType: primary.FailoverEventType, Payload: record})
	recs, err := r.journals[0].ReadEntity(primary.FailoverEntityType, primary.FailoverEntityID, 1, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	copied := proto.CloneOf(recs[0]) // the record, copied into every pod's journal
	copied.Offset, copied.SeqNr, copied.TimestampUnixNano, copied.Slice = 0, 0, 0, 0
	r.append(1, copied)
	late := time.Now().Add(-30 * time.Minute)
	for i := range 2 {
		r.append(i, proto.CloneOf(held), euEvent("o1", 2, late))
	}
	r.append(0, euEvent("o3", 1, late.Add(time.Second)))
	r.append(1, euEvent("o2", 1, late.Add(2*time.Second)))

	want := []string{"eu>us:o1:o1-2", "eu>us:o3:o3-1", "eu>us:o2:o2-1"} // by offset, then origin time
	for i, p := range r.prims {
		cs, err := p.Conflicts(ctx)
		if err != nil || !slices.Equal(failoverPayloads(cs), want) {
			t.Fatalf("region's conflicts at pod %d: %v, %v; want %v", i, failoverPayloads(cs), err, want)
		}
	}
	resp, err := r.clients[1].Conflicts(ctx, &streamdv1.ConflictsRequest{Pod: true})
	if err != nil || len(resp.Conflicts) != 2 || resp.Conflicts[1].Event.EntityId != "o2" {
		t.Fatalf("pod 1's own conflicts: %v, %v; want o1 and o2", resp, err)
	}
	resp, err = r.clients[1].Conflicts(ctx, &streamdv1.ConflictsRequest{})
	if err != nil || len(resp.Conflicts) != 3 {
		t.Fatalf("region's conflicts over gRPC: %v, %v; want 3", resp, err)
	}

	calls := r.podCalls.Load()
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.prims[0].WatchConflicts(wctx) }()
	awaitObserved(t, r.obs, 2) // pod 0's own: o1 and o3
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("WatchConflicts: %v", err)
	}
	if n := r.podCalls.Load() - calls; n != 0 {
		t.Fatalf("WatchConflicts asked the other pods %d times; it watches its own journal", n)
	}

	r.servers[0].Stop()
	if _, err := r.prims[1].Conflicts(ctx); !errors.Is(err, primary.ErrUnavailable) || !strings.Contains(err.Error(), "pod us-0") {
		t.Fatalf("conflicts with pod 0 down: %v; want ErrUnavailable naming pod us-0", err)
	}
}

// awaitObserved waits for n conflicts of eu's orders reported to obs, and
// checks that no other comes.
func awaitObserved(t *testing.T, obs conflictObserver, n int) {
	t.Helper()
	for range n {
		select {
		case got := <-obs:
			if got != "eu order" {
				t.Fatalf("observer told of conflict %q, want \"eu order\"", got)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the watcher did not report the conflicts within 20s")
		}
	}
	select {
	case got := <-obs:
		t.Fatalf("one more conflict was reported: %q", got)
	case <-time.After(200 * time.Millisecond): // a report would follow at once
	}
}

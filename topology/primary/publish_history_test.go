package primary_test

import (
	"context"
	"flag"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology/primary"
)

var long = flag.Bool("long", false, "run TestPublishHistoryUnderFaults with 100 random faults after the short schedule (default: the short schedule, 6 faults)")

// publishRouter routes the Publish of a region's producer through the
// region's Primary, as streamd does; until the Primary runs, a routed
// publish is Unavailable.
type publishRouter struct {
	p atomic.Pointer[primary.Primary]
}

func (r *publishRouter) Routes(e *streamdv1.Event) (bool, error) {
	if p := r.p.Load(); p != nil {
		return p.Routes(e)
	}
	return true, nil
}

func (r *publishRouter) Publish(ctx context.Context, events []*streamdv1.Event) ([]*streamdv1.Appended, error) {
	p := r.p.Load()
	if p == nil {
		return nil, status.Error(codes.Unavailable, "the region's primary is not running yet")
	}
	appended, err := p.Publish(ctx, events)
	return appended, primary.ToStatus(err)
}

// producerOptions are region n's producer options, with a new router that
// startPrimary points at n's Primary. Callers hold pw.mu or own pw.
func (pw *primaryWorld) producerOptions(n string) producer.Options {
	r := &publishRouter{}
	pw.routers[n] = r
	o := producer.Options{Server: producer.ServerOptions{Router: r}}
	o.Journal.Region = n
	return o
}

// publisher is a client of region n's Publish (EventStreamService), direct
// (a service runs in its region), that reconnects within 200ms of a
// restart.
func (pw *primaryWorld) publisher(n string) streamdv1.EventStreamServiceClient {
	pw.T.Helper()
	cc, err := grpc.NewClient(pw.Regions[n].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	if err != nil {
		pw.T.Fatal(err)
	}
	pw.T.Cleanup(func() { cc.Close() })
	return streamdv1.NewEventStreamServiceClient(cc)
}

// runPublisher is a service in region: it publishes to the entities
// through pub, its region's Publish over gRPC, and reads them (locally or
// strongly) from its region's Primary, until stop.
func (pw *primaryWorld) runPublisher(rec *recorder, id int, region string, pub streamdv1.EventStreamServiceClient, entities []string, stop <-chan struct{}) {
	publish := func(ctx context.Context, typ, eid, value string) (uint64, error) {
		resp, err := pub.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{
			{EntityType: typ, EntityId: eid, EventType: "Changed", Payload: []byte(value)}}})
		if err != nil {
			return 0, err
		}
		return resp.Appended[0].Version, nil
	}
	pw.runOps(rec, id, 23, region, publish, entities, stop)
}

// A fault of the nemesis: what it does, held for a while, then undone.
type fault struct {
	what       string
	do, undo   func()
	hold       time.Duration
	concurrent bool // undone only after the next fault's hold
}

// faults is the short schedule: each kind of fault once, in order (cuts of
// the link between a region and the pinned primary, restarts of the owner,
// the primary and a bystander, a new pin while the old primary is cut off).
func (pw *primaryWorld) faults() []fault {
	return []fault{
		{what: "eu-us cut", do: func() { pw.cut("eu", "us") }, undo: func() { pw.restore("eu", "us") }, hold: 500 * time.Millisecond},
		{what: "ap-eu cut", do: func() { pw.cut("ap", "eu") }, undo: func() { pw.restore("ap", "eu") }, hold: 500 * time.Millisecond},
		{what: "us restarted", do: func() { pw.restart("us") }, hold: 400 * time.Millisecond},
		{what: "eu-ap cut, order pinned to us", do: func() {
			pw.cut("eu", "ap")
			if err := pw.primary("us").SetPrimary(context.Background(), "order", "us"); err != nil {
				pw.T.Error(err)
			}
		}, undo: func() { pw.restore("eu", "ap") }, hold: 500 * time.Millisecond},
		{what: "eu restarted", do: func() { pw.restart("eu") }, hold: 400 * time.Millisecond},
		{what: "order pinned to eu, ap restarted", do: func() {
			if err := pw.primary("eu").SetPrimary(context.Background(), "order", "eu"); err != nil {
				pw.T.Error(err)
			}
			pw.restart("ap")
		}, hold: 400 * time.Millisecond},
	}
}

// randomFaults are n faults drawn with rng: a cut of one link, a restart
// of one region, or a new pin of order, some of them overlapping.
func (pw *primaryWorld) randomFaults(rng *rand.Rand, n int) []fault {
	regions := []string{"eu", "us", "ap"}
	var out []fault
	for range n {
		a := regions[rng.IntN(3)]
		hold := time.Duration(200+rng.IntN(600)) * time.Millisecond
		switch rng.IntN(5) {
		case 0, 1:
			b := regions[(slices.Index(regions, a)+1+rng.IntN(2))%3]
			out = append(out, fault{what: a + "-" + b + " cut", do: func() { pw.cut(a, b) }, undo: func() { pw.restore(a, b) },
				hold: hold, concurrent: rng.IntN(3) == 0})
		case 2, 3:
			out = append(out, fault{what: a + " restarted", do: func() { pw.restart(a) }, hold: hold})
		default:
			out = append(out, fault{what: "order pinned to " + a, do: func() {
				if err := pw.primary(a).SetPrimary(context.Background(), "order", a); err != nil {
					pw.T.Error(err)
				}
			}, hold: hold})
		}
	}
	return out
}

// Services in three regions publish over gRPC (Publish, routed through each
// region's Primary) to the same few entities of both single-writer modes,
// and read them, while links are cut and restored, regions restart (server
// and journal) and the pinned primary moves; the run is then checked: one
// linear history per entity, every acknowledged publish in it at the
// version it was answered with, and writes and strong reads linearizable
// (porcupine).
func TestPublishHistoryUnderFaults(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us", "ap")
	pw.StartAll()
	entities := []string{"account/a1", "account/a2", "order/o1", "order/o2"}
	regions := []string{"eu", "us", "ap"}
	pubs := map[string]streamdv1.EventStreamServiceClient{}
	for _, n := range regions {
		pubs[n] = pw.publisher(n)
	}
	schedule := pw.faults()
	if *long {
		seed := uint64(time.Now().UnixNano())
		t.Logf("fault seed %d", seed)
		schedule = append(schedule, pw.randomFaults(rand.New(rand.NewPCG(seed, 1)), 100)...)
	}
	rec := &recorder{start: time.Now()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 9 {
		wg.Go(func() { pw.runPublisher(rec, i, regions[i%3], pubs[regions[i%3]], entities, stop) })
	}
	hold := func(d time.Duration, what string) {
		t.Logf("%v: %s", time.Since(rec.start).Round(time.Millisecond), what)
		time.Sleep(d) // the nemesis's schedule, not synchronisation
	}
	hold(300*time.Millisecond, "all links up")
	var undo []func()
	for _, f := range schedule {
		f.do()
		hold(f.hold, f.what)
		if f.undo != nil {
			undo = append(undo, f.undo)
		}
		if !f.concurrent {
			for _, u := range undo {
				u()
			}
			undo = nil
		}
	}
	for _, u := range undo {
		u()
	}
	hold(300*time.Millisecond, "all links up")
	close(stop)
	wg.Wait()

	finals := pw.converge(rec, entities, regions)
	counts := summarize(t, rec, finals)
	if counts["write"] == 0 || counts["strong read"] == 0 {
		t.Fatalf("no publish or strong read succeeded: %v", counts)
	}
	linear := map[string]bool{}
	for _, e := range entities {
		linear[e] = true
	}
	for _, err := range checkRun(rec.ops, finals, linear) {
		t.Error(err)
	}
}

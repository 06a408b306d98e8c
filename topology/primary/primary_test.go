package primary_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/internal/netproxy"
	"github.com/streamd/streamd/internal/regiontest"
	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/primary"
)

// primaryWorld is a regiontest.World whose regions also run a Primary,
// served on its own listener, through which their producer's Publish is
// routed (as in streamd); every region reaches every other region's
// PrimaryService through a proxy, so cut cuts both replication and primary
// calls.
type primaryWorld struct {
	*regiontest.World
	cfg      primary.Config
	paddrs   map[string]string             // region -> its PrimaryService address
	pproxies map[[2]string]*netproxy.Proxy // [caller, callee]

	mu      sync.RWMutex // guards prims and servers against restarts
	prims   map[string]*primary.Primary
	servers map[string]*grpc.Server
	routers map[string]*publishRouter // of each region's producer, as it last started
}

var testConfig = primary.Config{EntityTypes: []primary.EntityType{
	{Name: "order", Mode: primary.ModePinned, Primary: "eu"},
	{Name: "account", Mode: primary.ModeRequestRegion, Home: "eu"},
	{Name: "cart", Mode: primary.ModeReplicated},
}}

func newPrimaryWorld(t *testing.T, cfg primary.Config, names ...string) *primaryWorld {
	pw := &primaryWorld{
		cfg:    cfg,
		paddrs: map[string]string{}, pproxies: map[[2]string]*netproxy.Proxy{},
		prims: map[string]*primary.Primary{}, servers: map[string]*grpc.Server{}, routers: map[string]*publishRouter{},
	}
	pw.World = regiontest.NewWorldWith(t, pw.producerOptions, names...)
	listeners := map[string]net.Listener{}
	for _, n := range names {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listeners[n], pw.paddrs[n] = lis, lis.Addr().String()
	}
	for _, caller := range names {
		for _, callee := range names {
			if caller != callee {
				px, err := netproxy.Start(pw.paddrs[callee])
				if err != nil {
					t.Fatal(err)
				}
				pw.pproxies[[2]string{caller, callee}] = px
			}
		}
	}
	for _, n := range names {
		pw.startPrimary(n, listeners[n], nil)
	}
	t.Cleanup(func() {
		pw.mu.Lock()
		defer pw.mu.Unlock()
		for n := range pw.prims {
			pw.stopPrimary(n)
		}
		for _, px := range pw.pproxies {
			px.Close()
		}
	})
	return pw
}

// regionsOf lists the regions other than n, reached through the proxies.
func (pw *primaryWorld) regionsOf(n string) []topology.Region {
	var others []topology.Region
	for o := range pw.Regions {
		if o != n {
			others = append(others, topology.Region{Name: o, Addrs: []string{pw.pproxies[[2]string{n, o}].Addr()}})
		}
	}
	return others
}

// startPrimary runs region n's Primary on lis, with progress as its
// replication progress (nil: the default). Callers hold pw.mu or own pw.
func (pw *primaryWorld) startPrimary(n string, lis net.Listener, progress primary.ProgressFunc) {
	pw.T.Helper()
	prim, err := primary.New(primary.Options{
		Journal: pw.Regions[n].Producer.Journal(), Config: pw.cfg, Regions: pw.regionsOf(n), CallTimeout: 2 * time.Second, Progress: progress,
	})
	if err != nil {
		pw.T.Fatal(err)
	}
	g := grpc.NewServer()
	streamdv1.RegisterPrimaryServiceServer(g, prim.Server())
	go g.Serve(lis)
	pw.prims[n], pw.servers[n] = prim, g
	pw.routers[n].p.Store(prim)
}

func (pw *primaryWorld) stopPrimary(n string) {
	pw.servers[n].Stop()
	if err := pw.prims[n].Close(); err != nil {
		pw.T.Error(err)
	}
}

func (pw *primaryWorld) primary(n string) *primary.Primary {
	pw.mu.RLock()
	defer pw.mu.RUnlock()
	return pw.prims[n]
}

// cut cuts everything between regions a and b (replication and primary
// calls, both ways); restore lets it through again.
func (pw *primaryWorld) cut(a, b string)     { pw.eachProxy(a, b, (*netproxy.Proxy).Cut) }
func (pw *primaryWorld) restore(a, b string) { pw.eachProxy(a, b, (*netproxy.Proxy).Restore) }

func (pw *primaryWorld) eachProxy(a, b string, fn func(*netproxy.Proxy)) {
	for _, k := range [][2]string{{a, b}, {b, a}} {
		fn(pw.Links[k].Proxy)
		fn(pw.pproxies[k])
	}
}

// restart closes region n (primary, replications into it, journal) and
// opens it again on the same directory and addresses.
func (pw *primaryWorld) restart(n string) {
	pw.T.Helper()
	pw.mu.Lock()
	defer pw.mu.Unlock()
	pw.stopPrimary(n)
	var into []string
	for k, l := range pw.Links {
		if k[1] == n && l.Running() {
			into = append(into, k[0])
			pw.StopLink(k[0], k[1])
		}
	}
	old := pw.Regions[n]
	old.Stop()
	pw.Regions[n] = regiontest.StartWith(pw.T, old.Dir, old.Addr, pw.producerOptions(n))
	pw.startPrimary(n, pw.listenAgain(n), nil)
	for _, from := range into {
		pw.StartLink(from, n)
	}
}

// listenAgain listens on region n's PrimaryService address again, once
// the Primary that stopped there let go of it.
func (pw *primaryWorld) listenAgain(n string) net.Listener {
	pw.T.Helper()
	var lis net.Listener
	var err error
	if !testwait.Until(10*time.Second, func() bool { lis, err = net.Listen("tcp", pw.paddrs[n]); return err == nil }) {
		pw.T.Fatalf("listen on %s's PrimaryService address again: %v", n, err)
	}
	return lis
}

// client is a gRPC client of region n's PrimaryService, direct (no proxy).
func (pw *primaryWorld) client(n string) streamdv1.PrimaryServiceClient {
	pw.T.Helper()
	cc, err := grpc.NewClient(pw.paddrs[n], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		pw.T.Fatal(err)
	}
	pw.T.Cleanup(func() { cc.Close() })
	return streamdv1.NewPrimaryServiceClient(cc)
}

func ev(payload string) *streamdv1.Event {
	return &streamdv1.Event{EventType: "Changed", Payload: []byte(payload)}
}

// values are the payloads of a history's events other than handovers.
func values(h primary.History) []string {
	var out []string
	for _, e := range h.Events {
		if e.EventType != primary.HandoverEventType {
			out = append(out, string(e.Payload))
		}
	}
	return out
}

// describe shows a history as "1:us:payload 2:handover->ap …".
func describe(h primary.History) string {
	var b strings.Builder
	for _, e := range h.Events {
		if e.EventType == primary.HandoverEventType {
			fmt.Fprintf(&b, "%d:%s:handover ", primary.Version(e), e.Origin)
		} else {
			fmt.Fprintf(&b, "%d:%s:%s ", primary.Version(e), e.Origin, e.Payload)
		}
	}
	return fmt.Sprintf("[%s] owner %s, %d outside", strings.TrimSpace(b.String()), h.Owner, len(h.Outside))
}

func mustWrite(t *testing.T, p *primary.Primary, entityType, id string, payloads ...string) primary.Written {
	t.Helper()
	var events []*streamdv1.Event
	for _, pl := range payloads {
		events = append(events, ev(pl))
	}
	w, err := p.Write(context.Background(), entityType, id, primary.AnyVersion, events...)
	if err != nil {
		t.Fatalf("write %v to %s/%s in %s: %v", payloads, entityType, id, p.Region(), err)
	}
	return w
}

func mustRead(t testing.TB, p *primary.Primary, entityType, id string, strong bool) primary.History {
	t.Helper()
	read := p.Read
	if strong {
		read = p.ReadStrong
	}
	h, err := read(context.Background(), entityType, id)
	if err != nil {
		t.Fatalf("read %s/%s in %s: %v", entityType, id, p.Region(), err)
	}
	return h
}

// awaitHistory waits until region n's local history of the entity is want
// (as describe shows it).
func (pw *primaryWorld) awaitHistory(n, entityType, id, want string) {
	pw.T.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := describe(mustRead(pw.T, pw.primary(n), entityType, id, false))
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			pw.T.Fatalf("region %s: %s/%s is %s, want %s", n, entityType, id, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Writes to a pinned type in another region are forwarded to the primary,
// which answers; reads there are local and catch up by replication.
func TestPrimaryPinnedForwards(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us")
	pw.StartAll()
	w := mustWrite(t, pw.primary("us"), "order", "o1", "a", "b")
	if w.Region != "eu" || fmt.Sprint(w.Versions) != "[1 2]" {
		t.Fatalf("forwarded write landed %+v, want region eu versions [1 2]", w)
	}
	w = mustWrite(t, pw.primary("eu"), "order", "o1", "c")
	if w.Region != "eu" || fmt.Sprint(w.Versions) != "[3]" {
		t.Fatalf("write at the primary landed %+v", w)
	}
	want := "[1:eu:a 2:eu:b 3:eu:c] owner eu, 0 outside"
	pw.awaitHistory("us", "order", "o1", want)
	if got := describe(mustRead(t, pw.primary("us"), "order", "o1", true)); got != want {
		t.Fatalf("strong read in us: %s, want %s", got, want)
	}
	// The forwarding region stays out of the history: no handover happened.
	if got := describe(mustRead(t, pw.primary("eu"), "order", "o1", false)); got != want {
		t.Fatalf("eu: %s", got)
	}
}

// A region that writes a request-region entity takes it over from the owner
// it knows, following handovers it has not received (no replication runs
// here), and the history stays one sequence.
func TestPrimaryHandoverChain(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us", "ap")
	mustWrite(t, pw.primary("us"), "account", "a1", "us1")      // us takes a1 from eu (home)
	mustWrite(t, pw.primary("ap"), "account", "a1", "ap1")      // ap asks eu, is sent to us
	w := mustWrite(t, pw.primary("eu"), "account", "a1", "eu1") // eu asks us, is sent to ap
	if w.Region != "eu" || fmt.Sprint(w.Versions) != "[6]" {
		t.Fatalf("eu's write landed %+v, want version 6", w)
	}
	want := "[1:eu:handover 2:us:us1 3:us:handover 4:ap:ap1 5:ap:handover 6:eu:eu1] owner eu, 0 outside"
	for _, n := range []string{"eu", "us", "ap"} {
		if got := describe(mustRead(t, pw.primary(n), "account", "a1", true)); got != want {
			t.Errorf("strong read in %s: %s, want %s", n, got, want)
		}
	}
	// Another entity is not affected: eu (home) writes a2 directly.
	if w := mustWrite(t, pw.primary("eu"), "account", "a2", "x"); fmt.Sprint(w.Versions) != "[1]" {
		t.Errorf("a2: %+v", w)
	}
	// With replication, every region ends with the same history.
	pw.StartAll()
	for _, n := range []string{"eu", "us", "ap"} {
		pw.awaitHistory(n, "account", "a1", want)
	}
}

// The owner granted a handover but the answer was lost (the new owner
// crashed before storing it): asked again, it answers again without a
// second handover; a third region that learns of the grant first brings
// the new owner up to date.
func TestPrimaryIdempotentHandover(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us", "ap")
	eu := pw.client("eu")
	ctx := context.Background()
	grant := func(id, to string) {
		t.Helper()
		resp, err := eu.Sync(ctx, &streamdv1.SyncRequest{EntityType: "account", EntityId: id, HandoverTo: to})
		if err != nil || resp.Owner != to || resp.Version != 1 {
			t.Fatalf("grant of %s to %s: %v %v", id, to, resp, err)
		}
	}
	grant("a1", "us") // the answer is dropped: us never stores it
	again, err := eu.Sync(ctx, &streamdv1.SyncRequest{EntityType: "account", EntityId: "a1", HandoverTo: "us"})
	if err != nil || again.Owner != "us" || again.Version != 1 || len(again.Events) != 1 {
		t.Fatalf("repeated grant: %v %v; want the same answer", again, err)
	}
	mustWrite(t, pw.primary("us"), "account", "a1", "us1")
	want := "[1:eu:handover 2:us:us1] owner us, 0 outside"
	if got := describe(mustRead(t, pw.primary("eu"), "account", "a1", true)); got != want {
		t.Fatalf("eu: %s, want %s", got, want)
	}

	grant("a2", "us") // lost again; now ap writes first
	mustWrite(t, pw.primary("ap"), "account", "a2", "ap1")
	want = "[1:eu:handover 2:us:handover 3:ap:ap1] owner ap, 0 outside"
	for _, n := range []string{"eu", "us", "ap"} {
		if got := describe(mustRead(t, pw.primary(n), "account", "a2", true)); got != want {
			t.Errorf("%s: %s, want %s", n, got, want)
		}
	}
}

// A region that cannot reach the owner does not write: Unavailable naming
// the owner, through the Go API and over gRPC. Entities it owns go on.
func TestPrimaryUnavailableOwner(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us")
	mustWrite(t, pw.primary("eu"), "account", "a1", "eu1")
	mustWrite(t, pw.primary("us"), "account", "a2", "us1") // us owns a2
	pw.cut("eu", "us")
	_, err := pw.primary("us").Write(context.Background(), "account", "a1", primary.AnyVersion, ev("us1"))
	var ue *primary.UnavailableError
	if !errors.As(err, &ue) || ue.Region != "eu" || !errors.Is(err, primary.ErrUnavailable) {
		t.Fatalf("write with the owner cut off: %v; want an UnavailableError naming eu", err)
	}
	_, err = pw.client("us").Write(context.Background(), &streamdv1.WriteRequest{EntityType: "account", EntityId: "a1", Events: []*streamdv1.Event{ev("us1")}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), `"eu"`) {
		t.Fatalf("over gRPC: %v; want Unavailable naming eu", err)
	}
	if _, err := pw.primary("us").ReadStrong(context.Background(), "account", "a1"); !errors.Is(err, primary.ErrUnavailable) {
		t.Fatalf("strong read with the owner cut off: %v", err)
	}
	// Pinned: the forwarding region cannot reach the primary either.
	if _, err := pw.primary("us").Write(context.Background(), "order", "o1", primary.AnyVersion, ev("x")); !errors.Is(err, primary.ErrUnavailable) {
		t.Fatalf("forwarded write with the primary cut off: %v", err)
	}
	mustWrite(t, pw.primary("us"), "account", "a2", "us2")
	pw.restore("eu", "us")
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := pw.primary("us").Write(context.Background(), "account", "a1", primary.AnyVersion, ev("us1"))
		if err == nil {
			break
		}
		if !errors.Is(err, primary.ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("write once the link is back: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := "[1:eu:eu1 2:eu:handover 3:us:us1] owner us, 0 outside"
	if got := describe(mustRead(t, pw.primary("us"), "account", "a1", false)); got != want {
		t.Fatalf("after the link is back: %s, want %s", got, want)
	}
}

// A forced takeover while the old owner is cut off and still writing forks
// the history; once they meet, every region picks the forced branch and
// reports the old owner's events after the fork as outside the history.
func TestPrimaryForcedTakeover(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us", "ap")
	pw.StartAll()
	mustWrite(t, pw.primary("eu"), "account", "a1", "eu1")
	pw.awaitHistory("us", "account", "a1", "[1:eu:eu1] owner eu, 0 outside")
	pw.cut("eu", "us")
	pw.cut("eu", "ap")
	if _, err := pw.primary("us").Takeover(context.Background(), "account", "a1", false); !errors.Is(err, primary.ErrUnavailable) {
		t.Fatalf("takeover without force: %v", err)
	}
	v, err := pw.primary("us").Takeover(context.Background(), "account", "a1", true)
	if err != nil || v != 2 {
		t.Fatalf("forced takeover: version %d, %v", v, err)
	}
	mustWrite(t, pw.primary("us"), "account", "a1", "us1")
	mustWrite(t, pw.primary("eu"), "account", "a1", "eu2") // eu does not know yet
	pw.awaitHistory("ap", "account", "a1", "[1:eu:eu1 2:us:handover 3:us:us1] owner us, 0 outside")
	mustWrite(t, pw.primary("ap"), "account", "a1", "ap1") // ap follows us
	pw.restore("eu", "us")
	pw.restore("eu", "ap")
	want := "[1:eu:eu1 2:us:handover 3:us:us1 4:us:handover 5:ap:ap1] owner ap, 1 outside"
	for _, n := range []string{"eu", "us", "ap"} {
		pw.awaitHistory(n, "account", "a1", want)
	}
	h := mustRead(t, pw.primary("eu"), "account", "a1", false)
	if o := h.Outside[0]; o.Origin != "eu" || string(o.Payload) != "eu2" || primary.Version(o) != 2 {
		t.Fatalf("outside: %v", o)
	}
	// eu, fenced by the forced handover, now takes the entity over normally.
	mustWrite(t, pw.primary("eu"), "account", "a1", "eu3")
}

// Pinning another primary while writes run: the new primary takes each
// entity over on its next write; the old one forwards.
func TestPrimarySetPrimary(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us", "ap")
	pw.StartAll()
	mustWrite(t, pw.primary("ap"), "order", "o1", "1")
	if err := pw.primary("eu").SetPrimary(context.Background(), "order", "us"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"eu", "us", "ap"} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			info, err := pw.primary(n).PrimaryOf("order")
			if err != nil {
				t.Fatal(err)
			}
			if info.Primary == "us" && info.PinnedIn == "eu" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: pin %+v", n, info)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, n := range []string{"ap", "eu", "us"} {
		if w := mustWrite(t, pw.primary(n), "order", "o1", n); w.Region != "us" {
			t.Errorf("write in %s landed in %s, want us", n, w.Region)
		}
	}
	want := "[1:eu:1 2:eu:handover 3:us:ap 4:us:eu 5:us:us] owner us, 0 outside"
	if got := describe(mustRead(t, pw.primary("ap"), "order", "o1", true)); got != want {
		t.Fatalf("%s, want %s", got, want)
	}
	resp, err := pw.client("ap").GetPrimary(context.Background(), &streamdv1.GetPrimaryRequest{EntityType: "order", EntityId: "o1"})
	if err != nil || resp.Primary != "us" || resp.Configured != "eu" || resp.Mode != "pinned" || resp.Owner != "us" || resp.Version != 5 {
		t.Fatalf("GetPrimary: %v %v", resp, err)
	}
}

// Optimistic concurrency on versions: a handover does not conflict, a write
// does.
func TestPrimaryExpectedVersion(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us")
	p := pw.primary("eu")
	ctx := context.Background()
	if _, err := p.Write(ctx, "account", "a1", 0, ev("1")); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, pw.primary("us"), "account", "a1", "2")
	h := mustRead(t, p, "account", "a1", true) // version 3
	if _, err := p.Write(ctx, "account", "a1", 1, ev("x")); !errors.Is(err, primary.ErrVersionConflict) {
		t.Fatalf("stale expectation: %v", err)
	}
	if _, err := pw.primary("us").Write(ctx, "account", "a1", h.Version, ev("3")); err != nil {
		t.Fatal(err)
	}
	_, err := pw.client("eu").Write(ctx, &streamdv1.WriteRequest{EntityType: "account", EntityId: "a1", ExpectedVersion: &h.Version, Events: []*streamdv1.Event{ev("y")}})
	if status.Code(err) != codes.Aborted {
		t.Fatalf("over gRPC: %v; want Aborted", err)
	}
	// The same expectation after only a handover (us to eu) succeeds.
	h = mustRead(t, pw.primary("us"), "account", "a1", true)
	if _, err := p.Takeover(ctx, "account", "a1", false); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write(ctx, "account", "a1", h.Version, ev("4")); err != nil {
		t.Fatalf("expectation of the version before a handover: %v", err)
	}
}

func TestPrimaryRefusesBadInput(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us")
	p := pw.primary("eu")
	ctx := context.Background()
	for name, c := range map[string]struct {
		entityType, id string
		events         []*streamdv1.Event
		want           error
		says           string
	}{
		"unknown type":    {"invoice", "i1", []*streamdv1.Event{ev("x")}, primary.ErrUnknownEntityType, `"invoice"`},
		"replicated type": {"cart", "c1", []*streamdv1.Event{ev("x")}, primary.ErrWrongMode, "replicated"},
		"no id":           {"order", "", []*streamdv1.Event{ev("x")}, primary.ErrInvalidRequest, "id"},
		"no events":       {"order", "o1", nil, primary.ErrInvalidRequest, "no events"},
		"other entity":    {"order", "o1", []*streamdv1.Event{{EntityId: "o2"}}, primary.ErrInvalidRequest, "o2"},
		"origin set":      {"order", "o1", []*streamdv1.Event{{Origin: "us"}}, primary.ErrInvalidRequest, "origin"},
		"handover type":   {"order", "o1", []*streamdv1.Event{{EventType: primary.HandoverEventType}}, primary.ErrInvalidRequest, "reserved"},
	} {
		_, err := p.Write(ctx, c.entityType, c.id, primary.AnyVersion, c.events...)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v; want %v saying %q", name, err, c.want, c.says)
		}
		_, err = pw.client("us").Write(ctx, &streamdv1.WriteRequest{EntityType: c.entityType, EntityId: c.id, Events: c.events})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s over gRPC: %v; want InvalidArgument", name, err)
		}
	}
	if _, err := p.Read(ctx, "cart", "c1"); !errors.Is(err, primary.ErrWrongMode) {
		t.Errorf("read of a replicated type: %v", err)
	}
	if err := p.SetPrimary(ctx, "account", "us"); !errors.Is(err, primary.ErrWrongMode) {
		t.Errorf("pin of a request-region type: %v", err)
	}
	if err := p.SetPrimary(ctx, "order", "mars"); !errors.Is(err, primary.ErrInvalidRequest) || !strings.Contains(err.Error(), "mars") {
		t.Errorf("pin to an unknown region: %v", err)
	}
	if _, err := pw.client("eu").Sync(ctx, &streamdv1.SyncRequest{EntityType: "account", EntityId: "a1", HandoverTo: "mars"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("handover to an unknown region: %v", err)
	}

	j := pw.Regions["eu"].Producer.Journal()
	for name, c := range map[string]struct {
		opts primary.Options
		says string
	}{
		"no journal":        {primary.Options{}, "Journal"},
		"unknown primary":   {primary.Options{Journal: j, Config: testConfig}, `"eu"`},
		"pinned no primary": {primary.Options{Journal: j, Config: primary.Config{EntityTypes: []primary.EntityType{{Name: "x", Mode: primary.ModePinned}}}}, "needs a primary"},
		"home on pinned":    {primary.Options{Journal: j, Config: primary.Config{EntityTypes: []primary.EntityType{{Name: "x", Mode: primary.ModePinned, Primary: "eu", Home: "eu"}}}}, "not a home"},
		"no mode":           {primary.Options{Journal: j, Config: primary.Config{EntityTypes: []primary.EntityType{{Name: "x"}}}}, "mode"},
		"twice": {primary.Options{Journal: j, Config: primary.Config{EntityTypes: []primary.EntityType{
			{Name: "x", Mode: primary.ModeReplicated}, {Name: "x", Mode: primary.ModeReplicated}}}}, "twice"},
		"region no address": {primary.Options{Journal: j, Regions: []topology.Region{{Name: "us"}}}, "no addresses"},
	} {
		if name == "unknown primary" {
			c.opts.Config = primary.Config{EntityTypes: []primary.EntityType{{Name: "x", Mode: primary.ModeRequestRegion, Home: "us"}}}
			c.says = `"us"`
		}
		if _, err := primary.New(c.opts); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%s: %v; want an error saying %q", name, err, c.says)
		}
	}
	var m primary.Mode
	if err := m.UnmarshalText([]byte("pinned")); err != nil || m != primary.ModePinned {
		t.Errorf("mode pinned: %v %v", m, err)
	}
	if err := m.UnmarshalText([]byte("primary")); err == nil || !strings.Contains(err.Error(), "request-region") {
		t.Errorf("unknown mode: %v", err)
	}
}

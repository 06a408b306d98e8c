package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/internal/kubetest"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// The pods of a group share the entities (real streamd processes, one
// journal each, the Kubernetes API from kubetest over HTTP): a publish or
// read at either pod reaches the pod that writes the entity's slice; a pod
// stopped (SIGTERM) writes its slices until the pod taking them has copied
// their history ahead, and exits once that pod holds them; a pod killed (SIGKILL) leaves its slices unwritten, never
// written elsewhere from scratch, until it is back. Through it all, each
// entity's events are 1, 2, 3…, each acknowledged at the seqNr it expected.
func TestEntityGroupFromConfig(t *testing.T) {
	api := kubetest.New()
	srv := httptest.NewServer(api)
	defer srv.Close()
	cfg := filepath.Join(t.TempDir(), "orders.yaml")
	if err := os.WriteFile(cfg, []byte("group:\n  name: orders\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dirs := map[string]string{"orders-0": t.TempDir(), "orders-1": t.TempDir()}
	pods := map[string]*daemon{}
	t.Cleanup(func() {
		if t.Failed() {
			for id, d := range pods {
				t.Logf("%s:\n%s", id, d.Log())
			}
		}
	})
	start := func(id string) {
		pods[id] = startPod(t, dirs[id], "eu", cfg, id, srv.URL)
	}
	ctx := context.Background()
	const entities = 40
	last := map[string]uint64{} // acknowledged, by entity id
	publish := func(via, id string) error {
		resp, err := streamdv1.NewEventStreamServiceClient(pods[via].conn).Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{
			{EntityType: "order", EntityId: id, EventType: "Placed", SeqNr: last[id] + 1}}})
		if err != nil {
			return err
		}
		if got := resp.GetAppended()[0].GetSeqNr(); got != last[id]+1 {
			t.Fatalf("publish of %s through %s: seqNr %d, want %d", id, via, got, last[id]+1)
		}
		last[id]++
		return nil
	}
	// round publishes one event of every entity through pod via, each
	// expecting the entity's next seqNr, asking again while the group says
	// Unavailable (it moves slices).
	round := func(what, via string) {
		t.Helper()
		for i := range entities {
			id := fmt.Sprint("o", i)
			var err error
			if !testwait.Until(60*time.Second, func() bool {
				err = publish(via, id)
				return status.Code(err) != codes.Unavailable
			}) || err != nil {
				t.Fatalf("%s: publish of %s through %s: %v", what, id, via, err)
			}
		}
	}
	// read returns the seqNrs of entity id's events read through pod via,
	// checking each was written in region eu with its origin seqNr.
	read := func(via, id string) ([]uint64, error) {
		st, err := streamdv1.NewEventStreamServiceClient(pods[via].conn).EntityEvents(ctx, &streamdv1.EntityEventsRequest{EntityType: "order", EntityId: id})
		if err != nil {
			return nil, err
		}
		var got []uint64
		for {
			resp, err := st.Recv()
			if errors.Is(err, io.EOF) {
				return got, nil
			}
			if err != nil {
				return nil, err
			}
			for _, e := range resp.GetEvents() {
				if e.GetOrigin() != "eu" || e.GetOriginSeqNr() != e.GetSeqNr() {
					t.Fatalf("%s#%d through %s has origin %q/%d", id, e.GetSeqNr(), via, e.GetOrigin(), e.GetOriginSeqNr())
				}
				got = append(got, e.GetSeqNr())
			}
		}
	}
	// check reads every entity through every pod, asking again while the
	// group says Unavailable: its events are 1..last.
	check := func(what string) {
		t.Helper()
		for via := range pods {
			for id := range last {
				var got []uint64
				var err error
				if !testwait.Until(60*time.Second, func() bool {
					got, err = read(via, id)
					return status.Code(err) != codes.Unavailable
				}) || err != nil {
					t.Fatalf("%s: EntityEvents of %s through %s: %v", what, id, via, err)
				}
				if len(got) != int(last[id]) || (len(got) > 0 && got[len(got)-1] != last[id]) {
					t.Fatalf("%s: %s through %s has seqNrs %v, want 1..%d", what, id, via, got, last[id])
				}
			}
		}
	}
	// writing waits until each pod writes its share of the slices (the
	// streamd_group_slices gauge).
	writing := func(what string, share map[string]float64) {
		t.Helper()
		for id, n := range share {
			waitWriting(t, what, id, pods[id], n)
		}
	}

	start("orders-0")
	start("orders-1")
	writing("two pods", map[string]float64{"orders-0": 512, "orders-1": 512})
	round("two pods", "orders-0")
	round("two pods", "orders-1")
	check("two pods")
	forwarded := 0.0
	for _, d := range pods {
		forwarded += value(scrape(t, d.MetricsAddr)["streamd_group_forwarded_total"])
	}
	if forwarded < entities { // each round forwards about half
		t.Fatalf("the pods forwarded %v calls, want at least %d", forwarded, entities)
	}

	// Meanwhile, through the slices' moves below, another 20 entities are
	// written through orders-0 (forwarded to orders-1 for its slices): an
	// event acknowledged before its slice moved must be in the history
	// the next pod continues, so each publish gets the seqNr it expects.
	bg := map[string]uint64{}
	stopBG := make(chan struct{})
	bgDone := make(chan error, 1)
	go func() {
		client := streamdv1.NewEventStreamServiceClient(pods["orders-0"].conn)
		for n := 0; ; n++ {
			select {
			case <-stopBG:
				bgDone <- nil
				return
			default:
			}
			id := fmt.Sprint("b", n%20)
			resp, err := client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{
				{EntityType: "order", EntityId: id, EventType: "Paid", SeqNr: bg[id] + 1}}})
			switch {
			case status.Code(err) == codes.Unavailable:
				time.Sleep(10 * time.Millisecond) // a pace, not a synchronisation
			case err != nil:
				bgDone <- fmt.Errorf("publish of %s#%d through orders-0: %w", id, bg[id]+1, err)
				return
			case resp.GetAppended()[0].GetSeqNr() != bg[id]+1:
				bgDone <- fmt.Errorf("publish of %s: seqNr %d, want %d", id, resp.GetAppended()[0].GetSeqNr(), bg[id]+1)
				return
			default:
				bg[id]++
			}
		}
	}()

	// SIGTERM: orders-0 takes every slice and copies orders-1's; orders-1
	// exits once orders-0 holds them, before --group-hold-wait.
	stopped := time.Now()
	if err := pods["orders-1"].stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("orders-1 stopped with %v", err)
	}
	if d := time.Since(stopped); d > 20*time.Second {
		t.Fatalf("orders-1 took %v to stop: it waited out --group-hold-wait", d)
	}
	delete(pods, "orders-1")
	for _, cm := range api.Snapshot().ConfigMaps {
		if h, ok := cm.Data["holds.orders-1"]; ok {
			t.Fatalf("orders-1 exited holding %q", h)
		}
	}
	writing("orders-1 stopped", map[string]float64{"orders-0": 1024})
	// orders-1 wrote its slices until orders-0 had copied their history
	// ahead: the copy after the hand-off was what came since.
	if l := pods["orders-0"].Log(); !strings.Contains(l, `copied ahead the history of slices" group=orders slices=512-1023 from=orders-1`) {
		t.Fatalf("orders-0 did not copy the history of orders-1's slices ahead of the hand-off:\n%s", l)
	}
	round("orders-1 stopped", "orders-0")
	check("orders-1 stopped")

	start("orders-1")
	writing("orders-1 back", map[string]float64{"orders-0": 512, "orders-1": 512})
	if l := pods["orders-1"].Log(); !strings.Contains(l, `copied ahead the history of slices" group=orders slices=512-1023 from=orders-0`) {
		t.Fatalf("orders-1, back, did not copy the history of its slices ahead of the hand-off:\n%s", l)
	}
	round("orders-1 back", "orders-1")
	close(stopBG)
	if err := <-bgDone; err != nil {
		t.Fatal(err)
	}
	published := 0
	for id, n := range bg {
		last[id] = n
		published += int(n)
	}
	if published < 100 {
		t.Fatalf("%d events published through orders-0 while the slices moved, want 100 or more", published)
	}
	t.Logf("%d events published through orders-0 while the slices moved", published)
	check("orders-1 back")

	// SIGKILL: orders-0 takes orders-1's slices after its Lease expires but
	// cannot copy them: their entities are Unavailable, not started over.
	pods["orders-1"].Kill()
	delete(pods, "orders-1")
	var lost string // an entity of orders-1's slices
	for i := range entities {
		if id := fmt.Sprint("o", i); journal.SliceOf(id) >= 512 {
			lost = id
			break
		}
	}
	var err error
	if !testwait.Until(30*time.Second, func() bool {
		err = publish("orders-0", lost)
		return status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "copying the history")
	}) {
		t.Fatalf("orders-1 killed: publish of %s through orders-0: %v, want Unavailable while orders-0 waits to copy its history", lost, err)
	}
	for range 2 { // still so (each call waits routeWait first): nothing is written from scratch
		if err := publish("orders-0", lost); status.Code(err) != codes.Unavailable {
			t.Fatalf("orders-1 killed: publish of %s through orders-0: %v, want Unavailable", lost, err)
		}
	}
	start("orders-1")
	round("orders-1 back from a kill", "orders-0")
	check("orders-1 back from a kill")
}

// The replicate: entries of a streamd with a top-level group: follow its
// slices: each pod copies from the source the slices it writes, so the
// pods' journals split the source's events between them; when a pod stops
// (SIGTERM) the other takes its slices with their copies (origin and
// origin seqNr kept) and goes on copying them from the source, each
// source event once.
func TestEntityGroupReplicates(t *testing.T) {
	us := startDaemon(t, t.TempDir(), "--region", "us")
	api := kubetest.New()
	srv := httptest.NewServer(api)
	defer srv.Close()
	cfg := filepath.Join(t.TempDir(), "orders.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, "group:\n  name: orders\nreplicate:\n  - from: us\n    addrs: [%q]\n", us.Addr), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const entities = 60
	publishUS := func() {
		t.Helper()
		req := &streamdv1.PublishRequest{}
		for i := range entities {
			req.Events = append(req.Events, &streamdv1.Event{EntityType: "order", EntityId: fmt.Sprint("o", i), EventType: "Placed"})
		}
		if _, err := streamdv1.NewEventStreamServiceClient(us.conn).Publish(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	pods := map[string]*daemon{}
	for _, id := range []string{"orders-0", "orders-1"} {
		pods[id] = startPod(t, t.TempDir(), "eu", cfg, id, srv.URL)
	}
	for id, d := range pods { // the pods split the slices before us is written
		waitWriting(t, "two pods", id, d, 512)
	}
	for range 3 {
		publishUS()
	}
	// copied waits until every entity reads, through every pod, as the
	// source's events 1..n, in order, with their origin.
	copied := func(what string, n int) {
		t.Helper()
		for via, d := range pods {
			for i := range entities {
				id := fmt.Sprint("o", i)
				var got []string
				if !testwait.Until(60*time.Second, func() bool {
					got = nil
					st, err := streamdv1.NewEventStreamServiceClient(d.conn).EntityEvents(ctx, &streamdv1.EntityEventsRequest{EntityType: "order", EntityId: id})
					if err != nil {
						return false
					}
					for {
						resp, err := st.Recv()
						if err != nil {
							return errors.Is(err, io.EOF) && len(got) == n
						}
						for _, e := range resp.GetEvents() {
							got = append(got, fmt.Sprintf("%s/%d", e.GetOrigin(), e.GetOriginSeqNr()))
						}
					}
				}) {
					t.Fatalf("%s: %s through %s reads %v, want us/1..us/%d", what, id, via, got, n)
				}
				for k, g := range got {
					if g != fmt.Sprintf("us/%d", k+1) {
						t.Fatalf("%s: %s through %s reads %v, want us/1..us/%d", what, id, via, got, n)
					}
				}
			}
		}
	}
	copied("two pods", 3)
	// Each pod copied only its slices: the journals split the events.
	held := map[string]uint64{}
	var sum uint64
	for id, d := range pods {
		info, err := streamdv1.NewEventStreamServiceClient(d.conn).JournalInfo(ctx, &streamdv1.JournalInfoRequest{})
		if err != nil {
			t.Fatal(err)
		}
		held[id] = info.GetLastOffset()
		sum += info.GetLastOffset()
	}
	if sum != 3*entities || held["orders-0"] == 0 || held["orders-1"] == 0 {
		t.Fatalf("the pods' journals hold %v events, want the %d of us split between them", held, 3*entities)
	}

	if err := pods["orders-1"].stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("orders-1 stopped with %v", err)
	}
	delete(pods, "orders-1")
	publishUS()
	copied("orders-1 stopped", 4)
	// The last pod holds everything, with nobody to take it over: it does
	// not wait out --group-hold-wait (20s).
	stopped := time.Now()
	if err := pods["orders-0"].stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("orders-0 stopped with %v", err)
	}
	if d := time.Since(stopped); d > 15*time.Second {
		t.Fatalf("the last pod took %v to stop", d)
	}
}

// A region of a project spread over pods (group: on its regions entry,
// entity types of mode local): us, one streamd, and eu, two pods sharing
// its entities. Events written in us reach eu split between its pods by
// slice, and read whole through either; events written through either eu
// pod reach us once each, also after one eu pod stopped (SIGTERM) and
// the other copied its history: us holds each eu event once, in order.
func TestEntityGroupInProject(t *testing.T) {
	p := startGroupedProject(t, "default_mode: local\n")
	us, pods := p.us, p.pods
	ctx := context.Background()
	const entities = 40
	written := map[string]int{} // events per entity, by "type/id"
	publish := func(d *daemon, typ string) {
		t.Helper()
		for i := range entities {
			id := fmt.Sprint(typ[:1], i)
			var err error
			if !testwait.Until(60*time.Second, func() bool {
				_, err = streamdv1.NewEventStreamServiceClient(d.conn).Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: typ, EntityId: id, EventType: "Done"}}})
				return status.Code(err) != codes.Unavailable
			}) || err != nil {
				t.Fatalf("publish of %s/%s: %v", typ, id, err)
			}
			written[typ+"/"+id]++
		}
	}
	// reads waits until every entity of typ reads through d as its events
	// from origin, origin seqNrs 1..n, each once.
	reads := func(what string, d *daemon, typ, origin string) {
		t.Helper()
		for i := range entities {
			id := fmt.Sprint(typ[:1], i)
			n := written[typ+"/"+id]
			var got []uint64
			if !testwait.Until(60*time.Second, func() bool {
				got = nil
				st, err := streamdv1.NewEventStreamServiceClient(d.conn).EntityEvents(ctx, &streamdv1.EntityEventsRequest{EntityType: typ, EntityId: id})
				if err != nil {
					return false
				}
				for {
					resp, err := st.Recv()
					if err != nil {
						return errors.Is(err, io.EOF) && len(got) >= n
					}
					for _, e := range resp.GetEvents() {
						if e.GetOrigin() != origin {
							t.Fatalf("%s: %s/%s#%d has origin %q, want %q", what, typ, id, e.GetSeqNr(), e.GetOrigin(), origin)
						}
						got = append(got, e.GetOriginSeqNr())
					}
				}
			}) {
				t.Fatalf("%s: %s/%s reads origin seqNrs %v, want 1..%d", what, typ, id, got, n)
			}
			for k, s := range got {
				if s != uint64(k+1) || len(got) != n {
					t.Fatalf("%s: %s/%s reads origin seqNrs %v, want 1..%d", what, typ, id, got, n)
				}
			}
		}
	}
	publish(us, "order")
	publish(pods["eu-0"], "visit")
	publish(pods["eu-1"], "visit")
	for _, id := range []string{"eu-0", "eu-1"} {
		reads("written", pods[id], "order", "us")
	}
	reads("written", us, "visit", "eu")

	if err := pods["eu-1"].stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("eu-1 stopped with %v", err)
	}
	publish(us, "order")
	publish(pods["eu-0"], "visit")
	reads("eu-1 stopped", pods["eu-0"], "order", "us")
	reads("eu-1 stopped", us, "visit", "eu")
}

// groupedProject is a project of two regions: us, one streamd, and eu,
// two pods (eu-0 and eu-1) of group eu-pods sharing its entities (real
// processes, the Kubernetes API from kubetest over HTTP).
type groupedProject struct {
	us   *daemon
	pods map[string]*daemon
	// start starts pod id again, on its data directory and address.
	start func(id string)
}

// startGroupedProject starts a groupedProject whose config file is the
// regions list and rest, and waits until each pod writes half the slices.
// A failed test logs the pods'.
func startGroupedProject(t *testing.T, rest string) groupedProject {
	t.Helper()
	addrs := freeAddrs(t, 3)
	srv := httptest.NewServer(kubetest.New())
	t.Cleanup(srv.Close)
	cfg := filepath.Join(t.TempDir(), "project.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `regions:
  - {name: us, addrs: [%q]}
  - {name: eu, addrs: [%q, %q], group: eu-pods}
%s`, addrs[0], addrs[1], addrs[2], rest), 0o600); err != nil {
		t.Fatal(err)
	}
	p := groupedProject{us: startDaemon(t, t.TempDir(), "--region", "us", "--config", cfg, "--listen", addrs[0]), pods: map[string]*daemon{}}
	dirs := map[string]string{"eu-0": t.TempDir(), "eu-1": t.TempDir()}
	listen := map[string]string{"eu-0": addrs[1], "eu-1": addrs[2]}
	p.start = func(id string) {
		p.pods[id] = startPod(t, dirs[id], "eu", cfg, id, srv.URL, "--listen", listen[id])
	}
	p.start("eu-0")
	p.start("eu-1")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("us:\n%s", p.us.Log())
			for id, d := range p.pods {
				t.Logf("%s:\n%s", id, d.Log())
			}
		}
	})
	for id, d := range p.pods {
		waitWriting(t, "two pods", id, d, 512)
	}
	return p
}

// startPod starts pod id of a group sharing the entities of region, with
// the config file cfg and the Kubernetes API at kubeAPI (Lease duration
// 3s, --group-hold-wait 20s), args after.
func startPod(tb testing.TB, dir, region, cfg, id, kubeAPI string, args ...string) *daemon {
	tb.Helper()
	return startDaemon(tb, dir, append([]string{"--region", region, "--config", cfg, "--pod-name", id, "--pod-namespace", "shop",
		"--kube-api", kubeAPI, "--group-lease-duration", "3s", "--group-hold-wait", "20s"}, args...)...)
}

// waitWriting waits until pod id (d) writes n slices of its group (the
// streamd_group_slices gauge).
func waitWriting(tb testing.TB, what, id string, d *daemon, n float64) {
	tb.Helper()
	var got float64
	if !testwait.Until(60*time.Second, func() bool {
		got = value(scrape(tb, d.MetricsAddr)["streamd_group_slices"])
		return got == n
	}) {
		tb.Fatalf("%s: pod %s writes %v slices, want %v", what, id, got, n)
	}
}

package primary_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology/primary"
)

// withProgress runs region n's Primary again, with progress as its
// replication progress.
func (pw *primaryWorld) withProgress(n string, progress primary.ProgressFunc) {
	pw.T.Helper()
	pw.mu.Lock()
	defer pw.mu.Unlock()
	pw.stopPrimary(n)
	pw.startPrimary(n, pw.listenAgain(n), progress)
}

// failoverWait retries cond until it holds, for up to 20s.
func failoverWait(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, got := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %s", what, got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (pw *primaryWorld) awaitPinnedTo(n, entityType, want string) {
	pw.T.Helper()
	failoverWait(pw.T.(*testing.T), n+": primary of "+entityType, func() (bool, string) {
		info, err := pw.primary(n).PrimaryOf(entityType)
		if err != nil {
			pw.T.Fatal(err)
		}
		return info.Primary == want, info.Primary
	})
}

func failoverPayloads(cs []primary.Conflict) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.From+">"+c.To+":"+c.Event.EntityId+":"+string(c.Event.Payload))
	}
	return out
}

// A failover from eu, cut off and still writing, to us: one record moves
// the pinned type and every entity eu owned; writes resume in us for old
// and new entities; eu, back, learns it is fenced, forwards, and its events
// after the failover point are conflicts, in no history. Failing back is
// the same call the other way.
func TestFailover(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us", "ap")
	pw.StartAll()
	ctx := context.Background()
	mustWrite(t, pw.primary("eu"), "order", "o1", "1", "2")
	mustWrite(t, pw.primary("eu"), "account", "a1", "eu1")
	mustWrite(t, pw.primary("eu"), "order", "o3", "a")
	for _, n := range []string{"us", "ap"} {
		pw.awaitHistory(n, "order", "o3", "[1:eu:a] owner eu, 0 outside")
		pw.awaitHistory(n, "order", "o1", "[1:eu:1 2:eu:2] owner eu, 0 outside")
		pw.awaitHistory(n, "account", "a1", "[1:eu:eu1] owner eu, 0 outside")
	}
	pw.cut("eu", "us")
	pw.cut("eu", "ap")
	mustWrite(t, pw.primary("eu"), "order", "o1", "lost") // eu does not know it is failed over
	mustWrite(t, pw.primary("eu"), "order", "o3", "lost3")

	if _, err := pw.primary("ap").Failover(ctx, "eu", "us", false); !errors.Is(err, primary.ErrInvalidRequest) {
		t.Fatalf("failover to us run in ap: %v; want ErrInvalidRequest", err)
	}
	if _, err := pw.client("us").Failover(ctx, &streamdv1.FailoverRequest{From: "mars", To: "us"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("failover from an unknown region: %v; want InvalidArgument", err)
	}
	plan, err := pw.primary("us").Failover(ctx, "eu", "us", false)
	if err != nil || plan.Executed || !slices.Equal(plan.EntityTypes, []string{"order"}) || plan.FromApplied == 0 {
		t.Fatalf("dry run: %+v, %v", plan, err)
	}
	if _, err := pw.primary("us").Write(ctx, "order", "o1", primary.AnyVersion, ev("x")); !errors.Is(err, primary.ErrUnavailable) {
		t.Fatalf("a write after the dry run: %v; want ErrUnavailable (nothing moved)", err)
	}

	plan, err = pw.primary("us").Failover(ctx, "eu", "us", true)
	if err != nil || !plan.Executed {
		t.Fatalf("failover: %+v, %v", plan, err)
	}
	if w := mustWrite(t, pw.primary("us"), "order", "o1", "3"); w.Region != "us" || w.Versions[0] != 4 {
		t.Fatalf("write after the failover: %+v", w)
	}
	mustWrite(t, pw.primary("us"), "order", "o2", "new")
	pw.awaitPinnedTo("ap", "order", "us")
	if w := mustWrite(t, pw.primary("ap"), "order", "o1", "4"); w.Region != "us" {
		t.Fatalf("write in ap landed in %s, want us", w.Region)
	}
	// ap takes the request-region entity eu owned over from us.
	mustWrite(t, pw.primary("ap"), "account", "a1", "ap1")
	o1 := "[1:eu:1 2:eu:2 3:us:handover 4:us:3 5:us:4] owner us, 0 outside"
	pw.awaitHistory("us", "order", "o1", o1)
	pw.awaitHistory("us", "order", "o2", "[1:us:handover 2:us:new] owner us, 0 outside")
	pw.awaitHistory("us", "account", "a1", "[1:eu:eu1 2:us:handover 3:us:handover 4:ap:ap1] owner ap, 0 outside")

	// The record survives a restart of us.
	pw.restart("us")
	pw.awaitPinnedTo("us", "order", "us")
	pw.awaitHistory("us", "order", "o1", o1)

	watchUS := pw.watchConflicts("us")
	// eu comes back: it learns the failover from the history and is fenced.
	pw.restore("eu", "us")
	pw.restore("eu", "ap")
	pw.awaitPinnedTo("eu", "order", "us")
	// eu's lost event (version 3) is outside the history everywhere.
	fenced := "[1:eu:1 2:eu:2 3:us:handover 4:us:3 5:us:4] owner us, 1 outside"
	for _, n := range []string{"eu", "us", "ap"} {
		pw.awaitHistory(n, "order", "o1", fenced)
	}
	// o3, which nobody wrote since, does not take eu's late event either.
	failoverWait(t, "us holds eu's late event of o3", func() (bool, string) {
		evs, err := pw.Regions["us"].Producer.Journal().ReadEntity("order", "o3", 1, 10, nil)
		if err != nil {
			t.Fatal(err)
		}
		return len(evs) == 2, fmt.Sprint(len(evs), " events")
	})
	for _, n := range []string{"eu", "us", "ap"} {
		pw.awaitHistory(n, "order", "o3", "[1:eu:a] owner us, 0 outside")
	}
	if w := mustWrite(t, pw.primary("eu"), "order", "o1", "5"); w.Region != "us" {
		t.Fatalf("write in eu after the failover landed in %s, want us (forwarded)", w.Region)
	}
	want := []string{"eu>us:o1:lost", "eu>us:o3:lost3"}
	for _, n := range []string{"eu", "us"} {
		failoverWait(t, n+": conflicts", func() (bool, string) {
			cs, err := pw.primary(n).Conflicts(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return slices.Equal(failoverPayloads(cs), want), fmt.Sprint(failoverPayloads(cs))
		})
	}
	// A watcher reports each conflict once: those in the journal when it
	// starts (eu), and those that arrive later (us).
	pw.awaitConflicts(pw.watchConflicts("eu"), want)
	pw.awaitConflicts(watchUS, want)

	resp, err := pw.client("eu").Conflicts(ctx, &streamdv1.ConflictsRequest{})
	if err != nil || len(resp.Conflicts) != 2 || string(resp.Conflicts[0].Event.Payload) != "lost" || resp.Conflicts[0].Event.Origin != "eu" {
		t.Fatalf("Conflicts over gRPC: %v, %v", resp, err)
	}

	// Failing back: the same call the other way, in eu.
	if _, err := pw.primary("eu").Failover(ctx, "us", "eu", true); err != nil {
		t.Fatal(err)
	}
	if w := mustWrite(t, pw.primary("eu"), "order", "o1", "6"); w.Region != "eu" {
		t.Fatalf("write in eu after failing back landed in %s", w.Region)
	}
	pw.awaitPinnedTo("us", "order", "eu")
	back := "[1:eu:1 2:eu:2 3:us:handover 4:us:3 5:us:4 6:us:5 7:eu:handover 8:eu:6] owner eu, 1 outside"
	for _, n := range []string{"eu", "us", "ap"} {
		pw.awaitHistory(n, "order", "o1", back)
	}
	if w := mustWrite(t, pw.primary("us"), "order", "o2", "7"); w.Region != "eu" {
		t.Fatalf("write in us after failing back landed in %s, want eu", w.Region)
	}
	cs, err := pw.primary("eu").Conflicts(ctx)
	if err != nil || !slices.Equal(failoverPayloads(cs), want) {
		t.Fatalf("conflicts after failing back: %v, %v; want %v", failoverPayloads(cs), err, want)
	}
}

// The dry run reports, per region, how far it applied the failed region's
// journal, and the events no region applied.
func TestFailoverAtRisk(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us", "ap")
	pw.withProgress("us", oneJournal(12, 12))
	pw.withProgress("ap", oneJournal(10, 15))
	pw.cut("eu", "us")
	pw.cut("eu", "ap")
	plan, err := pw.primary("us").Failover(context.Background(), "eu", "us", false)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]uint64{}
	for _, rp := range plan.Progress {
		if !rp.Reachable {
			t.Fatalf("region %s unreachable: %v", rp.Region, rp.Err)
		}
		got[rp.Region] = [2]uint64{rp.Applied, rp.Known}
	}
	if len(got) != 2 || got["us"] != [2]uint64{12, 12} || got["ap"] != [2]uint64{10, 15} || plan.AtRisk != 3 {
		t.Fatalf("progress %v, at risk %d; want us 12/12, ap 10/15, 3 at risk", got, plan.AtRisk)
	}
	pw.cut("us", "ap")
	plan, err = pw.primary("us").Failover(context.Background(), "eu", "us", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, rp := range plan.Progress {
		if rp.Region == "ap" && (rp.Reachable || rp.Err == nil) {
			t.Fatalf("ap cut off: %+v", rp)
		}
	}
	if plan.AtRisk != 0 {
		t.Fatalf("at risk with ap cut off: %d; want 0 (us applied all it knows of)", plan.AtRisk)
	}
}

// oneJournal is the progress of a replication from eu's one journal.
func oneJournal(applied, known uint64) primary.ProgressFunc {
	return journals(primary.JournalProgress{JournalID: []byte("eu-0"), Applied: applied, Known: known})
}

// journals is the progress of a replication from eu's journals js.
func journals(js ...primary.JournalProgress) primary.ProgressFunc {
	return func(source string) ([]primary.JournalProgress, bool) {
		if source != "eu" {
			return nil, false
		}
		return js, true
	}
}

// A source region of two journals (two pods sharing its entities): the
// events at risk are counted per journal, the most a reachable region
// knows it holds minus the most one applied, summed; offsets of different
// journals are never compared, and each region's Journals reach the plan.
func TestFailoverAtRiskPerJournal(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us", "ap")
	pw.withProgress("us", journals(
		primary.JournalProgress{JournalID: []byte("eu-1"), Applied: 3, Known: 8},
		primary.JournalProgress{JournalID: []byte("eu-0"), Applied: 10, Known: 10}))
	pw.withProgress("ap", journals(
		primary.JournalProgress{JournalID: []byte("eu-0"), Applied: 7, Known: 12},
		primary.JournalProgress{JournalID: []byte("eu-1"), Applied: 6, Known: 6}))
	pw.cut("eu", "us")
	pw.cut("eu", "ap")
	plan, err := pw.primary("us").Failover(context.Background(), "eu", "us", false)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, rp := range plan.Progress {
		got[rp.Region] = fmt.Sprintf("%d/%d %s", rp.Applied, rp.Known, describeJournals(rp.Journals))
	}
	want := map[string]string{"us": "13/18 [eu-0 10/10 eu-1 3/8]", "ap": "13/18 [eu-0 7/12 eu-1 6/6]"}
	if !maps.Equal(got, want) {
		t.Fatalf("progress %v; want %v", got, want)
	}
	// eu-0: 12 known, 10 applied; eu-1: 8 known, 6 applied. (The sums
	// would say 18 - 13 = 5.)
	if plan.AtRisk != 4 {
		t.Fatalf("at risk %d; want 4 (2 of each journal)", plan.AtRisk)
	}
	resp, err := pw.client("us").Failover(context.Background(), &streamdv1.FailoverRequest{From: "eu", To: "us"})
	if err != nil || resp.AtRisk != 4 || len(resp.Progress) != 2 || len(resp.Progress[1].Journals) != 2 || string(resp.Progress[1].Journals[1].JournalId) != "eu-1" {
		t.Fatalf("over gRPC: %v, %v", resp, err)
	}
}

func describeJournals(js []primary.JournalProgress) string {
	var out []string
	for _, j := range js {
		out = append(out, fmt.Sprintf("%s %d/%d", j.JournalID, j.Applied, j.Known))
	}
	return fmt.Sprint(out)
}

// conflictObserver receives "from entityType" per conflict reported.
type conflictObserver chan string

func (o conflictObserver) Forwarded(string)    {}
func (o conflictObserver) TookOver(string)     {}
func (o conflictObserver) CRDTOps(string, int) {}
func (o conflictObserver) Conflict(from, entityType string) {
	o <- from + " " + entityType
}

// watchConflicts runs WatchConflicts on region n's journal (with a Primary
// of its own) until the test ends, and returns what it reports.
func (pw *primaryWorld) watchConflicts(n string) conflictObserver {
	t := pw.T.(*testing.T)
	obs := make(conflictObserver, 10)
	p, err := primary.New(primary.Options{Journal: pw.Regions[n].Producer.Journal(), Config: pw.cfg, Regions: pw.regionsOf(n), Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.WatchConflicts(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("WatchConflicts in %s returned %v; want context.Canceled", n, err)
		}
		p.Close()
	})
	return obs
}

// awaitConflicts waits for one report per conflict of want (all of type
// order, from eu) and checks that no other comes.
func (pw *primaryWorld) awaitConflicts(obs conflictObserver, want []string) {
	t := pw.T.(*testing.T)
	t.Helper()
	awaitObserved(t, obs, len(want))
}

// The failover records' entity type is reserved: the config cannot list
// it, and a default mode does not make it a type of the config.
func TestFailoverEntityTypeReserved(t *testing.T) {
	cfg := primary.Config{EntityTypes: []primary.EntityType{{Name: primary.FailoverEntityType, Mode: primary.ModeLocal}}}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "reserved for failover records") {
		t.Fatalf("Validate: %v; want the entity type refused as reserved", err)
	}
	cfg = primary.Config{DefaultMode: primary.ModePinned, DefaultPrimary: "eu"}
	if _, ok := cfg.Lookup(primary.FailoverEntityType); ok {
		t.Fatal("Lookup found the failover records' entity type under default_mode pinned")
	}
}

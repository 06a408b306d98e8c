package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/streamd/streamd/internal/testwait"
)

// The pipeline from the example's config files, real streamd processes:
// two edges aggregate their cars' readings, the cloud replicates the
// summaries alone through the counting proxies. The link carries at most
// 2% of the raw bytes; raising the detail for sports cars brings sports
// readings and no others; after its expiry the link is back to summaries.
// At the end the summaries in each edge journal equal those recomputed
// from its raw readings, and the cloud holds the same ones.
func TestPipelineFromConfig(t *testing.T) {
	const windowLen, grace = 2 * time.Second, 500 * time.Millisecond
	sys := startTestSystem(t, options{regions: []string{"eu", "us"}, cars: 150, rate: 5, speed: 1,
		edgeConfig: testConfig(t, "2s", "500ms")})
	start := sys.read()
	stopSims := background(t, sys.runSims)
	stopWatch := background(t, sys.runWatch)
	rounds := func(n int) int64 { return int64(n * len(sys.edges) * len(categories)) }

	// Summaries only.
	testwait.For(t, 60*time.Second, "two rounds of summaries in the cloud", func() bool {
		return sys.watch.arrivals().Summary.Events >= rounds(2)
	})
	summariesOnly := sys.read()
	checkLink(t, "summaries only", start, summariesOnly)
	if raw := summariesOnly.cloud.Raw; raw.Events != 0 {
		t.Errorf("%d raw readings reached the cloud with no detail raised", raw.Events)
	}

	// Raise the detail for sports cars, for a few seconds.
	ctx := context.Background()
	c, err := sys.raiseDetail(ctx, "include tag=sports ttl=4s")
	if err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 30*time.Second, "sports readings in the cloud", func() bool {
		return sys.watch.arrivals().RawBy["sports"].Events > 0
	})
	expiry := time.Unix(0, c.ExpiresAtUnixNano)
	testwait.For(t, 30*time.Second, "the expiry", func() bool { return time.Now().After(expiry.Add(time.Second)) })
	afterExpiry := sys.read()
	if by := afterExpiry.cloud.RawBy; len(by) != 1 || by["sports"].Events == 0 {
		t.Errorf("raw readings in the cloud by category: %v, want only sports", by)
	}
	testwait.For(t, 60*time.Second, "two more rounds of summaries", func() bool {
		return sys.watch.arrivals().Summary.Events >= afterExpiry.cloud.Summary.Events+rounds(2)
	})
	end := sys.read()
	checkLink(t, "after the expiry", afterExpiry, end)
	if by := end.cloud.RawBy; len(by) != 1 {
		t.Errorf("raw readings in the cloud by category: %v, want only sports", by)
	}
	t.Logf("detail phase: %d sports readings reached the cloud; link %d bytes for %d raw bytes published",
		afterExpiry.cloud.Raw.Events-summariesOnly.cloud.Raw.Events, afterExpiry.tcp()-summariesOnly.tcp(), afterExpiry.raw.Bytes-summariesOnly.raw.Bytes)

	// Stop the cars, let the stages and the cloud catch up, and compare.
	if err := stopSims(); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, sys)
	var written uint64
	for _, e := range sys.edges {
		written += stageOf(t, e).Summaries
	}
	testwait.For(t, 30*time.Second, "every summary in the cloud", func() bool {
		return sys.watch.arrivals().Summary.Events >= int64(written)
	})
	if err := stopWatch(); err != nil {
		t.Fatal(err)
	}
	if err := sys.close(); err != nil {
		t.Fatal(err)
	}
	cloud := openJournal(t, sys, cloudName)
	for _, e := range sys.edges {
		j := openJournal(t, sys, e.name)
		want, late := recompute(t, readAll(t, j), windowLen, grace)
		if len(want) < 3*len(categories) || late != 0 {
			t.Fatalf("%s: %d closed windows, %d late readings: want several windows and no late reading (the cars publish in time order)", e.name, len(want), late)
		}
		sameSummaries(t, e.name+" journal", summariesIn(t, j, e.name), want)
		sameSummaries(t, "cloud journal, from "+e.name, summariesIn(t, cloud, e.name), want)
	}
}

// checkLink checks that the links carried at most 2% of the raw bytes
// between two readings.
func checkLink(t *testing.T, phase string, from, to reading) {
	t.Helper()
	raw, tcp := to.raw.Bytes-from.raw.Bytes, to.tcp()-from.tcp()
	ratio := float64(tcp) / float64(raw)
	t.Logf("%s, %.1fs: raw %d events, %d bytes; link %d bytes (%d to the cloud, %d back): %.3f%% of raw",
		phase, to.at.Sub(from.at).Seconds(), to.raw.Events-from.raw.Events, raw, tcp, to.tcpDown-from.tcpDown, to.tcpUp-from.tcpUp, 100*ratio)
	if raw == 0 || ratio > 0.02 {
		t.Errorf("%s: the link carried %d bytes for %d raw bytes (%.2f%%), want <= 2%%", phase, tcp, raw, 100*ratio)
	}
}

// The edge's streamd is SIGKILLed again and again while cars publish, each
// time with windows open (mid-window), and restarted. Its journal ends up
// with each closed window's summary exactly once, seqNrs without a gap,
// equal to the summaries recomputed from the raw readings.
func TestStageExactlyOnceAcrossSIGKILL(t *testing.T) {
	const windowLen, grace = time.Second, 200 * time.Millisecond
	kills := 10
	if *long {
		kills = 50
	}
	sys := startTestSystem(t, options{regions: []string{"eu"}, cars: 30, rate: 10, speed: 1,
		edgeConfig:  testConfig(t, "1s", "200ms"),
		cloudConfig: bytes.ReplaceAll(cloudConfig, []byte("  - from: us\n    addrs: [\"US_ADDR\"]\n    filter: [\"include type=car-summary\"]\n"), nil)})
	e := sys.edges[0]
	stopSims := background(t, sys.runSims)
	rng := rand.New(rand.NewPCG(1, 2))
	var before uint64
	for k := range kills {
		// Kill at a random point, after the stage wrote a summary since the
		// last restart, with windows open.
		events := e.sim.events.Load() + 20 + rng.Int64N(400)
		testwait.For(t, 60*time.Second, fmt.Sprintf("kill %d: a new summary and more readings", k+1), func() bool {
			st := stageOf(t, e)
			return st.Summaries > before && st.OpenWindows > 0 && e.sim.events.Load() >= events
		})
		before = stageOf(t, e).Summaries
		e.d.kill()
		if err := e.d.start(); err != nil {
			t.Fatalf("restart %d: %v", k+1, err)
		}
	}
	if err := stopSims(); err != nil {
		t.Fatal(err)
	}
	waitCaughtUp(t, sys)
	if err := sys.close(); err != nil {
		t.Fatal(err)
	}
	j := openJournal(t, sys, e.name)
	want, late := recompute(t, readAll(t, j), windowLen, grace)
	got := summariesIn(t, j, e.name)
	t.Logf("%d kills; %d summaries, %d recomputed, %d late readings", kills, len(got), len(want), late)
	if len(want) < kills*len(categories) {
		t.Errorf("only %d closed windows for %d kills", len(want), kills)
	}
	sameSummaries(t, "edge journal after the kills", got, want)
}

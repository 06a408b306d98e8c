package main

import (
	"math"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	hundred := make([]int64, 100)
	for i := range hundred {
		hundred[i] = int64(i + 1)
	}
	for _, tc := range []struct {
		vals []int64
		p    float64
		want int64
	}{
		{[]int64{7}, 0.5, 7},
		{[]int64{7}, 0.999, 7},
		{[]int64{1, 2}, 0.5, 1},
		{[]int64{1, 2, 3, 4}, 0.5, 2},
		{[]int64{1, 2, 3, 4}, 0.99, 4},
		{hundred, 0.50, 50},
		{hundred, 0.99, 99},
		{hundred, 0.999, 100},
		{nil, 0.5, 0},
	} {
		if got := percentile(tc.vals, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %g) = %d, want %d", tc.vals, tc.p, got, tc.want)
		}
	}
}

func TestSummarizeSorts(t *testing.T) {
	l := summarize([]int64{5, 1, 4, 2, 3})
	if l.Count != 5 || l.P50 != 3 || l.Max != 5 {
		t.Fatalf("summarize = %+v", l)
	}
	if summarize(nil) != nil {
		t.Fatal("summarize(nil) != nil")
	}
}

func TestPayloadStamp(t *testing.T) {
	ts := time.Unix(1700000000, 123456789)
	p := newPayload(ts)
	if len(p) != payloadSize {
		t.Fatalf("payload is %d bytes, want %d", len(p), payloadSize)
	}
	if got, ok := payloadTime(p); !ok || got != ts.UnixNano() {
		t.Fatalf("payloadTime = %d, %v; want %d", got, ok, ts.UnixNano())
	}
	if _, ok := payloadTime([]byte{1, 2}); ok {
		t.Fatal("a 2-byte payload carries no stamp")
	}
}

func TestTaggedCount(t *testing.T) {
	for _, n := range []int{1, 99, 100, 101, 1000, 12345} {
		got := 0
		for i := range n {
			if tagged(i) {
				got++
			}
		}
		if got != taggedCount(n) {
			t.Errorf("taggedCount(%d) = %d, counted %d", n, taggedCount(n), got)
		}
	}
}

func TestParseRates(t *testing.T) {
	got, err := parseRates("1000, 10000,50000")
	if err != nil || len(got) != 3 || got[2] != 50000 {
		t.Fatalf("parseRates = %v, %v", got, err)
	}
	for _, bad := range []string{"", "x", "0", "-5", "10,,y"} {
		if _, err := parseRates(bad); err == nil {
			t.Errorf("parseRates(%q) accepted", bad)
		}
	}
}

func TestParseFlagsQuick(t *testing.T) {
	cfg, err := parseFlags([]string{"-quick", "-latency-duration", "3s"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.catchupEvents != 100_000 || cfg.publishDuration != 2*time.Second {
		t.Errorf("-quick sizes not applied: %+v", cfg)
	}
	if cfg.latencyDuration != 3*time.Second {
		t.Errorf("an explicit flag must win over -quick: latency-duration %s", cfg.latencyDuration)
	}
	for _, args := range [][]string{{"-only", "nope"}, {"-in-flight", "0"}, {"-fanout-rate", "-1"}, {"-flush-floor", "-1ms"}, {"extra"}} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}

func TestFormatting(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -1500: "-1,500"} {
		if got := fmtInt(v); got != want {
			t.Errorf("fmtInt(%g) = %q, want %q", v, got, want)
		}
	}
	if got := ratio(1, 4); got != "0.25" {
		t.Errorf("ratio(1, 4) = %q", got)
	}
	if got := ratio(1, 0); got != "—" {
		t.Errorf("ratio(1, 0) = %q", got)
	}
	if got := ratio(math.NaN(), 1); got != "—" {
		t.Errorf("ratio(NaN, 1) = %q", got)
	}
}

package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamd/streamd/internal/streamdtest"
)

// BenchmarkFailover measures the failover time of a region: from
// `streamctl primary failover --from eu --to us --execute`, run against us
// once eu's streamd is killed (SIGKILL), to the first write us accepts of
// an entity eu wrote. Each run starts two streamd processes (eu, the
// primary of order, and us) afresh; the report is p50 and p99 over the
// runs (go test -run '^$' -bench BenchmarkFailover -benchtime=20x
// ./cmd/streamctl).
func BenchmarkFailover(b *testing.B) {
	if _, err := streamdtest.Binary(); err != nil {
		b.Fatal(err)
	}
	var times []time.Duration
	for b.Loop() {
		times = append(times, failoverOnce(b))
	}
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(times[(len(times)*99)/100].Microseconds())/1000, "p99-ms")
}

// failoverOnce runs eu and us, writes order/o1 in eu, kills eu and returns
// the time from the failover command to us's first accepted write.
func failoverOnce(b *testing.B) time.Duration {
	b.Helper()
	dir := b.TempDir()
	eu, us := failoverAddr(b), failoverAddr(b)
	config := fmt.Sprintf("regions:\n  - {name: us, addrs: [%q]}\n  - {name: eu, addrs: [%q]}\ndefault_primary: eu\nentity_types:\n  - {name: order, mode: pinned, primary: eu}\n", us, eu)
	path := filepath.Join(dir, "project.yaml")
	if err := os.WriteFile(path, []byte(config), 0o644); err != nil {
		b.Fatal(err)
	}
	start := func(region, addr string) *streamdtest.Daemon {
		return streamdtest.Start(b, streamdtest.Options{DataDir: filepath.Join(dir, region), Args: []string{"--region", region, "--config", path, "--listen", addr}})
	}
	euD := start("eu", eu)
	usD := start("us", us)
	defer usD.Kill()
	failoverCtl(b, "--addr", us, "publish", "--type", "order", "--entity", "o1", "--event-type", "Placed", "--data", "x")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(failoverCtl(b, "--addr", us, "primary", "get", "--type", "order", "--entity", "o1"), "version:      1") {
		if time.Now().After(deadline) {
			b.Fatal("us did not replicate order/o1 from eu within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	euD.Kill()
	began := time.Now()
	failoverCtl(b, "--addr", us, "primary", "failover", "--from", "eu", "--to", "us", "--execute")
	for {
		var out, errOut bytes.Buffer
		code := run([]string{"streamctl", "--addr", us, "publish", "--type", "order", "--entity", "o1", "--event-type", "Paid", "--data", "y"}, strings.NewReader(""), &out, &errOut)
		if code == 0 {
			return time.Since(began)
		}
		if time.Since(began) > 30*time.Second {
			b.Fatalf("no write accepted in us 30s after the failover: %s", errOut.String())
		}
		time.Sleep(time.Millisecond) // a poll interval: the condition is the accepted write
	}
}

// failoverCtl runs the command in-process and returns its output, failing
// the benchmark if it fails.
func failoverCtl(b *testing.B, args ...string) string {
	b.Helper()
	var out, errOut bytes.Buffer
	if code := run(append([]string{"streamctl"}, args...), strings.NewReader(""), &out, &errOut); code != 0 {
		b.Fatalf("streamctl %v: exit %d: %s", args, code, errOut.String())
	}
	return out.String()
}

// failoverAddr is a loopback address nothing listens on now.
func failoverAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

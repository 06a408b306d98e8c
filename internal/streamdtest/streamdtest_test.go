package streamdtest_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/streamd/streamd/internal/streamdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(streamdtest.M(m)) }

func serving(t *testing.T, addr string) bool {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err == nil && h.Status == healthpb.HealthCheckResponse_SERVING
}

// A daemon is reachable at the addresses of its ready file, stops with the
// exit code of the signal, and restarts on the same data directory.
func TestStartStopRestart(t *testing.T) {
	dir := t.TempDir()
	d := streamdtest.Start(t, streamdtest.Options{DataDir: dir, Metrics: true})
	if !serving(t, d.Addr) {
		t.Fatalf("streamd at %s (its ready file) does not serve", d.Addr)
	}
	if d.MetricsAddr == "" || d.MetricsAddr == d.Addr {
		t.Fatalf("metrics address %q with Metrics set", d.MetricsAddr)
	}
	if err := d.Stop(t, syscall.SIGTERM, 30*time.Second); err != nil || d.ExitCode() != 0 {
		t.Fatalf("after SIGTERM: %v (exit code %d), want a clean exit; %s", err, d.ExitCode(), d.Log())
	}
	if !strings.Contains(d.Log(), "streamd serving") {
		t.Fatalf("the log kept of streamd lacks its serving line:\n%s", d.Log())
	}
	d2 := d.Restart(t)
	if d2.DataDir() != dir || !serving(t, d2.Addr) {
		t.Fatalf("restarted on %q at %s: not serving the same data directory", d2.DataDir(), d2.Addr)
	}
	if d2.MetricsAddr == "" {
		t.Fatal("the restart lost Options.Metrics")
	}
	d2.Stop(t, syscall.SIGKILL, 30*time.Second)
	if d2.ExitCode() != -1 {
		t.Fatalf("exit code after SIGKILL = %d, want -1 (killed)", d2.ExitCode())
	}
}

// Without Metrics the daemon serves none, and an empty MetricsAddr says so.
func TestNoMetrics(t *testing.T) {
	d := streamdtest.Start(t, streamdtest.Options{DataDir: t.TempDir()})
	if d.MetricsAddr != "" {
		t.Fatalf("MetricsAddr %q without Options.Metrics", d.MetricsAddr)
	}
}

// A daemon that cannot start is reported with what it said.
func TestRunReportsAFailedStart(t *testing.T) {
	d, err := streamdtest.Run(streamdtest.Options{DataDir: t.TempDir(), Args: []string{"--durability", "maybe"}})
	if d != nil {
		defer d.Kill()
	}
	if err == nil || !strings.Contains(err.Error(), "--durability") || !strings.Contains(err.Error(), "exited before it was ready") {
		t.Fatalf("Run with a bad flag: %v, want an error quoting streamd's message", err)
	}
}

func TestBinaryIsExecutable(t *testing.T) {
	bin, err := streamdtest.Binary()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("Binary() = %s: %v, want an executable", bin, err)
	}
}

// Lines keeps the last lines, and the beginning of a crash report even
// after the goroutine dump that follows it has pushed it out of them.
func TestLinesKeepsTheCrashReport(t *testing.T) {
	var l streamdtest.Lines
	l.Add("starting")
	l.Add("panic: boom")
	for i := range 1000 {
		l.Add(fmt.Sprintf("goroutine %d", i))
	}
	all := strings.Split(l.String(), "\n")
	if len(all) > 400 || all[len(all)-1] != "goroutine 999" {
		t.Fatalf("kept %d lines ending with %q, want at most 400 ending with the last", len(all), all[len(all)-1])
	}
	if strings.Contains(l.String(), "panic: boom") {
		t.Fatal("the oldest lines were not dropped")
	}
	crash := strings.Split(l.CrashReport(), "\n")
	if len(crash) != 40 || crash[0] != "panic: boom" || crash[39] != "goroutine 38" {
		t.Fatalf("crash report %q, want 40 lines from the panic", crash)
	}
}

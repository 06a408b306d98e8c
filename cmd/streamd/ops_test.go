package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"errors"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	streamdbuild "github.com/streamd/streamd/internal/buildinfo"
	"github.com/streamd/streamd/internal/testwait"
)

// binaryBuild is the version and revision the streamd binary under test
// was built with, read from the binary itself.
func binaryBuild(t *testing.T) streamdbuild.Info {
	t.Helper()
	bi, err := buildinfo.ReadFile(binary)
	if err != nil {
		t.Fatal(err)
	}
	return streamdbuild.From(bi)
}

func TestVersionFlag(t *testing.T) {
	want := "streamd " + binaryBuild(t).String() + "\n"
	for _, flag := range []string{"--version", "-v"} {
		out, err := exec.Command(binary, flag).Output()
		if err != nil || string(out) != want {
			t.Errorf("streamd %s: %q, %v; want %q", flag, out, err, want)
		}
	}
}

// The server's build: in a response header of every call, and as a metric.
func TestBuildHeaderAndMetric(t *testing.T) {
	want := binaryBuild(t)
	d := startDaemon(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var md metadata.MD
	if _, err := healthpb.NewHealthClient(d.conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md)); err != nil {
		t.Fatal(err)
	}
	if v, r := md.Get(streamdbuild.VersionHeader), md.Get(streamdbuild.RevisionHeader); len(v) != 1 || v[0] != want.Version || len(r) != 1 || r[0] != want.Revision {
		t.Errorf("header %v, want version %q revision %q", md, want.Version, want.Revision)
	}
	mf := scrape(t, d.MetricsAddr)["streamd_build_info"]
	if mf == nil || len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Fatalf("streamd_build_info: %v", mf)
	}
	labels := map[string]string{}
	for _, l := range mf.GetMetric()[0].GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if labels["version"] != want.Version || labels["revision"] != want.Revision || labels["goversion"] != want.GoVersion {
		t.Errorf("streamd_build_info labels %v, want %+v", labels, want)
	}
}

// A flag error is one line and the usage hint, exit code 2; sizes take units.
func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"--bogus"}, "", "streamd: flag provided but not defined: -bogus"},
		{[]string{"--memtable-size", "64M"}, "", `streamd: invalid value "64M" for flag -memtable-size: bytesize: want bytes, or a whole number with a unit: 512KiB, 64MiB, 1GiB, 1GB; got "64M"`},
		{nil, "STREAMD_MAX_PAYLOAD_BYTES=lots", `streamd: could not parse "lots" from environment variable "STREAMD_MAX_PAYLOAD_BYTES" as value for flag max-payload-bytes: bytesize: want bytes, or a whole number with a unit: 512KiB, 64MiB, 1GiB, 1GB; got "lots"`},
		// Units reach the checks: 8MiB of memtable needs about 16MiB free.
		{[]string{"--memtable-size", "8MiB", "--min-free-bytes", "10MiB"}, "", "streamd: --min-free-bytes 10MiB: want 0 (the default) or at least 16441664 (16 MiB) with --memtable-size 8MiB"},
		{[]string{"--min-free-bytes", "-1"}, "", `streamd: invalid value "-1" for flag -min-free-bytes: bytesize: want bytes`},
		{[]string{"--max-batch-bytes", "9MiB"}, "", "streamd: --max-batch-bytes 9MiB:"},
		{[]string{"--durability", "often"}, "", "streamd: --durability:"},
		{[]string{"--memory", "32MiB"}, "", "streamd: --memory 32MiB: want at least 64MiB"},
		{[]string{"extra"}, "", `streamd: unexpected argument "extra"`},
	} {
		cmd := exec.Command(binary, append([]string{"--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--metrics-listen", ""}, tc.args...)...)
		if tc.env != "" {
			cmd.Env = append(cmd.Environ(), tc.env)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("streamd %q %s: %v, want exit code 2; stderr:\n%s", tc.args, tc.env, err, stderr.String())
			continue
		}
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[0], tc.want) || lines[1] != "Run 'streamd --help' for usage." {
			t.Errorf("streamd %q %s: stderr\n%s\nwant one line beginning %q and the usage hint", tc.args, tc.env, stderr.String(), tc.want)
		}
	}
}

// Sizes with units, from flags and the environment, start streamd.
func TestSizeUnits(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--memtable-size", "8MiB", "--min-free-bytes", "17MiB", "--max-payload-bytes", "512KiB", "--retention-max-bytes", "1GB")
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

// Each help line shows its default once.
func TestHelpDefaultsOnce(t *testing.T) {
	out, err := exec.Command(binary, "--help").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Count(line, "(default") > 1 {
			t.Errorf("two defaults: %s", line)
		}
	}
	for _, want := range []string{"(default: a sixteenth of --memory)", "(default: 256MiB)", "(default: 80MiB)", "(default: 1MiB)", "(default: 4MiB)", "(default: the rate, at least 1)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
}

// Every served service has a health status; all turn NOT_SERVING on
// SIGTERM, before streams end.
func TestHealthPerService(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hc := healthpb.NewHealthClient(d.conn)
	for _, s := range []string{"", "streamd.v1.EventStreamService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		h, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: s})
		if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: %v %v; want SERVING", s, h, err)
		}
	}
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "streamd.v1.EventStreamService"})
	if err != nil {
		t.Fatal(err)
	}
	if h, err := w.Recv(); err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v; want SERVING", h, err)
	}
	syscall.Kill(d.PID(), syscall.SIGTERM)
	if h, err := w.Recv(); err != nil || h.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("watch after SIGTERM: %v %v; want NOT_SERVING", h, err)
	}
	if err := d.Wait(t, 30*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

// A failed journal turns every service NOT_SERVING.
func TestWatchJournal(t *testing.T) {
	hs := health.NewServer()
	services := []string{"", "streamd.v1.EventStreamService"}
	setHealth(hs, services, healthpb.HealthCheckResponse_SERVING)
	failed := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		watchJournal(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), hs, services, func() error {
			select {
			case err := <-failed:
				failed <- err // failed for good
				return err
			default:
				return nil
			}
		}, time.Millisecond)
	}()
	defer func() { cancel(); <-done }()
	status := func(s string) healthpb.HealthCheckResponse_ServingStatus {
		h, err := hs.Check(context.Background(), &healthpb.HealthCheckRequest{Service: s})
		if err != nil {
			t.Fatal(err)
		}
		return h.Status
	}
	for _, s := range services {
		if st := status(s); st != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("%q before the failure: %v", s, st)
		}
	}
	failed <- errors.New("journal: failed after a write or fsync error; reopen it: test")
	for _, s := range services {
		if !testwait.Until(10*time.Second, func() bool { return status(s) == healthpb.HealthCheckResponse_NOT_SERVING }) {
			t.Fatalf("%q after the failure: %v, want NOT_SERVING", s, status(s))
		}
	}
}

// A budget that starts: --memory sets the journal's sizes and the Go
// runtime's limit, and streamd serves within it.
func TestMemoryFlag(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--memory", "128MiB")
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

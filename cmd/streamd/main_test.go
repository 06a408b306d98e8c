package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/internal/streamdtest"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// binary is the streamd the tests run, built once.
var binary string

func TestMain(m *testing.M) {
	var err error
	if binary, err = streamdtest.Binary(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(streamdtest.M(m).Run())
}

// daemon is a running streamd process with a plaintext connection to it,
// without credentials.
type daemon struct {
	*streamdtest.Daemon
	conn *grpc.ClientConn
}

// startDaemon runs streamd on dataDir with gRPC and metrics on ephemeral
// ports; it is killed when the test ends.
func startDaemon(t testing.TB, dataDir string, args ...string) *daemon {
	t.Helper()
	d := &daemon{Daemon: streamdtest.Start(t, streamdtest.Options{DataDir: dataDir, Args: args, Metrics: true})}
	var err error
	if d.conn, err = grpc.NewClient(d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.conn.Close() })
	return d
}

// stop signals streamd and waits for its exit.
func (d *daemon) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	return d.Stop(t, sig, 30*time.Second)
}

func TestHealthAndReflection(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h, err := healthpb.NewHealthClient(d.conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}
	rc, err := reflectionpb.NewServerReflectionClient(d.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	r, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	services := map[string]bool{}
	for _, s := range r.GetListServicesResponse().GetService() {
		services[s.Name] = true
	}
	for _, want := range []string{"streamd.v1.EventStreamService", "grpc.health.v1.Health"} {
		if !services[want] {
			t.Fatalf("reflection lists %v, missing %s", services, want)
		}
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

// SIGTERM during a publish load: streamd exits 0 and every acknowledged
// event is in the journal afterwards.
func TestSIGTERMUnderLoadLosesNothing(t *testing.T) {
	dir := t.TempDir()
	d := startDaemon(t, dir)
	client := streamdv1.NewEventStreamServiceClient(d.conn)
	var mu sync.Mutex
	acked := map[uint64]string{}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for w := range 16 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				res, err := client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{
					EntityType: "load", EntityId: fmt.Sprint("w", w), EventType: "E", Payload: []byte(id)}}})
				if err != nil {
					return // refused or cut off: not acknowledged
				}
				mu.Lock()
				acked[res.Appended[0].Offset] = id
				mu.Unlock()
			}
		})
	}
	testwait.For(t, 20*time.Second, "500 publishes acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 500
	})
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	cancel()
	wg.Wait()

	j, err := journal.Open(dir, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for off, id := range acked {
		evs, err := j.Read(off, 1, nil)
		if err != nil || len(evs) != 1 || string(evs[0].Payload) != id {
			t.Fatalf("acknowledged event %s at offset %d lost: %v %v", id, off, evs, err)
		}
	}
	t.Logf("%d acknowledged publishes, all present after SIGTERM", len(acked))
}

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--durability", "maybe"},
		{"--log-level", "loud"},
		{"--listen", "not-an-address"},
		{"--metrics-listen", "not-an-address"},
		{"--max-payload-bytes", "0"},
		{"--max-batch-bytes", "99999999"},
		{"--max-filter-criteria", "-1"},
		{"--rate-limit", "-1"},
		{"--handshake-timeout", "0s"},
		{"--max-streams-per-conn", "0"},
		{"--max-known-consumers", "0"},
		{"--known-consumer-max-age", "0s"},
		{"--metrics-named-consumers", "-1"},
	} {
		out, err := exec.Command(binary, append([]string{"--data-dir", t.TempDir()}, args...)...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Fatalf("%v: want a non-zero exit, got %v: %s", args, err, out)
		}
		if len(out) == 0 {
			t.Fatalf("%v: no error message", args)
		}
	}
}

func TestLimitFlags(t *testing.T) {
	d := startDaemon(t, t.TempDir(), "--max-payload-bytes", "10", "--max-batch-events", "2", "--max-filter-criteria", "2")
	client := streamdv1.NewEventStreamServiceClient(d.conn)
	ctx := context.Background()
	ev := func(payload string) *streamdv1.Event {
		return &streamdv1.Event{EntityType: "car", EntityId: "c1", EventType: "Moved", Payload: []byte(payload)}
	}
	if _, err := client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{ev("0123456789")}}); err != nil {
		t.Fatalf("a payload at the limit: %v", err)
	}
	for name, req := range map[string]*streamdv1.PublishRequest{
		"payload over the limit": {Events: []*streamdv1.Event{ev("0123456789a")}},
		"batch over the limit":   {Events: []*streamdv1.Event{ev("a"), ev("b"), ev("c")}},
	} {
		_, err := client.Publish(ctx, req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "limit") {
			t.Errorf("%s: %v, want InvalidArgument naming the limit", name, err)
		}
	}

	// A filter with more criteria than allowed is refused at Init.
	st, err := client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var crits []*streamdv1.FilterCriterion
	for _, tag := range []string{"a", "b", "c"} {
		crits = append(crits, &streamdv1.FilterCriterion{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_TAG, Value: tag})
	}
	if err := st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
		StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST, ConsumerName: "t", Filter: crits}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "3 criteria, limit is 2") {
		t.Errorf("a filter of 3 criteria with --max-filter-criteria 2: %v, want InvalidArgument naming the limit", err)
	}
}

// --ready-file holds where streamd serves once it does, and is removed when
// it exits; a path streamd cannot write stops it, naming the flag.
func TestReadyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ready.json")
	cmd := exec.Command(binary, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", "--ready-file", path)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	exited := make(chan struct{})
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	var r map[string]string
	testwait.For(t, 30*time.Second, "the ready file", func() bool {
		b, err := os.ReadFile(path)
		return err == nil && json.Unmarshal(b, &r) == nil
	})
	conn, err := grpc.NewClient(r["grpc"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health at the ready file's grpc address %q: %v %v", r["grpc"], h, err)
	}
	res, err := http.Get("http://" + r["metrics"] + "/metrics")
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics at the ready file's metrics address %q: %v %v", r["metrics"], res, err)
	}
	res.Body.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	if <-exited; exitErr != nil {
		t.Fatalf("exit after SIGTERM: %v", exitErr)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the ready file after streamd exited: %v, want it removed", err)
	}

	out, err := exec.Command(binary, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--metrics-listen", "",
		"--ready-file", filepath.Join(t.TempDir(), "no-such-dir", "ready.json")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || !strings.Contains(string(out), "--ready-file") {
		t.Fatalf("a ready file in a missing directory: %v %s, want a non-zero exit naming --ready-file", err, out)
	}
}

// TestCheckConfig: --check-config prints what the flags and file run, or
// what is wrong with them, and opens and serves nothing either way.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "project.yaml")
	check := func(yaml string, args ...string) (string, int) {
		t.Helper()
		if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(dir, "data")
		// The listen address is taken: a check must not try it.
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer lis.Close()
		cmd := exec.Command(binary, append([]string{"--check-config", "--config", file, "--data-dir", data,
			"--listen", lis.Addr().String(), "--metrics-listen", lis.Addr().String()}, args...)...)
		out, err := cmd.CombinedOutput()
		if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the check made the data directory (%v): %s", err, out)
		}
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), code
	}
	project := `regions:
  - {name: us, addrs: ["127.0.0.1:1"], streams: 2}
  - {name: eu, addrs: ["127.0.0.1:2"]}
default_mode: pinned
default_primary: eu
entity_types:
  - {name: order, mode: pinned, primary: us}
  - {name: cart, mode: replicated, replication: on-demand}
streams:
  - {name: orders, entity_types: [order]}
`
	out, code := check(project, "--region", "eu")
	if code != 0 {
		t.Fatalf("valid: exit %d: %s", code, out)
	}
	for _, want := range []string{
		"streamd: the configuration is valid",
		"  region:        eu\n",
		"  journal:       " + filepath.Join(dir, "data") + ", durability sync\n",
		"  streams:       orders\n",
		"  replications:  region-us (from us, 2 streams), on-demand-us (from us, 1 stream)\n",
		"  entity types:  order pinned (us), cart replicated on demand, others pinned (eu)\n",
		"  aggregates:    none\n",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("valid: want %q in:\n%s", want, out)
		}
	}
	out, code = check(project) // no --region
	if code != 2 || !strings.Contains(out, "regions lists us, eu: name this region with --region") {
		t.Fatalf("without --region: exit %d: %s", code, out)
	}
	out, code = check("regions: [{name: us, adrs: [\"x:1\"]}]\n", "--region", "eu")
	if code != 2 || !strings.Contains(out, `line 1: unknown key "adrs" in an entry of regions:`) {
		t.Fatalf("typo: exit %d: %s", code, out)
	}
}

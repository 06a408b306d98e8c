package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "streamd-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "streamd")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build streamd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// daemon is a running streamd process.
type daemon struct {
	cmd         *exec.Cmd
	addr        string
	metricsAddr string
	conn        *grpc.ClientConn // plaintext, without credentials
	done        chan error
	stderr      stderrLines
}

// stderrLines keeps what a daemon wrote to stderr.
type stderrLines struct {
	mu    sync.Mutex
	lines []string
}

// tail returns the last n lines.
func (s *stderrLines) tail(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines[max(0, len(s.lines)-n):], "\n")
}

// find returns the first line matching re, or "".
func (s *stderrLines) find(re *regexp.Regexp) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if re.MatchString(l) {
			return l
		}
	}
	return ""
}

var listenRE = regexp.MustCompile(`grpc=(127\.0\.0\.1:\d+) metrics=(127\.0\.0\.1:\d+)`)

func startDaemon(t *testing.T, dataDir string, args ...string) *daemon {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"--data-dir", dataDir, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, done: make(chan error, 1)}
	found := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			d.stderr.mu.Lock()
			d.stderr.lines = append(d.stderr.lines, sc.Text())
			d.stderr.mu.Unlock()
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1:]:
				default:
				}
			}
		}
		d.done <- cmd.Wait()
	}()
	select {
	case m := <-found:
		d.addr, d.metricsAddr = m[0], m[1]
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("streamd did not say where it listens")
	}
	d.conn, err = grpc.NewClient(d.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.conn.Close()
		cmd.Process.Kill()
	})
	return d
}

func (d *daemon) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	d.cmd.Process.Signal(sig)
	select {
	case err := <-d.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("streamd did not exit")
	}
	return nil
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
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := len(acked)
		mu.Unlock()
		if n >= 500 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d publishes acknowledged", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
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

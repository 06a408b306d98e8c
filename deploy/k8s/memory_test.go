package k8s

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
	corev1 "k8s.io/api/core/v1"

	"github.com/streamd/streamd/internal/procstatus"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/publisher"
)

var (
	long         = flag.Bool("long", false, "publish 5,000,000 events in TestStreamdMemoryWithinPodLimit (default 300,000)")
	memoryEvents = flag.Int("memory-events", 0, "events TestStreamdMemoryWithinPodLimit publishes (overrides -long)")
	memoryCSV    = flag.String("memory-csv", "", "append TestStreamdMemoryWithinPodLimit's RSS curve to this CSV file")
)

// memoryEnv are the Go runtime's variables that change how much memory
// streamd takes (its own STREAMD_* ones are read through flagValue).
var memoryEnv = []string{"GOMEMLIMIT", "GOGC"}

// TestStreamdMemoryWithinPodLimit runs streamd as each distinct streamd
// container of the manifests runs it (its arguments and environment, so
// --memory, GOMEMLIMIT) and publishes 128-byte events through
// publisher.Publisher, as fast as four publishers with 256 events in flight
// each go: streamd's peak resident set (VmHWM: anonymous and file-backed
// pages) must stay under the container's memory limit, where the kubelet
// would OOM-kill it.
func TestStreamdMemoryWithinPodLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 300,000 events to a real streamd")
	}
	n := 300_000
	if *long {
		n = 5_000_000
	}
	if *memoryEvents > 0 {
		n = *memoryEvents
	}
	seen := map[string]bool{}
	for _, root := range roots {
		objs, err := render(root)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range objs.workloads() {
			for _, c := range allContainers(w.pod.Spec) {
				if c.Name != "streamd" {
					continue
				}
				limit := c.Resources.Limits.Memory().Value()
				if limit == 0 {
					t.Errorf("%s/%s: streamd has no memory limit", root, w.name)
					continue
				}
				settings := memorySettings(c)
				key := fmt.Sprint(limit, settings)
				if seen[key] {
					continue
				}
				seen[key] = true
				t.Run(root+"/"+w.name, func(t *testing.T) {
					d, err := startAsPod(t, w, c, objs)
					if err != nil {
						t.Fatal(err)
					}
					curve := publishMeasuring(t, d, n)
					if err := d.Stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
						t.Fatalf("after SIGTERM: %v\n%s", err, d.Log())
					}
					peak := curve[len(curve)-1]
					t.Logf("%s, limit %d MiB: %d events at %.0f/s, VmHWM %d MiB", settings, limit>>20, n, peak.rate, peak.hwm>>20)
					for _, p := range curve {
						t.Logf("  %9d events: VmRSS %4d MiB (anon %4d, file %4d), VmHWM %4d MiB", p.events, p.rss>>20, p.anon>>20, p.file>>20, p.hwm>>20)
					}
					if *memoryCSV != "" {
						if err := appendCurve(*memoryCSV, root+"/"+w.name, settings, limit, curve); err != nil {
							t.Error(err)
						}
					}
					if peak.hwm >= limit {
						t.Errorf("%s/%s: streamd's peak resident set %d MiB after %d events is not under the container's memory limit %d MiB (%s)",
							root, w.name, peak.hwm>>20, n, limit>>20, settings)
					}
				})
			}
		}
	}
}

// memorySettings names what decides streamd's memory in container c.
func memorySettings(c corev1.Container) string {
	var s []string
	for _, name := range []string{"memory", "memtable-size", "compression", "durability"} {
		if v := flagValue(c, name, ""); v != "" {
			s = append(s, "--"+name+"="+v)
		}
	}
	for _, e := range c.Env {
		if slices.Contains(memoryEnv, e.Name) {
			s = append(s, e.Name+"="+e.Value)
		}
	}
	if len(s) == 0 {
		return "defaults"
	}
	return strings.Join(s, " ")
}

// memoryPoint is streamd's resident set once events were acknowledged.
type memoryPoint struct {
	events               int
	rss, anon, file, hwm int64
	rate                 float64 // events/s since the start
}

// publishMeasuring publishes n events of 128 bytes to d with four
// Publishers, reading d's resident set at every tenth of them; the last
// point is after the last acknowledgement. Every event must be acknowledged
// and in the journal.
func publishMeasuring(t *testing.T, d *daemon, n int) []memoryPoint {
	t.Helper()
	const publishers = 4
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	// The manifests' token stand-in (secretStandIns), for a pod that requires one.
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer k8s-test-token")
	payload := make([]byte, 128)
	for i := range payload {
		payload[i] = 'a' + byte(i%26)
	}
	var acked atomic.Int64
	began := time.Now()
	var (
		mu    sync.Mutex
		curve []memoryPoint
		next  atomic.Int64 // the next count of events to measure at
	)
	next.Store(int64(n / 10))
	measure := func(events int) {
		s, err := procstatus.Read(d.PID())
		if err != nil {
			t.Error(err)
			return
		}
		curve = append(curve, memoryPoint{events, s["VmRSS"], s["RssAnon"], s["RssFile"], s["VmHWM"],
			float64(events) / time.Since(began).Seconds()})
	}
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for p := range publishers {
		wg.Go(func() {
			errs <- publishOne(ctx, d, p, publishers, n, payload, func() {
				if k := acked.Add(1); k >= next.Load() && k < int64(n) {
					mu.Lock()
					if k >= next.Load() {
						measure(int(k))
						next.Add(int64(n / 10))
					}
					mu.Unlock()
				}
			})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("publish: %v after %d acknowledged events\n%s", err, acked.Load(), d.Log())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	measure(n)
	if len(curve) == 0 || curve[len(curve)-1].events != n {
		t.Fatalf("no reading of streamd's memory after the last of %d events", n)
	}
	info, err := streamdv1.NewEventStreamServiceClient(d.conn).JournalInfo(ctx, &streamdv1.JournalInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Events != uint64(n) {
		t.Fatalf("journal holds %d events, want %d", info.Events, n)
	}
	return curve
}

// publishOne publishes events p, p+step, … below n with one Publisher, at
// most 256 awaiting their acknowledgement, calling acked for each.
func publishOne(ctx context.Context, d *daemon, p, step, n int, payload []byte, acked func()) error {
	const inFlight, entities = 256, 1000
	pub, err := publisher.New(ctx, d.conn, publisher.Options{})
	if err != nil {
		return err
	}
	acks := make(chan *publisher.Ack, inFlight)
	answered := make(chan error, 1)
	go func() {
		var first error
		for a := range acks {
			if _, err := a.Result(); err != nil && first == nil {
				first = err
			}
			acked()
		}
		answered <- first
	}()
	for i := p; i < n; i += step {
		acks <- pub.PublishAsync(&streamdv1.Event{EntityType: "acct", EntityId: "e" + strconv.Itoa(i%entities),
			EventType: "Deposited", Payload: payload})
	}
	close(acks)
	if err := <-answered; err != nil {
		return err
	}
	return pub.Close()
}

// appendCurve appends curve to the CSV file path, with a header if it is new.
func appendCurve(path, pod, settings string, limit int64, curve []memoryPoint) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if st, err := f.Stat(); err == nil && st.Size() == 0 {
		fmt.Fprintln(f, "pod,settings,limit_mib,events,vmrss_mib,rss_anon_mib,rss_file_mib,vmhwm_mib,events_per_s")
	}
	for _, p := range curve {
		fmt.Fprintf(f, "%s,%s,%d,%d,%d,%d,%d,%d,%.0f\n", pod, settings, limit>>20, p.events, p.rss>>20, p.anon>>20, p.file>>20, p.hwm>>20, p.rate)
	}
	return f.Close()
}

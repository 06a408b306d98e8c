package e2e

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/internal/diskspace"
	"github.com/streamd/streamd/internal/streamdtest"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

var (
	long        = flag.Bool("long", false, "run long e2e variants (also STREAMD_E2E_LONG=1)")
	stallEvents = flag.Int("stall-events", 0, "events TestStalledConsumerNotBuffered publishes (default 200,000; 1,000,000 with -long)")
)

func longRun() bool { return *long || os.Getenv("STREAMD_E2E_LONG") == "1" }

const (
	mib = 1 << 20
	// stalledHandoverBound is the most streamd may hand to gRPC for a stream
	// whose client never reads: the client's stream window (gRPC-Go's BDP
	// estimation grows it to at most 16 MiB), the server's per-stream write
	// quota (64 KiB) and the one batch blocked in Send (BatchBytes, 1 MiB).
	// Anything beyond is streamd reading ahead for a consumer that is not there.
	stalledHandoverBound = 16*mib + 64<<10 + 1*mib + 64<<10

	// stallMemTable is the memtable size the stalled-consumer test runs
	// streamd with, uncompressed (--compression none), so that Badger's
	// memory follows from it alone.
	stallMemTable = 8 * mib
)

// anonLimit is the most anonymous memory streamd may hold with memtables of
// memTable bytes and --compression none, whatever the number of events:
// Badger's up to 5 memtables (1.3 times memTable each: the memtable and
// room for its largest batch), its pool of 8 table builders, each kept as
// large as the largest table it built (a flush builds one memtable; a
// compaction a table of at most 8 MiB below a few GiB of journal) 3 times
// over (each journal block is allocated, then twice it for Badger's block
// trailer), in buffers that double, and its 64 MiB block cache; streamd's
// live ring (32768 events) and gRPC buffers (the stalled stream's batch and
// write quota, publishes in flight); all doubled by the Go GC's headroom
// (GOGC=100), and 64 MiB for the runtime, stacks and allocator metadata.
func anonLimit(memTable int64) int64 {
	badger := 5*memTable*13/10 + 8*2*3*max(memTable, 8*mib) + 64*mib
	streamd := int64(32*mib + 32*mib)
	return 2*(badger+streamd) + 64*mib
}

// A consumer that opens a stream and then never reads must not make streamd
// buffer its backlog: streamd hands it no more than the transport window and
// one batch however much is published, its anonymous memory stays under a
// limit that follows from its journal's configuration (anonLimit), a healthy
// consumer on the same daemon gets everything, and the stalled stream does
// not hold up SIGTERM beyond the shutdown grace period.
func TestStalledConsumerNotBuffered(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs streamd, publishes 200k events")
	}
	n := 200_000
	if longRun() {
		n = 1_000_000
	}
	if *stallEvents > 0 {
		n = *stallEvents
	}
	const batch, inFlight, entities, payloadLen = 100, 128, 1000, 128

	d := startStreamd(t, "--durability", "async", "--compression", "none", "--memtable-size", strconv.Itoa(stallMemTable))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dial := func() *grpc.ClientConn { // one connection per client, as separate processes would have
		conn, err := grpc.NewClient(d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	subscribe := func(ctx context.Context, conn *grpc.ClientConn, name string) (streamdv1.EventStreamService_SubscribeClient, *streamdv1.Hello) {
		t.Helper()
		sub, err := streamdv1.NewEventStreamServiceClient(conn).Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
			ConsumerName: name, StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST}}}); err != nil {
			t.Fatal(err)
		}
		r, err := sub.Recv()
		if err != nil || r.GetHello() == nil {
			t.Fatalf("%s: want Hello, got %v %v", name, r, err)
		}
		return sub, r.GetHello()
	}

	// The stalled consumer: Init, Hello, and never another Recv.
	stalledCtx, stopStalled := context.WithCancel(ctx)
	defer stopStalled()
	subscribe(stalledCtx, dial(), "stalled")

	// The healthy consumer counts what it gets and checks offsets are contiguous.
	healthyCtx, stopHealthy := context.WithCancel(ctx)
	defer stopHealthy()
	healthy, hello := subscribe(healthyCtx, dial(), "healthy")
	var received atomic.Int64
	healthyErr := make(chan error, 1)
	go func() {
		next := hello.StartOffset
		for {
			r, err := healthy.Recv()
			if err != nil {
				healthyErr <- err
				return
			}
			for _, e := range r.GetEvents().GetEvents() {
				if e.Offset != next {
					healthyErr <- fmt.Errorf("healthy consumer: got offset %d, want %d", e.Offset, next)
					return
				}
				next++
			}
			received.Add(int64(len(r.GetEvents().GetEvents())))
		}
	}()

	// Sample streamd's RSS every 100ms while the load runs.
	var peak, peakAnon, peakFile atomic.Int64
	raise := func(p *atomic.Int64, v int64) {
		for old := p.Load(); v > old && !p.CompareAndSwap(old, v); old = p.Load() {
		}
	}
	sample := func() int64 {
		rss, err := procRSS(d.PID())
		if err != nil {
			t.Errorf("read RSS: %v", err)
			return 0
		}
		raise(&peak, rss.vmRSS)
		raise(&peakAnon, rss.rssAnon)
		raise(&peakFile, rss.rssFile)
		return rss.vmRSS
	}
	stopSampling := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
				sample()
			}
		}
	})
	startRSS := sample()

	// Publish n events, batch per request, up to inFlight requests unanswered.
	pub, err := streamdv1.NewEventStreamServiceClient(dial()).PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	payload := bytes.Repeat([]byte("p"), payloadLen)
	slots := make(chan struct{}, inFlight)
	sendErr := make(chan error, 1)
	began := time.Now()
	go func() {
		for i := 0; i < n; i += batch {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				sendErr <- ctx.Err()
				return
			}
			evs := make([]*streamdv1.Event, 0, batch)
			for k := i; k < min(i+batch, n); k++ {
				evs = append(evs, &streamdv1.Event{EntityType: "acct", EntityId: "e" + strconv.Itoa(k%entities),
					EventType: "Deposited", Payload: payload})
			}
			if err := pub.Send(&streamdv1.PublishStreamRequest{Events: evs}); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- pub.CloseSend()
	}()
	var acked int
	var baselineRSS int64
	for acked < n {
		res, err := pub.Recv()
		if err != nil {
			t.Fatalf("publish: after %d acknowledged events: %v", acked, err)
		}
		if res.Code != 0 {
			t.Fatalf("publish refused after %d acknowledged events: code %d: %s", acked, res.Code, res.Message)
		}
		acked += len(res.Appended)
		<-slots
		if baselineRSS == 0 && acked >= n/10 {
			baselineRSS = sample()
		}
	}
	published := time.Since(began)
	if err := <-sendErr; err != nil {
		t.Fatalf("publish send: %v", err)
	}

	// The healthy consumer gets everything, while the stalled one still holds its stream.
	deadline := time.After(2 * time.Minute)
	for received.Load() < int64(n) {
		select {
		case err := <-healthyErr:
			t.Fatalf("healthy consumer stopped after %d of %d events: %v", received.Load(), n, err)
		case <-deadline:
			t.Fatalf("healthy consumer received %d of %d events within 2 minutes of the last publish", received.Load(), n)
		case <-time.After(50 * time.Millisecond):
		}
	}
	caughtUp := time.Since(began)
	sample()
	close(stopSampling)
	sampling.Wait()
	endRSS, err := procRSS(d.PID())
	if err != nil {
		t.Fatal(err)
	}
	stopHealthy()
	if err := <-healthyErr; status.Code(err) != codes.Canceled {
		t.Fatalf("healthy consumer: %v", err)
	}
	if got := received.Load(); got != int64(n) {
		t.Fatalf("healthy consumer received %d events, want exactly %d", got, n)
	}
	info, err := streamdv1.NewEventStreamServiceClient(dial()).JournalInfo(ctx, &streamdv1.JournalInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Events != uint64(n) {
		t.Fatalf("journal holds %d events, want %d", info.Events, n)
	}

	// What streamd handed to gRPC for the stalled stream, and what it still
	// owes it: its backlog, stored in the journal and nowhere else.
	handedOver, err := d.sentBytes("stalled")
	if err != nil {
		t.Fatal(err)
	}
	backlog := int64(info.Bytes) - handedOver
	growth := peak.Load() - baselineRSS
	t.Logf("N=%d events (%d per request, %d requests in flight), stored %.1f MiB (%.0f B/event); stalled stream: handed to gRPC %.2f MiB, backlog %.1f MiB",
		n, batch, inFlight, float64(info.Bytes)/mib, float64(info.Bytes)/float64(n), float64(handedOver)/mib, float64(backlog)/mib)
	t.Logf("publish: %v, %.0f events/s; healthy consumer caught up after %v", published.Round(time.Millisecond),
		float64(n)/published.Seconds(), caughtUp.Round(time.Millisecond))
	t.Logf("streamd RSS: start %.1f MiB, baseline at %d events %.1f MiB, peak %.1f MiB, growth %.1f MiB; at end RssAnon %.1f MiB RssFile %.1f MiB",
		float64(startRSS)/mib, n/10, float64(baselineRSS)/mib, float64(peak.Load())/mib, float64(growth)/mib,
		float64(endRSS.rssAnon)/mib, float64(endRSS.rssFile)/mib)
	disk, err := diskspace.Used(d.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	heapInuse, err := d.metric("go_memstats_heap_inuse_bytes", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("streamd VmHWM %.1f MiB; sampled peaks: RssAnon %.1f MiB (limit %.0f MiB with %d MiB memtables), RssFile %.1f MiB; Go heap in use at end %.1f MiB; journal on disk %.1f MiB",
		float64(endRSS.vmHWM)/mib, float64(peakAnon.Load())/mib, float64(anonLimit(stallMemTable))/mib, stallMemTable/mib,
		float64(peakFile.Load())/mib, float64(heapInuse)/mib, float64(disk)/mib)
	if baselineRSS == 0 {
		t.Fatal("no baseline RSS sample")
	}
	if handedOver > stalledHandoverBound {
		t.Errorf("streamd handed %.1f MiB to the stalled stream, more than its client's window and one batch (%.1f MiB): it reads ahead for a consumer that does not read",
			float64(handedOver)/mib, float64(stalledHandoverBound)/mib)
	}
	if backlog <= stalledHandoverBound {
		t.Errorf("stalled backlog %.1f MiB does not exceed %.1f MiB: the test could not tell reading ahead from not",
			float64(backlog)/mib, float64(stalledHandoverBound)/mib)
	}
	// File-backed memory (Badger's memory-mapped tables and log) is page
	// cache, up to the journal's size on disk, and is only reported.
	if peakAnon.Load() > anonLimit(stallMemTable) {
		t.Errorf("streamd's anonymous memory peaked at %.1f MiB, over the %.0f MiB its configuration allows (anonLimit): something grows with the events published or with the stalled stream's backlog",
			float64(peakAnon.Load())/mib, float64(anonLimit(stallMemTable))/mib)
	}

	// The stalled stream must not hold up shutdown.
	stopping := time.Now()
	if err := d.Stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatalf("streamd after SIGTERM with a stalled stream open: %v\nstderr tail:\n%s", err, d.Log())
	}
	t.Logf("streamd exited 0 %v after SIGTERM", time.Since(stopping).Round(time.Millisecond))
}

type rssSample struct{ vmRSS, vmHWM, rssAnon, rssFile int64 }

// procRSS reads a process's resident set from /proc/<pid>/status, in bytes.
func procRSS(pid int) (rssSample, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return rssSample{}, err
	}
	var s rssSample
	fields := map[string]*int64{"VmRSS:": &s.vmRSS, "VmHWM:": &s.vmHWM, "RssAnon:": &s.rssAnon, "RssFile:": &s.rssFile}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 3 && fields[f[0]] != nil && f[2] == "kB" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return rssSample{}, fmt.Errorf("%s: %w", strings.TrimSpace(line), err)
			}
			*fields[f[0]] = kb << 10
		}
	}
	if s.vmRSS == 0 {
		return rssSample{}, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return s, nil
}

// streamdProc is a streamd daemon run as a child process.
type streamdProc struct{ *streamdtest.Daemon }

// startStreamd runs streamd with gRPC and metrics on ephemeral ports and a
// fresh data directory; it is killed at cleanup if still running.
func startStreamd(t *testing.T, args ...string) *streamdProc {
	t.Helper()
	return &streamdProc{streamdtest.Start(t, streamdtest.Options{DataDir: t.TempDir(), Args: args, Metrics: true})}
}

// sentBytes scrapes streamd_stream_bytes_sent_total for a consumer of the
// default stream.
func (d *streamdProc) sentBytes(consumer string) (int64, error) {
	return d.metric("streamd_stream_bytes_sent_total{", `consumer="`+consumer+`"`)
}

// metric scrapes the first sample whose line starts with name and contains
// label (0 when there is none).
func (d *streamdProc) metric(name, label string) (int64, error) {
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	res, err := hc.Get("http://" + d.MetricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, name) && strings.Contains(line, label) {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			return int64(v), err
		}
	}
	return 0, nil // e.g. nothing sent to the consumer yet
}

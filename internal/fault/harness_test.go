package fault

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/internal/netproxy"
	"github.com/streamd/streamd/internal/streamdtest"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

var (
	long      = flag.Bool("long", false, "run the long fault schedule (also STREAMD_FAULT_LONG=1)")
	seedFlag  = flag.Uint64("fault-seed", 0, "seed of the fault schedule (0: from the clock; the seed used is logged)")
	cyclesArg = flag.Int("fault-cycles", 0, "fault cycles of TestFaults (default: each fault a few times; 150 with -long)")
)

func longRun() bool { return *long || os.Getenv("STREAMD_FAULT_LONG") == "1" }

func TestMain(m *testing.M) {
	if os.Getenv(childKindEnv) != "" {
		os.Exit(runChild())
	}
	goleak.VerifyTestMain(streamdtest.M(m))
}

// process is a child process whose exit is awaited in the background.
type process struct {
	name   string
	cmd    *exec.Cmd
	stderr streamdtest.Lines
	done   chan struct{} // closed when it exited
	err    error         // its exit status, once done
}

// wait waits for the exit, failing the test after timeout.
func (p *process) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%s did not exit within %v; its stderr:\n%s", p.name, timeout, p.stderr.String())
	}
	return nil
}

// signal sends sig and waits for the exit.
func (p *process) signal(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	p.cmd.Process.Signal(sig)
	return p.wait(t, 60*time.Second)
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit code, or -1 for a death by signal.
func (p *process) exitCode() int {
	if p.err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// start starts cmd, feeding each stdout line to onStdout (if not nil) and
// each stderr line to onStderr (if not nil), and keeping stderr.
func start(t *testing.T, name string, cmd *exec.Cmd, onStdout, onStderr func(string)) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout io.ReadCloser
	if onStdout != nil {
		if stdout, err = cmd.StdoutPipe(); err != nil {
			t.Fatal(err)
		}
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var readers sync.WaitGroup
	readers.Go(func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.stderr.Add(sc.Text())
			if onStderr != nil {
				onStderr(sc.Text())
			}
		}
	})
	if stdout != nil {
		readers.Go(func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				onStdout(sc.Text())
			}
		})
	}
	go func() {
		readers.Wait() // Wait closes the pipes: read them to the end first
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// startDaemon starts streamd on dataDir, listening on an ephemeral port,
// and waits until it is ready.
func startDaemon(t *testing.T, dataDir string, args ...string) *streamdtest.Daemon {
	t.Helper()
	return streamdtest.Start(t, streamdtest.Options{DataDir: dataDir, Args: args})
}

// tryStartDaemon is startDaemon that returns an error when streamd does not
// come up.
func tryStartDaemon(t *testing.T, dataDir string, args ...string) (*streamdtest.Daemon, error) {
	t.Helper()
	d, err := streamdtest.Run(streamdtest.Options{DataDir: dataDir, Args: args})
	if d != nil {
		t.Cleanup(d.Kill)
	}
	return d, err
}

// dial is a client connection that reconnects quickly, as the faults want.
func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: 2 * time.Second,
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func journalInfo(t *testing.T, addr string) *streamdv1.JournalInfoResponse {
	t.Helper()
	conn := dial(t, addr)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := streamdv1.NewEventStreamServiceClient(conn).JournalInfo(ctx, &streamdv1.JournalInfoRequest{})
	if err != nil {
		t.Fatalf("JournalInfo: %v", err)
	}
	return info
}

func startProxy(t *testing.T, target string) *netproxy.Proxy {
	t.Helper()
	p, err := netproxy.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// watermark is a value that only grows, with the time it reached each
// height, and waiters.
type watermark struct {
	mu      sync.Mutex
	v       uint64
	changed chan struct{}
	history []mark
}

type mark struct {
	v  uint64
	at time.Time
}

func newWatermark() *watermark { return &watermark{changed: make(chan struct{})} }

func (w *watermark) set(v uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if v <= w.v {
		return
	}
	w.v = v
	w.history = append(w.history, mark{v, time.Now()})
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *watermark) get() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.v
}

// reached waits until the value is at least v and returns when it got there;
// false if ctx ends first.
func (w *watermark) reached(ctx context.Context, v uint64) (time.Time, bool) {
	for {
		w.mu.Lock()
		if w.v >= v {
			for _, m := range w.history {
				if m.v >= v {
					w.mu.Unlock()
					return m.at, true
				}
			}
		}
		ch := w.changed
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return time.Time{}, false
		}
	}
}

// payload carries the publish id, padded to size bytes.
func payload(id string, size int) []byte {
	b := make([]byte, max(size, len(id)+1))
	copy(b, id)
	b[len(id)] = '|'
	for i := len(id) + 1; i < len(b); i++ {
		b[i] = 'x'
	}
	return b
}

func payloadID(p []byte) string {
	s := string(p)
	if i := strings.IndexByte(s, '|'); i >= 0 {
		return s[:i]
	}
	return s
}

func eventOf(e *streamdv1.Event) Event {
	return Event{EntityType: e.EntityType, EntityID: e.EntityId, SeqNr: e.SeqNr, Offset: e.Offset, ID: payloadID(e.Payload)}
}

// readJournal reads every event of the journal in dir (streamd stopped).
func readJournal(t *testing.T, dir string) []Event {
	t.Helper()
	j, err := journal.Open(dir, journal.Options{})
	if err != nil {
		t.Fatalf("open the journal after the run: %v", err)
	}
	defer j.Close()
	var all []Event
	for from := j.Info().FirstOffset; ; {
		batch, err := j.Read(from, 5000, nil)
		if err != nil {
			t.Fatalf("read the journal after the run: %v", err)
		}
		if len(batch) == 0 {
			break
		}
		for _, e := range batch {
			all = append(all, eventOf(e))
		}
		from = batch[len(batch)-1].Offset + 1
	}
	if last := j.LastOffset(); len(all) > 0 && all[len(all)-1].Offset != last {
		t.Fatalf("the journal read ends at offset %d, its last offset is %d", all[len(all)-1].Offset, last)
	}
	return all
}

// publishers publish under load through a proxy and record every ack.
type publishers struct {
	mu      sync.Mutex
	acked   []Event
	ackedAt []ackTimes
	sent    map[string]bool
	errs    map[string]int // refusals and failures by gRPC code
	changed chan struct{}

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type ackTimes struct{ sent, acked time.Time }

type publishOptions struct {
	workers, entitiesPerWorker int
	// rate is events per second over all workers; 0 publishes as fast as
	// acknowledgements come.
	rate        int
	payloadSize int
	timeout     time.Duration
	// entityPrefix begins every entity id (to tell producers apart).
	entityPrefix string
}

func startPublishers(t *testing.T, addr string, o publishOptions) *publishers {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &publishers{sent: map[string]bool{}, errs: map[string]int{}, changed: make(chan struct{}), cancel: cancel}
	conn := dial(t, addr)
	client := streamdv1.NewEventStreamServiceClient(conn)
	var tick <-chan time.Time
	if o.rate > 0 {
		ticker := time.NewTicker(time.Second / time.Duration(o.rate))
		t.Cleanup(ticker.Stop)
		tick = ticker.C
	}
	for w := range o.workers {
		p.wg.Go(func() {
			for i := 0; ; i++ {
				if tick != nil {
					select {
					case <-tick:
					case <-ctx.Done():
						return
					}
				}
				if ctx.Err() != nil {
					return
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				e := &streamdv1.Event{EntityType: "acct", EntityId: fmt.Sprintf("%sw%d-e%d", o.entityPrefix, w, i%o.entitiesPerWorker),
					EventType: "Deposited", Payload: payload(id, o.payloadSize)}
				p.mu.Lock()
				p.sent[id] = true
				p.mu.Unlock()
				sent := time.Now()
				cctx, ccancel := context.WithTimeout(ctx, o.timeout)
				res, err := client.Publish(cctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{e}})
				ccancel()
				if err != nil {
					p.failed(err)
					if ctx.Err() == nil && status.Code(err) != codes.DeadlineExceeded {
						// Down or refused: do not spin; the fault decides how long.
						select {
						case <-time.After(10 * time.Millisecond):
						case <-ctx.Done():
						}
					}
					continue
				}
				a := res.Appended[0]
				p.ack(Event{EntityType: e.EntityType, EntityID: e.EntityId, SeqNr: a.SeqNr, Offset: a.Offset, ID: id}, ackTimes{sent, time.Now()})
			}
		})
	}
	return p
}

func (p *publishers) failed(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := status.Convert(err)
	key := st.Code().String()
	if st.Code() == codes.ResourceExhausted || st.Code() == codes.Internal {
		key += ": " + st.Message()
	}
	p.errs[key]++
}

func (p *publishers) ack(e Event, at ackTimes) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.acked = append(p.acked, e)
	p.ackedAt = append(p.ackedAt, at)
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *publishers) stop() {
	p.cancel()
	p.wg.Wait()
}

func (p *publishers) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

// waitAcks waits until at least n publishes were acknowledged.
func (p *publishers) waitAcks(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	if _, ok := p.firstAck(timeout, func(i int, _ ackTimes) bool { return i+1 >= n }); !ok {
		t.Fatalf("only %d of %d publishes acknowledged within %v; errors %v", p.count(), n, timeout, p.errors())
	}
}

// firstAckSentAfter waits for the first ack of a publish sent at or after
// since.
func (p *publishers) firstAckSentAfter(since time.Time, timeout time.Duration) (Event, time.Time, bool) {
	i, ok := p.firstAck(timeout, func(_ int, at ackTimes) bool { return !at.sent.Before(since) })
	if !ok {
		return Event{}, time.Time{}, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acked[i], p.ackedAt[i].acked, true
}

// firstAck waits for an ack that matches and returns its index.
func (p *publishers) firstAck(timeout time.Duration, match func(int, ackTimes) bool) (int, bool) {
	deadline := time.After(timeout)
	from := 0
	for {
		p.mu.Lock()
		for i := from; i < len(p.acked); i++ {
			if match(i, p.ackedAt[i]) {
				p.mu.Unlock()
				return i, true
			}
		}
		from = len(p.acked)
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return 0, false
		}
	}
}

func (p *publishers) errors() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := make(map[string]int, len(p.errs))
	for k, v := range p.errs {
		m[k] = v
	}
	return m
}

// history returns the acks and the ids sent.
func (p *publishers) history() ([]Event, map[string]bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sent := make(map[string]bool, len(p.sent))
	for k := range p.sent {
		sent[k] = true
	}
	return append([]Event(nil), p.acked...), sent
}

// consumerProc is a consumer child process (runChild), restarted at will on
// the same store.
type consumerProc struct {
	t        *testing.T
	kind     string // "eo" or "alo"
	addr     string // producers, comma separated
	slices   string // slice range "first-last" ("": all)
	storeDir string
	logPath  string // at-least-once deliveries
	run      int
	proc     *process
	offset   *watermark // of the current process
}

func newConsumer(t *testing.T, kind, addr string) *consumerProc {
	dir := t.TempDir()
	return &consumerProc{t: t, kind: kind, addr: addr, storeDir: filepath.Join(dir, "store"), logPath: filepath.Join(dir, "deliveries.log")}
}

func (c *consumerProc) name() string { return fmt.Sprintf("%s consumer (process %d)", c.kind, c.run) }

func (c *consumerProc) start() {
	c.t.Helper()
	c.run++
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childKindEnv+"="+c.kind, childAddrEnv+"="+c.addr, childStoreEnv+"="+c.storeDir,
		childLogEnv+"="+c.logPath, childRunEnv+"="+strconv.Itoa(c.run), childSlicesEnv+"="+c.slices)
	wm := newWatermark()
	c.offset = wm
	c.proc = start(c.t, c.name(), cmd, func(line string) {
		if v, ok := strings.CutPrefix(line, "offset "); ok {
			if n, err := strconv.ParseUint(v, 10, 64); err == nil {
				wm.set(n)
			}
		}
	}, nil)
}

// kill9 kills the process with SIGKILL.
func (c *consumerProc) kill9() {
	c.t.Helper()
	c.proc.signal(c.t, syscall.SIGKILL)
}

// stop ends the process with SIGTERM; it must exit 0.
func (c *consumerProc) stop() {
	c.t.Helper()
	if err := c.proc.signal(c.t, syscall.SIGTERM); err != nil {
		c.t.Fatalf("%s after SIGTERM: %v; its stderr:\n%s", c.name(), err, c.proc.stderr.String())
	}
}

// waitOffset waits until the current process has processed offset v.
func (c *consumerProc) waitOffset(v uint64, timeout time.Duration) (time.Time, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	// A later start replaces c.proc and c.offset while the goroutine runs.
	exited, offset := c.proc.done, c.offset
	go func() { // an exited consumer will not get there
		select {
		case <-exited:
			cancel()
		case <-ctx.Done():
		}
	}()
	return offset.reached(ctx, v)
}

// deliveries reads what the consumer applied (the process has exited).
func (c *consumerProc) deliveries() []Delivery {
	c.t.Helper()
	if c.kind == "alo" {
		return readDeliveryLog(c.t, c.logPath)
	}
	store, err := offsets.Open(c.storeDir, offsets.Options{})
	if err != nil {
		c.t.Fatalf("open the exactly-once consumer's store: %v", err)
	}
	defer store.Close()
	var ds []Delivery
	err = store.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(appliedLogPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			d, err := parseDelivery(string(v))
			if err != nil {
				return err
			}
			ds = append(ds, d)
		}
		return nil
	})
	if err != nil {
		c.t.Fatalf("read the exactly-once consumer's applied events: %v", err)
	}
	return ds
}

func readDeliveryLog(t *testing.T, path string) []Delivery {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return []Delivery{}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ds := []Delivery{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		d, err := parseDelivery(sc.Text())
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		ds = append(ds, d)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return ds
}

// formatDelivery and parseDelivery are the record a child keeps per applied
// event: "run type id seqNr offset payload-id".
func formatDelivery(run int, e *streamdv1.Event) string {
	return fmt.Sprintf("%d %s %s %d %d %s", run, e.EntityType, e.EntityId, e.SeqNr, e.Offset, payloadID(e.Payload))
}

func parseDelivery(s string) (Delivery, error) {
	var d Delivery
	if _, err := fmt.Sscanf(s, "%d %s %s %d %d %s", &d.Run, &d.EntityType, &d.EntityID, &d.SeqNr, &d.Offset, &d.ID); err != nil {
		return d, fmt.Errorf("bad delivery record %q: %w", s, err)
	}
	return d, nil
}

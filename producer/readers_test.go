package producer

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// startIn is start on the journal directory dir, so that a test can stop
// the producer and open it again; stop closes it (Shutdown saves the view).
func startIn(t *testing.T, dir string, opts Options) (h *harness, stop func()) {
	t.Helper()
	p, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	streamdv1.RegisterEventStreamServiceServer(g, p.Server())
	go g.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			conn.Close()
			p.Server().Shutdown()
			g.Stop()
			if err := p.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(stop)
	return &harness{p: p, client: streamdv1.NewEventStreamServiceClient(conn), addr: lis.Addr().String()}, stop
}

// reader returns the view's record of consumer, or nil.
func reader(s *Server, consumer string) *Reader {
	for _, r := range s.Readers() {
		if r.Consumer == consumer {
			return &r
		}
	}
	return nil
}

func report(off uint64) *streamdv1.SubscribeRequest {
	return &streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_OffsetReport{OffsetReport: &streamdv1.OffsetReport{StoredOffset: off}}}
}

// The producer keeps what each consumer reports, per name and slice
// range: connected, delivered and stored offsets, filter, address and lag;
// the view survives a restart of the producer.
func TestReadersView(t *testing.T) {
	dir := t.TempDir()
	h, stop := startIn(t, dir, Options{})
	h.publish(t, cars(10, 1, "sports")...)
	init := earliest()
	init.ConsumerName, init.SliceRange = "billing", &streamdv1.SliceRange{First: 0, Last: 1023}
	init.Filter = []*streamdv1.FilterCriterion{{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_TAG, Value: "sports"}}
	s, err := h.subscribe(t, init)
	if err != nil {
		t.Fatal(err)
	}
	if !s.hello.GetAcceptsOffsetReports() {
		t.Fatal("Hello does not say the producer takes offset reports")
	}
	s.events(10)
	s.send(report(4))
	testwait.For(t, 10*time.Second, "the report of billing", func() bool {
		r := reader(h.p.Server(), "billing")
		return r != nil && r.Stored == 4
	})
	r := reader(h.p.Server(), "billing")
	if !r.Connected || r.Delivered != 10 || r.Lag != 6 || r.LagTime <= 0 || len(r.Filter) != 1 || r.Addr == "" || r.Last != 1023 {
		t.Fatalf("billing = %+v, want connected, delivered 10, lag 6 (and its time), one criterion, an address", r)
	}

	// A report beyond what was delivered is refused and changes nothing.
	bad, err := h.subscribe(t, &streamdv1.Init{ConsumerName: "liar", StartPolicy: streamdv1.StartPolicy_START_POLICY_LATEST})
	if err != nil {
		t.Fatal(err)
	}
	bad.send(report(1000))
	if _, err := bad.stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("report beyond delivery: %v, want InvalidArgument", err)
	}
	if r := reader(h.p.Server(), "liar"); r == nil || r.Stored != 10 {
		t.Fatalf("liar = %+v, want its resume offset 10 kept", r)
	}

	s.cancel()
	testwait.For(t, 10*time.Second, "billing disconnected", func() bool {
		r := reader(h.p.Server(), "billing")
		return r != nil && !r.Connected
	})
	stop()

	h, _ = startIn(t, dir, Options{})
	r = reader(h.p.Server(), "billing")
	if r == nil || r.Connected || r.Stored != 4 || r.Delivered != 10 || r.Lag != 6 || len(r.Filter) != 1 {
		t.Fatalf("after a restart billing = %+v, want stored 4, delivered 10, lag 6, its filter, not connected", r)
	}
}

// The view keeps at most MaxReaders, dropping those seen longest ago, and
// none older than ReaderMaxAge; both bounds hold after a restart.
func TestReadersBound(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	opts := Options{Server: ServerOptions{MaxReaders: 2, ReaderMaxAge: time.Hour, Now: clock}}
	dir := t.TempDir()
	h, stop := startIn(t, dir, opts)
	h.publish(t, cars(3, 1, "x")...)
	for _, name := range []string{"a", "b", "c"} {
		s, err := h.subscribe(t, &streamdv1.Init{ConsumerName: name, StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST})
		if err != nil {
			t.Fatal(err)
		}
		s.events(3)
		s.cancel()
		testwait.For(t, 10*time.Second, name+" disconnected", func() bool {
			r := reader(h.p.Server(), name)
			return r != nil && !r.Connected
		})
		advance(time.Minute)
	}
	names := func() []string {
		var out []string
		for _, r := range h.p.Server().Readers() {
			out = append(out, r.Consumer)
		}
		return out
	}
	if got := names(); len(got) != 2 || got[0] != "b" || got[1] != "c" {
		t.Fatalf("view = %v, want [b c]: a, seen longest ago, dropped", got)
	}
	stop()
	h, stop = startIn(t, dir, opts)
	if got := names(); len(got) != 2 || got[0] != "b" || got[1] != "c" {
		t.Fatalf("after a restart view = %v, want [b c]", got)
	}
	advance(2 * time.Hour)
	if got := names(); len(got) != 0 {
		t.Fatalf("after ReaderMaxAge view = %v, want none", got)
	}
	stop()
	h, _ = startIn(t, dir, opts)
	if got := names(); len(got) != 0 {
		t.Fatalf("after ReaderMaxAge and a restart view = %v, want none", got)
	}
}

// A saved record that does not decode is dropped from the view and deleted
// at the next save; the producer opens.
func TestReadersDropDamagedRecord(t *testing.T) {
	dir := t.TempDir()
	h, stop := startIn(t, dir, Options{})
	bad := append(append([]byte(nil), readerKeyPrefix...), 0xff, 'x')
	if err := h.p.Journal().Update(func(txn *badger.Txn) error { return txn.Set(bad, []byte("not a ReaderStatus")) }); err != nil {
		t.Fatal(err)
	}
	stop()
	h, stop = startIn(t, dir, Options{})
	if got := h.p.Server().Readers(); len(got) != 0 {
		t.Fatalf("view = %+v, want nothing", got)
	}
	stop()
	h, _ = startIn(t, dir, Options{})
	err := h.p.Journal().View(func(txn *badger.Txn) error {
		_, err := txn.Get(bad)
		return err
	})
	if !errors.Is(err, badger.ErrKeyNotFound) {
		t.Fatalf("the damaged record after a save: %v, want it deleted", err)
	}
}

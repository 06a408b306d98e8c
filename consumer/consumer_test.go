package consumer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// harness serves fake producers over bufconn and holds a real offsets store.
type harness struct {
	t     *testing.T
	store *offsets.Store
	fakes map[string]*fakeProducer // by address
	addrs []string
	lis   map[string]*bufconn.Listener // by name after "passthrough:///"
}

func newHarness(t *testing.T, producers int) *harness {
	t.Helper()
	store, err := offsets.Open(t.TempDir(), offsets.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, store: store, fakes: map[string]*fakeProducer{}, lis: map[string]*bufconn.Listener{}}
	t.Cleanup(func() {
		if err := store.Close(); err != nil {
			t.Errorf("store Close: %v", err)
		}
	})
	for i := range producers {
		name := fmt.Sprintf("p%d", i+1)
		fake := newFakeProducer()
		lis := bufconn.Listen(1 << 20)
		srv := grpc.NewServer()
		streamdv1.RegisterEventStreamServiceServer(srv, fake)
		go func() { _ = srv.Serve(lis) }()
		t.Cleanup(srv.Stop)
		addr := "passthrough:///" + name
		h.fakes[addr], h.lis[name] = fake, lis
		h.addrs = append(h.addrs, addr)
	}
	return h
}

func (h *harness) fake(i int) *fakeProducer { return h.fakes[h.addrs[i]] }

func (h *harness) options() Options {
	return Options{
		Producers: h.addrs,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			lis := h.lis[addr]
			if lis == nil {
				return nil, fmt.Errorf("no fake producer %q", addr)
			}
			return lis.DialContext(ctx)
		})},
		Name:         "c1",
		Store:        h.store,
		SaveInterval: 10 * time.Millisecond,
		MinBackoff:   time.Millisecond,
		MaxBackoff:   5 * time.Millisecond,
		Logger:       quiet,
	}
}

func (h *harness) key(jid []byte) offsets.Key {
	return offsets.Key{Consumer: "c1", JournalID: jid, Slices: offsets.AllSlices}
}

// stored returns the stored offset of the whole-range key of jid.
func (h *harness) stored(jid []byte) uint64 {
	p, found, err := h.store.Get(h.key(jid))
	if err != nil {
		h.t.Fatal(err)
	}
	if !found {
		return 0
	}
	return p.Offset
}

// setOffsets makes a CommitHandler's offset writes in txn.
func setOffsets(txn *badger.Txn, writes []offsets.Write) error {
	for _, w := range writes {
		err := txn.Set(w.Key, w.Value)
		if w.Delete {
			err = txn.Delete(w.Key)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// running is a Run in the background.
type running struct {
	cancel context.CancelFunc
	done   chan error
}

func runBG(t *testing.T, c *Consumer) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	t.Cleanup(func() { r.cancel(); <-r.done })
	return r
}

// stop cancels Run and returns its result.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
		return nil
	}
}

// wait returns Run's result once it stops by itself.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// recorder is a Handler that records what it is given.
type recorder struct {
	mu     sync.Mutex
	events []*streamdv1.Event
	fail   func(e *streamdv1.Event) error
}

func (r *recorder) handle(_ context.Context, e *streamdv1.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail != nil {
		if err := r.fail(e); err != nil {
			return err
		}
	}
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// got returns "type/id#seq" of every handled event, in order.
func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.events))
	for i, e := range r.events {
		out[i] = fmt.Sprintf("%s/%s#%d", e.EntityType, e.EntityId, e.SeqNr)
	}
	return out
}

func (r *recorder) offsets() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint64, len(r.events))
	for i, e := range r.events {
		out[i] = e.Offset
	}
	return out
}

func newConsumer(t *testing.T, o Options) *Consumer {
	t.Helper()
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// idInSlices returns an entity id with prefix whose slice is in [lo, hi].
func idInSlices(prefix string, lo, hi uint32) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("%s%d", prefix, i)
		if s := journal.SliceOf(id); s >= lo && s <= hi {
			return id
		}
	}
}

func include(field streamdv1.FilterField, value string) *streamdv1.FilterCriterion {
	return &streamdv1.FilterCriterion{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: field, Value: value}
}

func exclude(field streamdv1.FilterField, value string) *streamdv1.FilterCriterion {
	return &streamdv1.FilterCriterion{Action: streamdv1.FilterAction_FILTER_ACTION_EXCLUDE, Field: field, Value: value}
}

func sameCriteria(a, b []*streamdv1.FilterCriterion) bool {
	return slices.EqualFunc(a, b, func(x, y *streamdv1.FilterCriterion) bool { return proto.Equal(x, y) })
}

func TestOptionsValidate(t *testing.T) {
	store, err := offsets.Open("", offsets.Options{InMemory: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	handler := func(context.Context, *streamdv1.Event) error { return nil }
	txHandler := func(context.Context, *badger.Txn, *streamdv1.Event) error { return nil }
	good := Options{Producers: []string{"localhost:7070"}, Name: "c", Store: store, Handler: handler}
	if err := good.Validate(); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
	tests := []struct {
		name   string
		change func(o *Options)
		want   string
	}{
		{"no producers", func(o *Options) { o.Producers = nil }, "Options.Producers is empty"},
		{"empty producer", func(o *Options) { o.Producers = []string{"a:1", ""} }, "Options.Producers[1] is empty"},
		{"duplicate producer", func(o *Options) { o.Producers = []string{"a:1", "a:1"} }, "Options.Producers[1]"},
		{"nil dial option", func(o *Options) { o.DialOptions = []grpc.DialOption{nil} }, "Options.DialOptions[0]"},
		{"no name", func(o *Options) { o.Name = "" }, "Options.Name is empty"},
		{"long name", func(o *Options) { o.Name = strings.Repeat("n", offsets.MaxNameLen+1) }, "Options.Name"},
		{"long stream", func(o *Options) { o.Stream = strings.Repeat("s", offsets.MaxNameLen+1) }, "Options.Stream"},
		{"no store", func(o *Options) { o.Store = nil }, "Options.Store is nil"},
		{"bad slices", func(o *Options) { o.Slices = offsets.SliceRange{First: 5, Last: 2} }, "Options.Slices"},
		{"slices above 1023", func(o *Options) { o.Slices = offsets.SliceRange{First: 0, Last: 1024} }, "Options.Slices"},
		{"negative streams", func(o *Options) { o.Streams = -1 }, "Options.Streams -1 is not in 1-1024"},
		{"more streams than slices", func(o *Options) { o.Slices, o.Streams = offsets.SliceRange{First: 8, Last: 11}, 5 }, "Options.Streams 5 is not in 1-4"},
		{"bad filter", func(o *Options) {
			o.Filter = []*streamdv1.FilterCriterion{include(streamdv1.FilterField_FILTER_FIELD_TAG, "")}
		}, "Options.Filter"},
		{"no handler", func(o *Options) { o.Handler = nil }, "Options.Handler, BatchHandler, TxHandler and CommitHandler are all nil"},
		{"no dedupe without batch handler", func(o *Options) { o.NoDedupe = true }, "Options.NoDedupe goes with BatchHandler"},
		{"two handlers", func(o *Options) {
			o.BatchHandler = func(context.Context, []*streamdv1.Event) error { return nil }
		}, "Options.Handler, Options.BatchHandler are set together"},
		{"at-least-once and exactly-once handlers", func(o *Options) { o.TxHandler = txHandler }, "Options.Handler, Options.TxHandler are set together"},
		{"tx and commit handlers", func(o *Options) {
			o.Handler, o.TxHandler = nil, txHandler
			o.CommitHandler = func(context.Context, []*streamdv1.Event, []offsets.Write) error { return nil }
		}, "Options.TxHandler, Options.CommitHandler are set together"},
		{"no dedupe with tx handler", func(o *Options) { o.Handler, o.TxHandler, o.NoDedupe = nil, txHandler, true }, "Options.NoDedupe goes with BatchHandler or CommitHandler"},
		{"origin dedupe without tx handler", func(o *Options) { o.DedupeOrigin = true }, "Options.DedupeOrigin goes with TxHandler"},
		{"unknown start policy", func(o *Options) { o.StartPolicy = 9 }, "Options.StartPolicy"},
		{"at time without time", func(o *Options) { o.StartPolicy = streamdv1.StartPolicy_START_POLICY_AT_TIME }, "Options.StartTime is zero"},
		{"time without at time", func(o *Options) { o.StartTime = time.Now() }, "Options.StartTime is set"},
		{"unknown journal policy", func(o *Options) { o.OnJournalChange = 3 }, "Options.OnJournalChange"},
		{"negative save interval", func(o *Options) { o.SaveInterval = -time.Second }, "Options.SaveInterval"},
		{"negative save every", func(o *Options) { o.SaveEvery = -1 }, "Options.SaveEvery"},
		{"negative min backoff", func(o *Options) { o.MinBackoff = -time.Second }, "Options.MinBackoff"},
		{"max below min backoff", func(o *Options) { o.MinBackoff, o.MaxBackoff = time.Second, time.Millisecond }, "Options.MaxBackoff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := good
			o.Producers = slices.Clone(good.Producers)
			tt.change(&o)
			err := o.Validate()
			if err == nil {
				t.Fatalf("Validate accepted %s", tt.name)
			}
			if !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tt.want) ||
				!strings.HasPrefix(err.Error(), "consumer: invalid options: ") {
				t.Fatalf("Validate = %v, want ErrInvalidOptions naming %q", err, tt.want)
			}
			if _, err := New(o); err == nil {
				t.Fatal("New accepted what Validate refuses")
			}
		})
	}
}

// Validate reports every unusable field, each error on its own and wrapping
// ErrInvalidOptions.
func TestOptionsValidateReportsEveryField(t *testing.T) {
	o := Options{Producers: []string{"a:1", "dns:///svc"}, SaveEvery: -1}
	err := o.Validate()
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		t.Fatalf("Validate = %v, want the errors joined", err)
	}
	wants := []string{"Options.Producers[1]", "Options.Name is empty", "Options.Store is nil", "are all nil", "Options.SaveEvery -1"}
	errs := joined.Unwrap()
	if len(errs) != len(wants) {
		t.Fatalf("Validate = %d errors %v, want %d", len(errs), err, len(wants))
	}
	for i, e := range errs {
		if !errors.Is(e, ErrInvalidOptions) || !strings.Contains(e.Error(), wants[i]) {
			t.Errorf("error %d = %v, want ErrInvalidOptions naming %q", i, e, wants[i])
		}
	}
}

// The handler that is set chooses the delivery mode.
func TestOptionsMode(t *testing.T) {
	for _, tt := range []struct {
		o    Options
		want Mode
	}{
		{Options{Handler: func(context.Context, *streamdv1.Event) error { return nil }}, AtLeastOnce},
		{Options{BatchHandler: func(context.Context, []*streamdv1.Event) error { return nil }}, AtLeastOnce},
		{Options{TxHandler: func(context.Context, *badger.Txn, *streamdv1.Event) error { return nil }}, ExactlyOnce},
		{Options{CommitHandler: func(context.Context, []*streamdv1.Event, []offsets.Write) error { return nil }}, ExactlyOnce},
	} {
		if got := tt.o.Mode(); got != tt.want {
			t.Errorf("Mode() of %s = %s, want %s", tt.o.handlersSet(), got, tt.want)
		}
	}
}

func TestDeliversInOrderAndSavesOffset(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	fake.publish("a", "b", "a", "c", "b", "a")
	rec := &recorder{}
	o := h.options()
	o.Handler = rec.handle
	c := newConsumer(t, o)
	r := runBG(t, c)
	testwait.For(t, 10*time.Second, "6 events", func() bool { return rec.count() == 6 })
	if got, want := rec.got(), []string{"car/a#1", "car/b#1", "car/a#2", "car/c#1", "car/b#2", "car/a#3"}; !slices.Equal(got, want) {
		t.Fatalf("handled %v, want %v", got, want)
	}
	jid := fake.jid()
	testwait.For(t, 10*time.Second, "offset 6 stored", func() bool { return h.stored(jid) == 6 })
	fake.publish("d")
	testwait.For(t, 10*time.Second, "event 7", func() bool { return rec.count() == 7 })
	testwait.For(t, 10*time.Second, "offset 7 stored", func() bool { return h.stored(jid) == 7 })

	st := c.Status()
	if len(st) != 1 || st[0].Addr != h.addrs[0] || !st[0].Connected || st[0].Offset != 7 || st[0].Lag != 0 ||
		string(st[0].JournalID) != string(jid) || st[0].LastError != nil {
		t.Fatalf("Status = %+v", st)
	}
	if err := c.Run(context.Background()); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Run = %v, want ErrRunning", err)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	if st := c.Status(); st[0].Connected {
		t.Fatalf("Status after Run: still connected: %+v", st[0])
	}
	init := fake.initList()[0]
	if init.Position != nil || init.StartPolicy != streamdv1.StartPolicy_START_POLICY_EARLIEST ||
		init.ConsumerName != "c1" || init.SliceRange.GetFirst() != 0 || init.SliceRange.GetLast() != 1023 {
		t.Fatalf("first Init = %v", init)
	}
	for _, e := range []string{"a", "b", "c", "d"} {
		seq, err := h.store.AppliedSeqNr(nil, "c1", jid, "car", e)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]uint64{"a": 3, "b": 2, "c": 1, "d": 1}[e]
		if seq != want {
			t.Errorf("applied seqNr of %s = %d, want %d", e, seq, want)
		}
	}
	// The journal id of the producer is recorded in the store.
	rec2, err := h.store.LastJournalID("c1", h.addrs[0])
	if err != nil || string(rec2) != string(jid) {
		t.Fatalf("last journal id = %x, %v; want %x", rec2, err, jid)
	}
}

func TestProgressMovesOffsetOverFilteredEvents(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	rec := &recorder{}
	o := h.options()
	o.Handler = rec.handle
	o.Filter = []*streamdv1.FilterCriterion{exclude(streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE, "noise")}
	c := newConsumer(t, o)
	runBG(t, c)
	testwait.For(t, 10*time.Second, "stream open", func() bool { return fake.openStreams() == 1 })
	fake.publish("noise/n1", "noise/n2", "noise/n1", "noise/n3", "noise/n1")
	jid := fake.jid()
	// Only Progress reaches the consumer, and it moves the stored offset.
	testwait.For(t, 10*time.Second, "offset 5 stored", func() bool { return h.stored(jid) == 5 })
	if rec.count() != 0 {
		t.Fatalf("handled filtered events: %v", rec.got())
	}
	if !sameCriteria(fake.initList()[0].Filter, o.Filter) {
		t.Fatalf("Init.Filter = %v, want Options.Filter %v", fake.initList()[0].Filter, o.Filter)
	}
	fake.publish("a")
	testwait.For(t, 10*time.Second, "event 6", func() bool { return rec.count() == 1 })
	testwait.For(t, 10*time.Second, "offset 6 stored", func() bool { return h.stored(jid) == 6 })
	if st := c.Status()[0]; st.Offset != 6 || st.Lag != 0 {
		t.Fatalf("Status = %+v", st)
	}
}

func TestDedupeDuplicatesReplaysAndForeignSlices(t *testing.T) {
	t.Run("Handler", func(t *testing.T) { testDedupe(t, false) })
	t.Run("BatchHandler", func(t *testing.T) { testDedupe(t, true) })
}

func testDedupe(t *testing.T, batch bool) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	fake.set(func(p *fakeProducer) { p.dup, p.noSlices, p.batchSize = true, true, 2 })
	mine := offsets.SliceRange{First: 0, Last: 511}
	a, b, cc := idInSlices("a", 0, 511), idInSlices("b", 512, 1023), idInSlices("c", 0, 511)
	jid := fake.jid()
	// Applied before (e.g. by another path): a#1 and a#2 are duplicates.
	if err := h.store.Save(offsets.Key{Consumer: "c1", JournalID: jid, Slices: offsets.SliceRange{First: 600, Last: 700}}, 0,
		[]offsets.Applied{{EntityType: "car", EntityID: a, SeqNr: 2}}); err != nil {
		t.Fatal(err)
	}
	fake.publish(a, b, a, cc, a, b, a, cc)
	rec := &recorder{}
	o := h.options()
	o.Handler, o.Slices = rec.handle, mine
	if batch {
		o.Handler, o.BatchHandler = nil, func(ctx context.Context, es []*streamdv1.Event) error {
			for _, e := range es {
				if err := rec.handle(ctx, e); err != nil {
					return err
				}
			}
			return nil
		}
	}
	c := newConsumer(t, o)
	runBG(t, c)
	want := []string{"car/" + cc + "#1", "car/" + a + "#3", "car/" + a + "#4", "car/" + cc + "#2"}
	testwait.For(t, 10*time.Second, "4 events", func() bool { return rec.count() >= 4 })
	testwait.For(t, 10*time.Second, "offset 8", func() bool {
		p, _, _ := h.store.Get(offsets.Key{Consumer: "c1", JournalID: jid, Slices: mine})
		return p.Offset == 8
	})

	// A replay of the whole history of a brings only duplicates.
	if err := c.Replay(context.Background(), "car", a, 1); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "the replay request", func() bool { return len(fake.replayList()) == 1 })
	fake.publish(cc) // behind the replay batch in the stream
	testwait.For(t, 10*time.Second, "c#3", func() bool { return rec.count() >= 5 })
	want = append(want, "car/"+cc+"#3")
	if got := rec.got(); !slices.Equal(got, want) {
		t.Fatalf("handled %v, want %v", got, want)
	}
	if rp := fake.replayList()[0]; rp.EntityType != "car" || rp.EntityId != a || rp.FromSeqNr != 1 {
		t.Fatalf("Replay sent = %v", rp)
	}
	if err := c.Replay(context.Background(), "", a, 1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Replay without entity type = %v, want ErrInvalid", err)
	}
}

func TestReplayWithoutStreamIsNotConnected(t *testing.T) {
	h := newHarness(t, 1)
	o := h.options()
	o.Handler = (&recorder{}).handle
	c := newConsumer(t, o)
	err := c.Replay(context.Background(), "car", "a", 1)
	if !errors.Is(err, ErrNotConnected) || !strings.Contains(err.Error(), h.addrs[0]) {
		t.Fatalf("Replay before Run = %v, want ErrNotConnected naming the producer", err)
	}
}

func TestResumeAfterDisconnectAndRestart(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	fake.set(func(p *fakeProducer) { p.batchSize, p.failAfter[0] = 2, 3 })
	fake.publish("a", "a", "b", "a", "b", "a")
	rec := &recorder{}
	o := h.options()
	o.Handler = rec.handle
	c := newConsumer(t, o)
	r := runBG(t, c)
	testwait.For(t, 10*time.Second, "6 events", func() bool { return rec.count() == 6 })
	jid := fake.jid()
	inits := fake.initList()
	if len(inits) != 2 {
		t.Fatalf("%d Inits, want 2 (one reconnect)", len(inits))
	}
	if p := inits[1].Position; p == nil || string(p.JournalId) != string(jid) || p.Offset != 3 {
		t.Fatalf("Init after the disconnect has position %v, want {%x, 3}", p, jid)
	}
	if got := rec.offsets(); !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("handled offsets %v", got)
	}
	if st := c.Status()[0]; st.LastError == nil || status.Code(st.LastError) != codes.Unavailable {
		t.Fatalf("Status.LastError = %v, want the Unavailable disconnect", st.LastError)
	}
	testwait.For(t, 10*time.Second, "offset 6 stored", func() bool { return h.stored(jid) == 6 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	// A new process on the same store resumes from the stored offset.
	fake.publish("c", "a")
	rec2 := &recorder{}
	o.Handler = rec2.handle
	c2 := newConsumer(t, o)
	runBG(t, c2)
	testwait.For(t, 10*time.Second, "2 new events", func() bool { return rec2.count() == 2 })
	if p := fake.initList()[2].Position; p == nil || string(p.JournalId) != string(jid) || p.Offset != 6 {
		t.Fatalf("Init after restart has position %v, want {%x, 6}", p, jid)
	}
	if got := rec2.got(); !slices.Equal(got, []string{"car/c#1", "car/a#5"}) {
		t.Fatalf("after restart handled %v", got)
	}
}

// A producer that accepts the stream but never says Hello is given up on
// after HelloTimeout and retried; the next connection delivers everything.
func TestHelloTimeout(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	fake.set(func(p *fakeProducer) { p.silent[0] = true })
	fake.publish("a", "b")
	rec := &recorder{}
	o := h.options()
	o.Handler = rec.handle
	o.HelloTimeout = 100 * time.Millisecond
	c := newConsumer(t, o)
	runBG(t, c)
	testwait.For(t, 10*time.Second, "2 events after the silent connection", func() bool { return rec.count() == 2 })
	if n := len(fake.initList()); n != 2 {
		t.Fatalf("%d Inits, want 2 (the silent one, then a retry)", n)
	}
	if st := c.Status()[0]; st.LastError == nil || !strings.Contains(st.LastError.Error(), "sent no Hello within 100ms") {
		t.Fatalf("Status.LastError = %v, want the Hello timeout", st.LastError)
	}
}

func TestOperatorOffsetForUnseenJournalIsUsed(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	fake.publish("a", "a", "a", "a", "a", "a")
	jid := fake.jid()
	if err := h.store.Set(h.key(jid), 4); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	o := h.options()
	o.Handler = rec.handle
	c := newConsumer(t, o)
	runBG(t, c)
	testwait.For(t, 10*time.Second, "2 events", func() bool { return rec.count() == 2 })
	if got := rec.offsets(); !slices.Equal(got, []uint64{5, 6}) {
		t.Fatalf("handled offsets %v, want 5 and 6", got)
	}
	inits := fake.initList()
	if len(inits) != 2 || inits[0].Position != nil || inits[1].Position.GetOffset() != 4 {
		t.Fatalf("Inits %v: want a start policy, then position 4", inits)
	}
}

var errBoom = errors.New("boom")

func TestExactlyOnceCommitsHandlerWritesWithOffset(t *testing.T) {
	t.Run("TxHandler", func(t *testing.T) { testExactlyOnce(t, false) })
	t.Run("CommitHandler", func(t *testing.T) { testExactlyOnce(t, true) })
}

// testExactlyOnce: a failing batch commits nothing, and after a resume with
// duplicated batches each event is applied once; with a TxHandler, or a
// CommitHandler that writes the same records and the offset itself.
func testExactlyOnce(t *testing.T, commitHandler bool) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	fake.set(func(p *fakeProducer) { p.batchSize = 2 })
	fake.publish("a", "a", "a", "a")
	jid := fake.jid()

	var mu sync.Mutex
	calls := map[uint64]int{}
	failAt := uint64(3)
	txHandler := func(_ context.Context, txn *badger.Txn, e *streamdv1.Event) error {
		mu.Lock()
		calls[e.SeqNr]++
		mu.Unlock()
		if err := txn.Set([]byte(fmt.Sprintf("state/%s/%d", e.EntityId, e.SeqNr)), []byte("x")); err != nil {
			return err
		}
		if e.SeqNr == failAt {
			return errBoom
		}
		return nil
	}
	o := h.options()
	o.TxHandler = txHandler
	if commitHandler {
		o.TxHandler = nil
		o.CommitHandler = func(ctx context.Context, events []*streamdv1.Event, offsetWrites []offsets.Write) error {
			return h.store.DB().Update(func(txn *badger.Txn) error {
				for _, e := range events {
					if err := txHandler(ctx, txn, e); err != nil {
						return err
					}
				}
				return setOffsets(txn, offsetWrites)
			})
		}
	}
	c := newConsumer(t, o)
	r := runBG(t, c)
	err := r.wait(t)
	// A CommitHandler gets the live batches queued behind one merged
	// (coalesce), so the failed batch may begin at a#1; its error names
	// the batch's first event.
	var he *HandlerError
	if !errors.Is(err, errBoom) || !errors.As(err, &he) || he.EntityID != "a" || (!commitHandler && he.SeqNr != 3) {
		t.Fatalf("Run = %v, want the handler error on a#3 (or its batch)", err)
	}
	has := func(key string) bool {
		err := h.store.DB().View(func(txn *badger.Txn) error { _, err := txn.Get([]byte(key)); return err })
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	applied := func() uint64 {
		seq, err := h.store.AppliedSeqNr(nil, "c1", jid, "car", "a")
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	// The batches before the failed one committed, with their offset and
	// seqNrs; nothing of the failed one did (offsets equal seqNrs here).
	stored := h.stored(jid)
	if stored != 2 && (!commitHandler || stored != 0) {
		t.Fatalf("stored offset %d, want 2 (or 0 after a merged batch)", stored)
	}
	for seq := uint64(1); seq <= 4; seq++ {
		if has(fmt.Sprintf("state/a/%d", seq)) != (seq <= stored) {
			t.Fatalf("handler write of a#%d: want those up to the stored offset %d only", seq, stored)
		}
	}
	if got := applied(); got != stored {
		t.Fatalf("applied seqNr %d, want %d", got, stored)
	}

	// Fixed handler, duplicated batches: each event is applied exactly once.
	failAt = 0
	fake.set(func(p *fakeProducer) { p.dup = true })
	mu.Lock()
	clear(calls)
	mu.Unlock()
	c2 := newConsumer(t, o)
	runBG(t, c2)
	testwait.For(t, 10*time.Second, "offset 4", func() bool { return h.stored(jid) == 4 })
	if p := fake.initList()[1].Position; p.GetOffset() != stored {
		t.Fatalf("resumed from %v, want offset %d", p, stored)
	}
	if !has("state/a/3") || !has("state/a/4") || applied() != 4 {
		t.Fatalf("after the resume: state/a/3 %v, state/a/4 %v, applied %d", has("state/a/3"), has("state/a/4"), applied())
	}
	fake.publish("a")
	testwait.For(t, 10*time.Second, "offset 5", func() bool { return h.stored(jid) == 5 })
	want := map[uint64]int{}
	for seq := stored + 1; seq <= 5; seq++ {
		want[seq] = 1
	}
	mu.Lock()
	defer mu.Unlock()
	if !maps.Equal(calls, want) {
		t.Fatalf("handler calls per seqNr %v, want one each for %d..5", calls, stored+1)
	}
}

func TestJournalChange(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	fake.publish("a", "a", "a")
	oldID := fake.jid()
	rec := &recorder{}
	o := h.options()
	o.Handler = rec.handle
	c := newConsumer(t, o)
	r := runBG(t, c)
	testwait.For(t, 10*time.Second, "3 events", func() bool { return rec.count() == 3 })
	testwait.For(t, 10*time.Second, "offset 3", func() bool { return h.stored(oldID) == 3 })

	// The producer's journal is replaced under a running consumer: Fail.
	newID := fake.replaceJournal()
	fake.publish("a", "a")
	err := r.wait(t)
	var jc *JournalChangedError
	if !errors.Is(err, ErrJournalChanged) || !errors.As(err, &jc) ||
		string(jc.Stored) != string(oldID) || string(jc.Current) != string(newID) {
		t.Fatalf("Run = %v, want a JournalChangedError from %x to %x", err, oldID, newID)
	}
	if msg := err.Error(); !strings.Contains(msg, fmt.Sprintf("%x", oldID)) || !strings.Contains(msg, fmt.Sprintf("%x", newID)) {
		t.Fatalf("error %q does not name both journal ids", msg)
	}
	if rec.count() != 3 {
		t.Fatalf("handled events of the new journal without permission: %v", rec.got())
	}

	// A restart with the default policy fails the same way, before handling.
	c2 := newConsumer(t, o)
	if err := runBG(t, c2).wait(t); !errors.Is(err, ErrJournalChanged) {
		t.Fatalf("Run after restart = %v, want ErrJournalChanged", err)
	}

	// RestartFromEarliest starts the new journal from its beginning.
	o.OnJournalChange = RestartFromEarliest
	c3 := newConsumer(t, o)
	runBG(t, c3)
	testwait.For(t, 10*time.Second, "2 events of the new journal", func() bool { return rec.count() == 5 })
	if got := rec.got()[3:]; !slices.Equal(got, []string{"car/a#1", "car/a#2"}) {
		t.Fatalf("new journal: handled %v", got)
	}
	last := fake.initList()[len(fake.initList())-1]
	if last.Position != nil || last.StartPolicy != streamdv1.StartPolicy_START_POLICY_EARLIEST {
		t.Fatalf("Init after the journal change = %v, want EARLIEST without a position", last)
	}
	testwait.For(t, 10*time.Second, "offset 2 in the new journal", func() bool { return h.stored(newID) == 2 })
	if got := h.stored(oldID); got != 3 {
		t.Fatalf("the old journal's offset became %d, want it kept at 3", got)
	}
	if st := c3.Status()[0]; string(st.JournalID) != string(newID) {
		t.Fatalf("Status.JournalID %x, want %x", st.JournalID, newID)
	}
}

func TestOutOfRangeNamesFirstAvailableOffset(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	fake.publish("a", "a", "a")
	jid := fake.jid()
	rec := &recorder{}
	o := h.options()
	o.Handler = rec.handle
	r := runBG(t, newConsumer(t, o))
	testwait.For(t, 10*time.Second, "offset 3", func() bool { return h.stored(jid) == 3 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	fake.publish("b", "b", "b", "b", "b", "b", "b", "b", "b")
	fake.set(func(p *fakeProducer) { p.first = 10 })

	err := runBG(t, newConsumer(t, o)).wait(t)
	var oor *OutOfRangeError
	if !errors.Is(err, ErrOutOfRange) || !errors.As(err, &oor) || oor.FirstAvailable != 10 || oor.Offset != 3 {
		t.Fatalf("Run = %v, want an OutOfRangeError at 3 with first available 10", err)
	}
	if !strings.Contains(err.Error(), "first available offset is 10") {
		t.Fatalf("error %q does not name the first available offset", err)
	}
	if n := len(fake.initList()); n != 2 {
		t.Fatalf("%d Inits: OutOfRange must not be retried", n)
	}
}

// TestOffsetAheadOfJournal: an offset past the producer's last one (a
// journal restored from an older copy) stops the consumer with an
// AheadError that names the journal's end and the streamctl command, not
// a journal change.
func TestOffsetAheadOfJournal(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	fake.publish("a", "a", "a")
	jid := fake.jid()
	if err := h.store.Set(h.key(jid), 9); err != nil {
		t.Fatal(err)
	}
	if err := h.store.SaveLastJournalID(h.options().Name, h.addrs[0], jid); err != nil {
		t.Fatal(err)
	}
	o := h.options()
	o.Handler = (&recorder{}).handle
	err := runBG(t, newConsumer(t, o)).wait(t)
	var ahead *AheadError
	if !errors.Is(err, ErrAheadOfJournal) || !errors.As(err, &ahead) || ahead.Offset != 9 || ahead.LastOffset != 3 {
		t.Fatalf("Run = %v, want an AheadError at 9 with last offset 3", err)
	}
	if errors.Is(err, ErrJournalChanged) {
		t.Fatalf("Run = %v: the journal did not change", err)
	}
	for _, want := range []string{"offset 9 is ahead of the journal, which ends at offset 3", "streamctl offsets set --consumer " + h.options().Name} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestNonRetryableErrors(t *testing.T) {
	h := newHarness(t, 1)
	o := h.options()
	o.Handler = (&recorder{}).handle
	o.Stream = "nope"
	err := runBG(t, newConsumer(t, o)).wait(t)
	if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), h.addrs[0]) {
		t.Fatalf("Run on an unknown stream = %v, want NotFound naming the producer", err)
	}
	if n := len(h.fake(0).initList()); n != 1 {
		t.Fatalf("%d Inits: NotFound must not be retried", n)
	}

	// A handler error in AtLeastOnce stops Run; what was handled before is saved.
	fake := h.fake(0)
	fake.publish("a", "a", "a")
	rec := &recorder{fail: func(e *streamdv1.Event) error {
		if e.SeqNr == 3 {
			return errBoom
		}
		return nil
	}}
	o.Stream, o.Handler = "", rec.handle
	err = runBG(t, newConsumer(t, o)).wait(t)
	if !errors.Is(err, errBoom) {
		t.Fatalf("Run = %v, want the handler's error", err)
	}
	if got := h.stored(fake.jid()); got != 2 {
		t.Fatalf("stored offset %d after a handler error on offset 3, want 2", got)
	}
}

func TestUpdateFilter(t *testing.T) {
	h := newHarness(t, 2)
	p1, p2 := h.fake(0), h.fake(1)
	p1.publish("a", "a")
	rec := &recorder{}
	o := h.options()
	o.Handler = rec.handle
	o.Stream = "orders"
	initial := []*streamdv1.FilterCriterion{exclude(streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE, "noise")}
	o.Filter = initial
	c := newConsumer(t, o)
	runBG(t, c)
	testwait.For(t, 10*time.Second, "both streams open and a#2 handled", func() bool {
		st := c.Status()
		return st[0].Connected && st[1].Connected && rec.count() == 2
	})

	testwait.For(t, 10*time.Second, "offset 2", func() bool { return h.stored(p1.jid()) == 2 })
	ctx := context.Background()

	// Accepted: stored, sent to both, answered.
	incX := include(streamdv1.FilterField_FILTER_FIELD_ENTITY_ID, "x")
	if err := c.UpdateFilter(ctx, []*streamdv1.FilterCriterion{incX}, nil); err != nil {
		t.Fatal(err)
	}
	want := []*streamdv1.FilterCriterion{initial[0], incX}
	stored, err := h.store.Filters("c1", "orders")
	if err != nil || !sameCriteria(stored, want) {
		t.Fatalf("stored filter %v (%v), want %v", stored, err, want)
	}
	if !sameCriteria(c.Filter(), want) {
		t.Fatalf("Filter() = %v, want %v", c.Filter(), want)
	}
	for _, p := range []*fakeProducer{p1, p2} {
		u := p.updateList()
		if len(u) != 1 || !sameCriteria(u[0].Add, []*streamdv1.FilterCriterion{incX}) || len(u[0].Remove) != 0 {
			t.Fatalf("FilterUpdates at a producer: %v", u)
		}
	}

	// Invalid: refused before anything is stored or sent.
	if err := c.UpdateFilter(ctx, []*streamdv1.FilterCriterion{include(streamdv1.FilterField_FILTER_FIELD_TOPIC, "a/#/b")}, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("UpdateFilter with a bad topic = %v, want ErrInvalid", err)
	}
	if len(p1.updateList()) != 1 {
		t.Fatal("an invalid update was sent")
	}

	// Refused by p2, accepted by p1: the old filter is stored again and p1's
	// stream is reopened with it.
	p2.set(func(p *fakeProducer) { p.refuse = "too many criteria for this producer" })
	p1Inits := len(p1.initList())
	tag := include(streamdv1.FilterField_FILTER_FIELD_TAG, "sports")
	err = c.UpdateFilter(ctx, []*streamdv1.FilterCriterion{tag}, []*streamdv1.FilterCriterion{incX})
	var fr *FilterRefusedError
	if !errors.Is(err, ErrFilterRefused) || !errors.As(err, &fr) || fr.Addr != h.addrs[1] ||
		status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "too many criteria") {
		t.Fatalf("UpdateFilter refused by p2 = %v, want a FilterRefusedError from %s", err, h.addrs[1])
	}
	if stored, _ := h.store.Filters("c1", "orders"); !sameCriteria(stored, want) {
		t.Fatalf("after a refusal the stored filter is %v, want the previous %v", stored, want)
	}
	if !sameCriteria(c.Filter(), want) {
		t.Fatalf("after a refusal Filter() = %v", c.Filter())
	}
	testwait.For(t, 10*time.Second, "p1 reopened", func() bool { return len(p1.initList()) == p1Inits+1 })
	if got := p1.initList()[p1Inits]; !sameCriteria(got.Filter, want) || got.Position.GetOffset() != 2 {
		t.Fatalf("p1's new Init: filter %v position %v, want %v at 2", got.Filter, got.Position, want)
	}
	if n := len(p2.initList()); n != 1 {
		t.Fatalf("p2, which refused, was reopened (%d Inits)", n)
	}
	p2.set(func(p *fakeProducer) { p.refuse = "" })

	// Replay from the last applied seqNr, per producer journal.
	testwait.For(t, 10*time.Second, "p1 connected again", func() bool { return c.Status()[0].Connected })
	incA := include(streamdv1.FilterField_FILTER_FIELD_ENTITY_ID, "a")
	if err := c.UpdateFilter(ctx, []*streamdv1.FilterCriterion{incA}, nil, ReplayFromLastApplied("car")); err != nil {
		t.Fatal(err)
	}
	u1, u2 := p1.updateList(), p2.updateList()
	if got := u1[len(u1)-1].Add[0].GetReplayFromSeqNr(); got != 3 {
		t.Fatalf("p1 asked to replay a from %d, want 3 (a#2 applied)", got)
	}
	if got := u2[len(u2)-1].Add[0].GetReplayFromSeqNr(); got != 1 {
		t.Fatalf("p2 asked to replay a from %d, want 1 (nothing applied there)", got)
	}
	// Stored asking for the whole history, so that a replay cut short by a
	// disconnect is asked again at the next Init.
	storedA := proto.CloneOf(incA)
	storedA.ReplayFromSeqNr = 1
	want = append(want, storedA)
	if stored, _ := h.store.Filters("c1", "orders"); !sameCriteria(stored, want) {
		t.Fatalf("stored %v, want %v (replay from 1 stored)", stored, want)
	}

	// A reconnect carries the stored filter.
	n := len(p2.initList())
	p2.disconnectAll()
	testwait.For(t, 10*time.Second, "p2 reconnects", func() bool { return len(p2.initList()) == n+1 })
	if got := p2.initList()[n].Filter; !sameCriteria(got, want) {
		t.Fatalf("Init after reconnect carries %v, want %v", got, want)
	}
}

func TestStoredFilterWinsOverOptions(t *testing.T) {
	h := newHarness(t, 1)
	stored := []*streamdv1.FilterCriterion{include(streamdv1.FilterField_FILTER_FIELD_TAG, "sports")}
	if err := h.store.SetFilters("c1", "", stored); err != nil {
		t.Fatal(err)
	}
	o := h.options()
	o.Handler = (&recorder{}).handle
	o.Filter = []*streamdv1.FilterCriterion{include(streamdv1.FilterField_FILTER_FIELD_TAG, "other")}
	c := newConsumer(t, o)
	if !sameCriteria(c.Filter(), stored) {
		t.Fatalf("Filter() = %v, want the stored %v", c.Filter(), stored)
	}
	runBG(t, c)
	testwait.For(t, 10*time.Second, "Init", func() bool { return len(h.fake(0).initList()) == 1 })
	if got := h.fake(0).initList()[0].Filter; !sameCriteria(got, stored) {
		t.Fatalf("Init.Filter = %v, want the stored %v", got, stored)
	}
}

func TestUpdateFilterWithoutRunOnlyStores(t *testing.T) {
	h := newHarness(t, 1)
	o := h.options()
	o.Handler = (&recorder{}).handle
	c := newConsumer(t, o)
	tag := include(streamdv1.FilterField_FILTER_FIELD_TAG, "sports")
	if err := c.UpdateFilter(context.Background(), []*streamdv1.FilterCriterion{tag}, nil); err != nil {
		t.Fatal(err)
	}
	runBG(t, c)
	testwait.For(t, 10*time.Second, "Init", func() bool { return len(h.fake(0).initList()) == 1 })
	if got := h.fake(0).initList()[0].Filter; !sameCriteria(got, []*streamdv1.FilterCriterion{tag}) {
		t.Fatalf("Init.Filter = %v", got)
	}
}

func TestFollowsSeveralProducers(t *testing.T) {
	h := newHarness(t, 2)
	p1, p2 := h.fake(0), h.fake(1)
	p1.publish("a", "b", "a")
	p2.publish("a", "a", "a", "a") // same entity id, another journal: its own seqNrs
	rec := &recorder{}
	o := h.options()
	o.Handler = rec.handle
	c := newConsumer(t, o)
	runBG(t, c)
	testwait.For(t, 10*time.Second, "7 events", func() bool { return rec.count() == 7 })
	testwait.For(t, 10*time.Second, "both offsets", func() bool { return h.stored(p1.jid()) == 3 && h.stored(p2.jid()) == 4 })
	st := c.Status()
	if string(st[0].JournalID) != string(p1.jid()) || st[0].Offset != 3 ||
		string(st[1].JournalID) != string(p2.jid()) || st[1].Offset != 4 {
		t.Fatalf("Status = %+v", st)
	}
}

func TestBackoffIsBoundedWithJitter(t *testing.T) {
	c := &Consumer{opts: Options{MinBackoff: 100 * time.Millisecond, MaxBackoff: 10 * time.Second}}
	for n := range 100 {
		ceiling := 100 * time.Millisecond
		for range n {
			ceiling = min(2*ceiling, 10*time.Second)
		}
		for range 20 {
			if d := c.backoff(n); d < 0 || d > ceiling {
				t.Fatalf("backoff(%d) = %s, outside [0, %s]", n, d, ceiling)
			}
		}
	}
	distinct := map[time.Duration]bool{}
	for range 20 {
		distinct[c.backoff(5)] = true
	}
	if len(distinct) < 2 {
		t.Fatal("backoff has no jitter")
	}
}

func TestResplitStartsUncoveredSlicesFromEarliest(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	covered, uncovered := idInSlices("a", 0, 511), idInSlices("b", 512, 1023)
	fake.publish(covered, covered, uncovered, uncovered)
	jid := fake.jid()
	// A former instance owned only 0-511 and got to offset 2.
	if err := h.store.Set(offsets.Key{Consumer: "c1", JournalID: jid, Slices: offsets.SliceRange{First: 0, Last: 511}}, 2); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	o := h.options()
	o.Handler = rec.handle
	r := runBG(t, newConsumer(t, o))
	// 512-1023 were never consumed: EARLIEST; what the former instance
	// applied in 0-511 (offsets 1 and 2) is not applied again.
	testwait.For(t, 10*time.Second, "2 events", func() bool { return rec.count() == 2 })
	if init := fake.initList()[0]; init.Position != nil || init.StartPolicy != streamdv1.StartPolicy_START_POLICY_EARLIEST {
		t.Fatalf("Init = %v, want EARLIEST for the uncovered slices", init)
	}
	fake.publish(covered)
	testwait.For(t, 10*time.Second, "3 events", func() bool { return rec.count() == 3 })
	if got, want := rec.got(), []string{"car/" + uncovered + "#1", "car/" + uncovered + "#2", "car/" + covered + "#3"}; !slices.Equal(got, want) {
		t.Fatalf("handled %v, want %v", got, want)
	}
	testwait.For(t, 10*time.Second, "offset 5 for 0-1023", func() bool { return h.stored(jid) == 5 })
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	// The same situation against a replaced journal: Hello names another
	// journal than the one we hold offsets for, and that is a journal change.
	if err := h.store.Delete(h.key(jid)); err != nil {
		t.Fatal(err)
	}
	if err := h.store.Set(offsets.Key{Consumer: "c1", JournalID: jid, Slices: offsets.SliceRange{First: 0, Last: 511}}, 2); err != nil {
		t.Fatal(err)
	}
	newID := fake.replaceJournal()
	err := runBG(t, newConsumer(t, o)).wait(t)
	var jc *JournalChangedError
	if !errors.As(err, &jc) || string(jc.Stored) != string(jid) || string(jc.Current) != string(newID) {
		t.Fatalf("Run = %v, want a JournalChangedError from %x to %x", err, jid, newID)
	}
}

func TestExactlyOnceDedupesAgainstTheStore(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	fake.publish("a", "a", "a", "b")
	jid := fake.jid()
	// a#1 and a#2 were applied through another slice range (a re-split).
	if err := h.store.Save(offsets.Key{Consumer: "c1", JournalID: jid, Slices: offsets.SliceRange{First: 600, Last: 700}}, 0,
		[]offsets.Applied{{EntityType: "car", EntityID: "a", SeqNr: 2}}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	o := h.options()
	o.TxHandler = func(_ context.Context, _ *badger.Txn, e *streamdv1.Event) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, fmt.Sprintf("%s#%d", e.EntityId, e.SeqNr))
		return nil
	}
	runBG(t, newConsumer(t, o))
	testwait.For(t, 10*time.Second, "offset 4", func() bool { return h.stored(jid) == 4 })
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, []string{"a#3", "b#1"}) {
		t.Fatalf("TxHandler got %v, want a#3 and b#1", got)
	}
}

// Replay batches carry old offsets and must never move the stored offset, in
// either mode, even when their offsets are above it.
func TestReplayBatchesDoNotMoveOffset(t *testing.T) {
	for _, mode := range []Mode{AtLeastOnce, ExactlyOnce} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newHarness(t, 1)
			o := h.options()
			handled := 0
			if mode == AtLeastOnce {
				o.Handler = func(context.Context, *streamdv1.Event) error { handled++; return nil }
			} else {
				o.TxHandler = func(context.Context, *badger.Txn, *streamdv1.Event) error { handled++; return nil }
			}
			c := newConsumer(t, o)
			f := c.followers[0]
			f.journalID, f.known, f.offset = newJournalID(), true, 5
			ev := &streamdv1.Event{Offset: 9, EntityType: "car", EntityId: "a", SeqNr: 1, Slice: journal.SliceOf("a")}
			if err := f.handle(context.Background(), &streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Events{
				Events: &streamdv1.EventBatch{Events: []*streamdv1.Event{ev}, Replay: true}}}); err != nil {
				t.Fatal(err)
			}
			if err := f.flush(); err != nil {
				t.Fatal(err)
			}
			if handled != 1 || f.offset != 5 {
				t.Fatalf("handled %d, offset %d: want the event handled and the offset kept at 5", handled, f.offset)
			}
			p, _, err := h.store.Get(h.key(f.journalID))
			if err != nil || p.Offset > 5 {
				t.Fatalf("stored offset %v (%v), want at most 5", p, err)
			}
			if seq, _ := h.store.AppliedSeqNr(nil, "c1", f.journalID, "car", "a"); seq != 1 {
				t.Fatalf("applied seqNr %d, want 1", seq)
			}
		})
	}
}

func TestCoalesceMergesQueuedLiveBatches(t *testing.T) {
	batch := func(replay bool, offsets ...uint64) *streamdv1.SubscribeResponse {
		b := &streamdv1.EventBatch{Replay: replay}
		for _, o := range offsets {
			b.Events = append(b.Events, &streamdv1.Event{Offset: o})
		}
		return &streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Events{Events: b}}
	}
	progress := &streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Progress{Progress: &streamdv1.Progress{Offset: 9}}}
	offsetsOf := func(m *streamdv1.SubscribeResponse) (out []uint64) {
		for _, e := range m.GetEvents().GetEvents() {
			out = append(out, e.GetOffset())
		}
		return out
	}

	msgs := make(chan *streamdv1.SubscribeResponse, 8)
	msgs <- batch(false, 3, 4)
	msgs <- batch(false, 5)
	msgs <- progress
	msgs <- batch(false, 10)
	merged, next := coalesce(batch(false, 1, 2), msgs)
	if got := offsetsOf(merged); !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) || merged.GetEvents().GetReplay() {
		t.Fatalf("merged %v (replay %v), want live 1..5", got, merged.GetEvents().GetReplay())
	}
	if next != progress || len(msgs) != 1 {
		t.Fatalf("next = %v with %d queued, want the Progress and the later batch left queued", next, len(msgs))
	}

	// Replay batches are never merged with live ones.
	msgs = make(chan *streamdv1.SubscribeResponse, 8)
	msgs <- batch(true, 1)
	merged, next = coalesce(batch(false, 7), msgs)
	if got := offsetsOf(merged); !slices.Equal(got, []uint64{7}) || !next.GetEvents().GetReplay() {
		t.Fatalf("merged %v, next %v: a replay batch was merged", got, next)
	}
	if merged, next = coalesce(batch(true, 1), msgs); next != nil || offsetsOf(merged)[0] != 1 {
		t.Fatalf("a replay batch was coalesced: %v %v", merged, next)
	}
}

// After a re-split onto pieces stored at different offsets, the consumer
// starts at the lowest and drops what each piece had applied; across a
// restart before it passes them all; in both modes.
func TestResplitDropsWhatEachPieceApplied(t *testing.T) {
	for _, mode := range []Mode{AtLeastOnce, ExactlyOnce} {
		t.Run(mode.String(), func(t *testing.T) {
			h := newHarness(t, 1)
			fake := h.fake(0)
			low, high := idInSlices("l", 0, 511), idInSlices("h", 512, 1023)
			fake.publish(low, low, high, high, low) // offsets 1..5
			jid := fake.jid()
			piece := func(first, last uint32) offsets.Key {
				return offsets.Key{Consumer: "c1", JournalID: jid, Slices: offsets.SliceRange{First: first, Last: last}}
			}
			// Two former instances: 0-511 applied up to 2, 512-1023 up to 6
			// (the event at 6, of high, is still on its way here).
			if err := h.store.Set(piece(0, 511), 2); err != nil {
				t.Fatal(err)
			}
			if err := h.store.Set(piece(512, 1023), 6); err != nil {
				t.Fatal(err)
			}
			rec := &recorder{}
			o := h.options()
			if mode == ExactlyOnce {
				o.TxHandler = func(ctx context.Context, _ *badger.Txn, e *streamdv1.Event) error { return rec.handle(ctx, e) }
			} else {
				o.Handler = rec.handle
			}
			r := runBG(t, newConsumer(t, o))
			testwait.For(t, 10*time.Second, "l#3", func() bool { return rec.count() == 1 })
			testwait.For(t, 10*time.Second, "piece 0-511 at 5", func() bool { p, _, _ := h.store.Get(piece(0, 511)); return p.Offset == 5 })
			if err := r.stop(t); err != nil {
				t.Fatal(err)
			}
			if p := mustGetPos(t, h.store, piece(512, 1023)); p.Offset != 6 {
				t.Fatalf("piece 512-1023 at %d, want 6 (kept while the offset is below it)", p.Offset)
			}

			fake.publish(high, high, low) // offsets 6, 7, 8
			runBG(t, newConsumer(t, o))
			testwait.For(t, 10*time.Second, "3 events", func() bool { return rec.count() == 3 })
			want := []string{"car/" + low + "#3", "car/" + high + "#4", "car/" + low + "#4"}
			if got := rec.got(); !slices.Equal(got, want) {
				t.Fatalf("handled %v, want %v", got, want)
			}
			testwait.For(t, 10*time.Second, "offset 8 for 0-1023", func() bool { return h.stored(jid) == 8 })
			if entries, err := h.store.List("c1"); err != nil || len(entries) != 1 {
				t.Fatalf("stored entries %v, %v: want the whole range only", entries, err)
			}
		})
	}
}

func mustGetPos(t *testing.T, s *offsets.Store, k offsets.Key) offsets.Offset {
	t.Helper()
	p, found, err := s.Get(k)
	if err != nil || !found {
		t.Fatalf("Get(%s) = %v, %v", k, found, err)
	}
	return p
}

// A store written by earlier builds keeps the journal id last seen under
// the consumer's former key; a restart on it still notices that the
// producer's journal was replaced.
func TestJournalChangeFromTheFormerRecord(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	fake.publish("a", "a")
	oldID := newJournalID()
	if err := h.store.Set(offsets.Key{Consumer: "c1", JournalID: oldID, Slices: offsets.AllSlices}, 7); err != nil {
		t.Fatal(err)
	}
	err := h.store.DB().Update(func(txn *badger.Txn) error {
		return txn.Set([]byte("consumer/journal/2:c1/"+h.addrs[0]), append([]byte{1}, oldID...))
	})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	o := h.options()
	o.Handler = rec.handle
	err = runBG(t, newConsumer(t, o)).wait(t)
	var jc *JournalChangedError
	if !errors.As(err, &jc) || string(jc.Stored) != string(oldID) {
		t.Fatalf("Run = %v, want a JournalChangedError from %x", err, oldID)
	}
	if rec.count() != 0 {
		t.Fatalf("handled events of the new journal without permission: %v", rec.got())
	}
}

// A consumer tells a producer that takes them the offset it stored, at most
// once per ReportInterval per stream.
func TestOffsetReports(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	fake.set(func(p *fakeProducer) { p.reports = true })
	reported := func() [][2]uint64 { // connection, offset
		fake.mu.Lock()
		defer fake.mu.Unlock()
		return slices.Clone(fake.stored)
	}
	fake.publish("a", "b", "c")
	rec := &recorder{}
	o := h.options()
	o.Handler, o.ReportInterval = rec.handle, time.Hour
	c := newConsumer(t, o)
	runBG(t, c)
	jid := fake.jid()
	testwait.For(t, 10*time.Second, "a report", func() bool { return len(reported()) == 1 })
	if got := reported()[0]; got[1] == 0 || got[1] > h.stored(jid) {
		t.Fatalf("reported %d, stored %d: want what was stored", got[1], h.stored(jid))
	}
	fake.publish("d")
	testwait.For(t, 10*time.Second, "offset 4 stored", func() bool { return h.stored(jid) == 4 })
	fake.publish("e")
	testwait.For(t, 10*time.Second, "offset 5 stored", func() bool { return h.stored(jid) == 5 })
	// A new stream reports at once; nothing more was reported on the first.
	fake.disconnectAll()
	testwait.For(t, 10*time.Second, "the report of the new stream", func() bool {
		r := reported()
		return len(r) > 0 && r[len(r)-1][0] > 0
	})
	if got := reported(); len(got) != 2 || got[1] != [2]uint64{1, 5} {
		t.Fatalf("reports (connection, offset) %v, want one on connection 0 and then 5 on connection 1", got)
	}
}

// Options.Streams opens one stream per part of the slices, each resuming
// from its own stored offset; a changed number of streams is a re-split
// that hands over every event not handled yet, once.
func TestStreamsSplitTheSlices(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	ids := []string{idInSlices("a", 0, 255), idInSlices("b", 256, 511), idInSlices("c", 512, 767), idInSlices("d", 768, 1023)}
	fake.publish(ids...) // offsets 1..4
	jid := fake.jid()
	rec := &recorder{}
	o := h.options()
	o.Handler, o.Streams = rec.handle, 3
	c := newConsumer(t, o)
	r := runBG(t, c)
	testwait.For(t, 10*time.Second, "4 events", func() bool { return rec.count() == 4 })
	testwait.For(t, 10*time.Second, "3 streams open", func() bool { return fake.openStreams() == 3 })
	var ranges []string
	for _, in := range fake.initList() {
		ranges = append(ranges, fmt.Sprintf("%d-%d", in.GetSliceRange().GetFirst(), in.GetSliceRange().GetLast()))
	}
	slices.Sort(ranges)
	if want := []string{"0-340", "341-681", "682-1023"}; !slices.Equal(ranges, want) {
		t.Fatalf("Inits over slices %v, want %v", ranges, want)
	}
	testwait.For(t, 10*time.Second, "one Status entry, connected at 4", func() bool {
		st := c.Status()
		return len(st) == 1 && st[0].Connected && st[0].Offset == 4 && st[0].Lag == 0
	})
	testwait.For(t, 10*time.Second, "3 offsets stored at 4", func() bool {
		entries, err := h.store.List("c1")
		if err != nil || len(entries) != 3 {
			return false
		}
		for _, e := range entries {
			if e.Offset.Offset != 4 {
				return false
			}
		}
		return true
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	// Each former stream at its own offset: the part 341-681 (b, c's
	// slices below 682) is behind the others.
	for _, e := range []struct {
		r   offsets.SliceRange
		off uint64
	}{{offsets.SliceRange{First: 0, Last: 340}, 5}, {offsets.SliceRange{First: 341, Last: 681}, 1}, {offsets.SliceRange{First: 682, Last: 1023}, 6}} {
		if err := h.store.Set(offsets.Key{Consumer: "c1", JournalID: jid, Slices: e.r}, e.off); err != nil {
			t.Fatal(err)
		}
	}
	fake.publish(ids...) // offsets 5..8: a#2 b#2 c#2 d#2
	rec2 := &recorder{}
	o.Handler, o.Streams = rec2.handle, 2
	r = runBG(t, newConsumer(t, o))
	// The new parts 0-511 and 512-1023 start at offset 2 (the lowest
	// piece's, 341-681 at 1). a#2 (offset 5) is at its piece's offset 5:
	// applied, dropped by offset (the applied seqNrs do not know it). b#1
	// (2) comes again for its piece at 1 and is dropped by seqNr. b#2,
	// c#2 (6, 7) and d#2 (8, above its piece's 6) are new.
	testwait.For(t, 10*time.Second, "offset 8 in both parts", func() bool {
		entries, err := h.store.List("c1")
		return err == nil && len(entries) == 2 && entries[0].Offset.Offset == 8 && entries[1].Offset.Offset == 8
	})
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	got := rec2.got()
	slices.Sort(got)
	want := []string{"car/" + ids[1] + "#2", "car/" + ids[2] + "#2", "car/" + ids[3] + "#2"}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("after the re-split to 2 streams: handled %v, want %v", got, want)
	}
}

// With a CommitHandler, an offset moved over filtered events alone is
// saved through the handler too (no events, the offset records), so that
// it commits with whatever the handler commits.
func TestProgressSavedThroughCommitHandler(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	var mu sync.Mutex
	var events, empty int
	o := h.options()
	o.Filter = []*streamdv1.FilterCriterion{exclude(streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE, "noise")}
	o.CommitHandler = func(_ context.Context, batch []*streamdv1.Event, offsetWrites []offsets.Write) error {
		mu.Lock()
		events += len(batch)
		if len(batch) == 0 {
			empty++
		}
		mu.Unlock()
		return h.store.DB().Update(func(txn *badger.Txn) error { return setOffsets(txn, offsetWrites) })
	}
	runBG(t, newConsumer(t, o))
	fake.publish("a", "noise/n1", "noise/n2")
	jid := fake.jid()
	testwait.For(t, 10*time.Second, "offset 3 stored", func() bool { return h.stored(jid) == 3 })
	mu.Lock()
	defer mu.Unlock()
	if events != 1 || empty == 0 {
		t.Fatalf("CommitHandler got %d events and %d calls without events; want 1 event and the offset over the filtered ones without events", events, empty)
	}
}

// With NoDedupe, a replay during a re-split reaches the handler even for
// events at or below their piece's offset: a replication moves its offset
// past an entity's events it holds back after a gap, and the replay it
// asks for then is the only way they come.
func TestReplayDuringResplitWithNoDedupe(t *testing.T) {
	h := newHarness(t, 1)
	fake := h.fake(0)
	low, high := idInSlices("l", 0, 511), idInSlices("h", 512, 1023)
	fake.publish(low, high) // offsets 1, 2
	jid := fake.jid()
	for _, p := range []struct {
		first, last uint32
		off         uint64
	}{{0, 511, 100}, {512, 1023, 1}} {
		if err := h.store.Set(offsets.Key{Consumer: "c1", JournalID: jid, Slices: offsets.SliceRange{First: p.first, Last: p.last}}, p.off); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []string
	o := h.options()
	o.NoDedupe = true
	o.BatchHandler = func(_ context.Context, events []*streamdv1.Event) error {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range events {
			got = append(got, fmt.Sprintf("%s#%d", e.EntityId, e.SeqNr))
		}
		return nil
	}
	handled := func(want ...string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.Equal(got, want)
		}
	}
	c := newConsumer(t, o)
	r := runBG(t, c)
	// low#1 (offset 1) is at or below its piece's offset 100: applied.
	testwait.For(t, 10*time.Second, high+"#1 only", handled(high+"#1"))
	if err := c.Replay(context.Background(), "car", low, 1); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, 10*time.Second, "the replay of "+low, handled(high+"#1", low+"#1"))
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// Two journals (the pods of a region sharing a replication) hold copies of
// the same source events, with the same origin and origin seqNr: with
// DedupeOrigin a TxHandler consumer of both applies each once, in order,
// also across a restart; events without an origin stay per journal.
// Without it, each copy is applied.
func TestDedupeOrigin(t *testing.T) {
	for _, dedupe := range []bool{true, false} {
		t.Run(fmt.Sprint("DedupeOrigin=", dedupe), func(t *testing.T) {
			h := newHarness(t, 2)
			a, b := h.fake(0), h.fake(1)
			copies := func(p *fakeProducer, from, to uint64) {
				for i, e := range p.publish(slices.Repeat([]string{"x"}, int(to-from+1))...) {
					e.Origin, e.OriginSeqNr = "eu", from+uint64(i)
				}
			}
			copies(a, 1, 3)
			a.publish("local")
			copies(b, 1, 5)
			b.publish("local")
			o := h.options()
			o.DedupeOrigin, o.TxHandler = dedupe, inOrder
			run := func(wantA, wantB uint64) {
				r := runBG(t, newConsumer(t, o))
				testwait.For(t, 10*time.Second, "both offsets", func() bool { return h.stored(a.jid()) == wantA && h.stored(b.jid()) == wantB })
				if err := r.stop(t); err != nil {
					t.Fatal(err)
				}
			}
			run(4, 6)
			copies(b, 6, 6) // later, only the new owner gets it
			copies(a, 4, 4) // and the former owner had copied one more
			run(5, 7)
			want := map[string]int{"local#1": 2, "x#1": 1, "x#2": 1, "x#3": 1, "x#4": 1, "x#5": 1, "x#6": 1}
			if !dedupe {
				want = map[string]int{"local#1": 2, "x#1": 2, "x#2": 2, "x#3": 2, "x#4": 2, "x#5": 1, "x#6": 1}
			}
			got, late := appliedCounts(t, h)
			if !maps.Equal(got, want) {
				t.Fatalf("applied %v, want %v", got, want)
			}
			if dedupe && late != 0 {
				t.Fatalf("%d origin seqNrs applied after a later one of their entity", late)
			}
		})
	}
}

// recordApplied is a TxHandler whose effect, in its transaction, is a key
// of its own per event applied: applied/<entity id>#<origin seqNr, or
// seqNr>/<n>. It reads nothing, so two transactions applying the same event
// do not conflict through it. (A transaction that conflicts runs again; only
// its last run commits.)
func recordApplied(_ context.Context, txn *badger.Txn, e *streamdv1.Event) error {
	seq := e.OriginSeqNr
	if e.Origin == "" {
		seq = e.SeqNr
	}
	return txn.Set([]byte(fmt.Sprintf("applied/%s#%d/%d", e.EntityId, seq, recorded.Add(1))), nil)
}

var recorded atomic.Uint64

// inOrder adds to recordApplied's effect a count, under late, of origin
// seqNrs applied after a later one of their entity.
func inOrder(ctx context.Context, txn *badger.Txn, e *streamdv1.Event) error {
	if err := recordApplied(ctx, txn, e); err != nil || e.Origin == "" {
		return err
	}
	last, err := valueOf(txn, "last/"+e.EntityId)
	if err != nil {
		return err
	}
	if e.OriginSeqNr <= last {
		late, err := valueOf(txn, "late")
		if err != nil {
			return err
		}
		if err := txn.Set([]byte("late"), binary.BigEndian.AppendUint64(nil, late+1)); err != nil {
			return err
		}
	}
	return txn.Set([]byte("last/"+e.EntityId), binary.BigEndian.AppendUint64(nil, max(e.OriginSeqNr, last)))
}

func valueOf(txn *badger.Txn, key string) (uint64, error) {
	item, err := txn.Get([]byte(key))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

// appliedCounts reads what recordApplied and inOrder committed: how many
// times each event was applied, and the late count.
func appliedCounts(t *testing.T, h *harness) (applied map[string]int, late uint64) {
	t.Helper()
	applied = map[string]int{}
	err := h.store.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("applied/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := strings.TrimPrefix(string(it.Item().Key()), "applied/")
			applied[k[:strings.LastIndexByte(k, '/')]]++
		}
		var err error
		late, err = valueOf(txn, "late")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return applied, late
}

// Both journals deliver the same copies at the same time, in small batches:
// the two followers' transactions conflict on the origin seqNrs, and each
// copy is still applied once.
func TestDedupeOriginConcurrent(t *testing.T) {
	h := newHarness(t, 2)
	const entities, each = 30, 10
	for i := range 2 {
		p := h.fake(i)
		p.set(func(p *fakeProducer) { p.batchSize = 7 })
		for n := range each {
			for k := range entities {
				e := p.publish(fmt.Sprint("e", k))[0]
				e.Origin, e.OriginSeqNr = "eu", uint64(n+1)
			}
		}
	}
	o := h.options()
	o.DedupeOrigin = true
	o.TxHandler = func(ctx context.Context, txn *badger.Txn, e *streamdv1.Event) error {
		time.Sleep(50 * time.Microsecond) // both followers inside their transactions at once
		return recordApplied(ctx, txn, e)
	}
	runBG(t, newConsumer(t, o))
	testwait.For(t, 10*time.Second, "both offsets", func() bool {
		return h.stored(h.fake(0).jid()) == entities*each && h.stored(h.fake(1).jid()) == entities*each
	})
	applied, late := appliedCounts(t, h)
	if len(applied) != entities*each || late != 0 {
		t.Fatalf("%d distinct events applied, want %d; %d out of order", len(applied), entities*each, late)
	}
	for k, n := range applied {
		if n != 1 {
			t.Fatalf("%s applied %d times", k, n)
		}
	}
}

package admin_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/admin"
	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// serveGRPC serves register's services on 127.0.0.1 and returns the address.
func serveGRPC(t *testing.T, register func(*grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	register(g)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

type fixture struct {
	p       *producer.Producer
	store   *offsets.Store
	admin   streamdv1.AdminServiceClient
	handled atomic.Int64
	failing atomic.Bool // the handler fails while set
	tags    sync.Map    // tags seen
}

// newFixture runs a producer, one at-least-once consumer "repl" of it
// through a Registry, and the registry's AdminService, all over TCP.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{}
	p, err := producer.Open(t.TempDir(), producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f.p = p
	prodAddr := serveGRPC(t, func(g *grpc.Server) { streamdv1.RegisterEventStreamServiceServer(g, p.Server()) })
	t.Cleanup(func() { p.Server().Shutdown(); p.Close() })
	if f.store, err = offsets.Open(t.TempDir(), offsets.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.store.Close() })
	c, err := consumer.New(consumer.Options{
		Producers: []string{prodAddr}, Name: "repl", Store: f.store, SaveEvery: 1,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Handler: func(_ context.Context, e *streamdv1.Event) error {
			if f.failing.Load() {
				return errors.New("handler refuses")
			}
			f.handled.Add(1)
			for _, tag := range e.GetTags() {
				f.tags.Store(tag, true)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	reg := admin.NewRegistry(nil)
	if err := reg.Add(c); err != nil {
		t.Fatal(err)
	}
	if err := reg.Add(c); err == nil {
		t.Fatal("a second consumer named repl was added")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	conn, err := grpc.NewClient(serveGRPC(t, reg.Register), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f.admin = streamdv1.NewAdminServiceClient(conn)
	return f
}

func (f *fixture) publish(t *testing.T, n int, tag string) {
	t.Helper()
	for i := range n {
		e := &streamdv1.Event{EntityType: "car", EntityId: tag + "-" + string(rune('a'+i%26)), EventType: "moved", Tags: []string{tag}}
		if _, err := f.p.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *fixture) status(t *testing.T) *streamdv1.ConsumerStatus {
	t.Helper()
	resp, err := f.admin.ListConsumers(context.Background(), &streamdv1.ListConsumersRequest{Consumer: "repl"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetConsumers()) != 1 {
		t.Fatalf("ListConsumers(repl) = %d consumers, want 1", len(resp.GetConsumers()))
	}
	return resp.GetConsumers()[0]
}

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("err = %v, want code %v", err, code)
	}
}

func TestStatusAndOffsets(t *testing.T) {
	f := newFixture(t)
	f.publish(t, 10, "sports")
	last := f.p.Journal().LastOffset()
	testwait.For(t, 10*time.Second, "the consumer to reach the end", func() bool {
		ps := f.status(t).GetProducers()
		return len(ps) == 1 && ps[0].GetConnected() && ps[0].GetOffset() == last
	})
	st := f.status(t)
	if !st.GetRunning() || st.GetMode() != "AtLeastOnce" || st.GetProducers()[0].GetLag() != 0 {
		t.Fatalf("status = %v", st)
	}
	testwait.For(t, 10*time.Second, "the offset to be saved", func() bool {
		resp, err := f.admin.ListOffsets(context.Background(), &streamdv1.ListOffsetsRequest{})
		return err == nil && len(resp.GetOffsets()) == 1 && resp.GetOffsets()[0].GetOffset() == last
	})
	got, err := f.admin.GetOffset(context.Background(), &streamdv1.GetOffsetRequest{Selector: &streamdv1.OffsetSelector{Consumer: "repl"}})
	if err != nil || got.GetOffset().GetOffset() != last || !got.GetExact() {
		t.Fatalf("GetOffset = %v, %v; want offset %d, exact", got, err, last)
	}
	_, err = f.admin.ListConsumers(context.Background(), &streamdv1.ListConsumersRequest{Consumer: "nobody"})
	wantCode(t, err, codes.NotFound)
	_, err = f.admin.GetOffset(context.Background(), &streamdv1.GetOffsetRequest{Selector: &streamdv1.OffsetSelector{Consumer: "repl", JournalId: []byte{1, 2}}})
	wantCode(t, err, codes.InvalidArgument)
}

func TestUpdateConsumerFilter(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	include, err := filters.Parse("include tag=family", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, err := f.admin.UpdateConsumerFilter(ctx, &streamdv1.UpdateConsumerFilterRequest{Consumer: "repl", Add: []*streamdv1.FilterCriterion{include}})
	if err != nil || len(resp.GetFilter()) != 1 {
		t.Fatalf("UpdateConsumerFilter = %v, %v", resp, err)
	}
	f.publish(t, 5, "sports")
	f.publish(t, 5, "family")
	last := f.p.Journal().LastOffset()
	testwait.For(t, 10*time.Second, "the consumer to pass the end", func() bool { return f.status(t).GetProducers()[0].GetOffset() == last })
	if _, ok := f.tags.Load("sports"); ok || f.handled.Load() != 5 {
		t.Fatalf("handled %d events (sports seen: %v), want the 5 family events only", f.handled.Load(), ok)
	}
	if got := f.status(t).GetFilter(); len(got) != 1 || filters.Format(got[0]) != "include tag=family" {
		t.Fatalf("ListConsumers filter = %v", got)
	}
	golf, _ := filters.Parse("include tag=golf", time.Now())
	_, err = f.admin.UpdateConsumerFilter(ctx, &streamdv1.UpdateConsumerFilterRequest{Consumer: "repl", Remove: []*streamdv1.FilterCriterion{golf}})
	wantCode(t, err, codes.NotFound)
	bad := &streamdv1.FilterCriterion{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_ID_REGEX, Value: "("}
	_, err = f.admin.UpdateConsumerFilter(ctx, &streamdv1.UpdateConsumerFilterRequest{Consumer: "repl", Add: []*streamdv1.FilterCriterion{bad}})
	wantCode(t, err, codes.InvalidArgument)
	if got := f.status(t).GetFilter(); len(got) != 1 {
		t.Fatalf("a refused update changed the filter: %v", got)
	}
}

// A consumer stopped on an error stays stopped with the error visible; an
// operator's MoveOffsets starts it again. Dry runs change nothing.
func TestMoveOffsetsRestartsAStoppedConsumer(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.publish(t, 4, "sports")
	last := f.p.Journal().LastOffset()
	testwait.For(t, 10*time.Second, "the offset to be saved", func() bool {
		got, err := f.admin.GetOffset(ctx, &streamdv1.GetOffsetRequest{Selector: &streamdv1.OffsetSelector{Consumer: "repl"}})
		return err == nil && got.GetOffset().GetOffset() == last
	})
	f.failing.Store(true)
	f.publish(t, 1, "truck")
	testwait.For(t, 10*time.Second, "the consumer to stop on the handler error", func() bool {
		st := f.status(t)
		return !st.GetRunning() && st.GetError() != ""
	})

	dry, err := f.admin.MoveOffsets(ctx, &streamdv1.MoveOffsetsRequest{Selector: &streamdv1.OffsetSelector{Consumer: "repl"}, ToOffset: 2})
	if err != nil || dry.GetExecuted() || len(dry.GetChanges()) != 1 || dry.GetChanges()[0].GetFrom().GetOffset() != last {
		t.Fatalf("dry run = %v, %v", dry, err)
	}
	if got, _ := f.admin.GetOffset(ctx, &streamdv1.GetOffsetRequest{Selector: &streamdv1.OffsetSelector{Consumer: "repl"}}); got.GetOffset().GetOffset() != last {
		t.Fatalf("a dry run moved the offset to %d", got.GetOffset().GetOffset())
	}
	if f.status(t).GetRunning() {
		t.Fatal("a dry run restarted the consumer")
	}

	f.failing.Store(false)
	moved, err := f.admin.MoveOffsets(ctx, &streamdv1.MoveOffsetsRequest{Selector: &streamdv1.OffsetSelector{Consumer: "repl"}, ToStartPolicy: streamdv1.StartPolicy_START_POLICY_LATEST, Execute: true})
	if err != nil || !moved.GetExecuted() || moved.GetChanges()[0].GetTo().GetStartPolicy() != streamdv1.StartPolicy_START_POLICY_LATEST {
		t.Fatalf("MoveOffsets = %v, %v", moved, err)
	}
	// Started from latest: what is published once its stream is open
	// (Hello received) is delivered.
	testwait.For(t, 10*time.Second, "the consumer's stream to open again", func() bool {
		st := f.status(t)
		return st.GetRunning() && st.GetError() == "" && st.GetProducers()[0].GetConnected()
	})
	f.publish(t, 3, "family")
	testwait.For(t, 10*time.Second, "the events after latest", func() bool { return f.handled.Load() == 4+3 })

	_, err = f.admin.MoveOffsets(ctx, &streamdv1.MoveOffsetsRequest{Selector: &streamdv1.OffsetSelector{Consumer: "repl"}, ToStartPolicy: streamdv1.StartPolicy_START_POLICY_AT_TIME})
	wantCode(t, err, codes.InvalidArgument)
	_, err = f.admin.MoveOffsets(ctx, &streamdv1.MoveOffsetsRequest{Selector: &streamdv1.OffsetSelector{Consumer: "nobody"}, Execute: true})
	wantCode(t, err, codes.NotFound)
}

// Mount serves, on the service's own gRPC server, the consumers it runs and
// the consumers reading from its producer, with what each last reported.
func TestMountShowsReaders(t *testing.T) {
	p, err := producer.Open(t.TempDir(), producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Server().Shutdown(); p.Close() })
	store, err := offsets.Open(t.TempDir(), offsets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := consumer.New(consumer.Options{
		Producers: []string{lis.Addr().String()}, Name: "billing", Store: store,
		SaveInterval: 10 * time.Millisecond, ReportInterval: 10 * time.Millisecond,
		Handler: func(context.Context, *streamdv1.Event) error { return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	streamdv1.RegisterEventStreamServiceServer(g, p.Server())
	reg, err := admin.Mount(g, admin.Options{Consumers: []*consumer.Consumer{c}, Producer: p.Server()})
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	api := streamdv1.NewAdminServiceClient(conn)

	for i := range 20 {
		if _, err := p.Publish(ctx, &streamdv1.Event{EntityType: "car", EntityId: string(rune('a' + i)), EventType: "moved"}); err != nil {
			t.Fatal(err)
		}
	}
	last := p.Journal().LastOffset()
	var resp *streamdv1.ListConsumersResponse
	testwait.For(t, 10*time.Second, "billing's report of the last offset", func() bool {
		resp, err = api.ListConsumers(ctx, &streamdv1.ListConsumersRequest{})
		return err == nil && len(resp.GetReaders()) == 1 && resp.GetReaders()[0].GetStoredOffset() == last
	})
	r := resp.GetReaders()[0]
	if r.GetConsumer() != "billing" || !r.GetConnected() || r.GetLag() != 0 || r.GetDeliveredOffset() != last || r.GetSlices().GetLast() != 1023 {
		t.Fatalf("reader = %v, want billing connected, lag 0, delivered %d", r, last)
	}
	if len(resp.GetConsumers()) != 1 || resp.GetConsumers()[0].GetName() != "billing" {
		t.Fatalf("consumers = %v, want billing", resp.GetConsumers())
	}
}

// A consumer a group member runs shows in ListConsumers with its group and
// the slices of the consumer running now; the Registry does not run it and
// refuses to move its offsets or change its filter.
func TestGroupMember(t *testing.T) {
	p, err := producer.Open(t.TempDir(), producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	prodAddr := serveGRPC(t, func(g *grpc.Server) { streamdv1.RegisterEventStreamServiceServer(g, p.Server()) })
	t.Cleanup(func() { p.Server().Shutdown(); p.Close() })
	store, err := offsets.Open(t.TempDir(), offsets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	var handled atomic.Int64
	over := func(slices offsets.SliceRange) *consumer.Consumer {
		c, err := consumer.New(consumer.Options{Producers: []string{prodAddr}, Name: "grp", Store: store, SaveEvery: 1, Slices: slices,
			Handler: func(context.Context, *streamdv1.Event) error { handled.Add(1); return nil }})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	reg := admin.NewRegistry(nil)
	m, err := reg.AddMember(over(offsets.AllSlices), "eu-from-us")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Run(ctx) }()
	defer func() { cancel(); <-done }()
	conn, err := grpc.NewClient(serveGRPC(t, reg.Register), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	api := streamdv1.NewAdminServiceClient(conn)
	status := func() *streamdv1.ConsumerStatus {
		t.Helper()
		resp, err := api.ListConsumers(context.Background(), &streamdv1.ListConsumersRequest{})
		if err != nil || len(resp.GetConsumers()) != 1 {
			t.Fatalf("ListConsumers = %v, %v; want grp only", resp, err)
		}
		return resp.GetConsumers()[0]
	}
	if st := status(); st.GetName() != "grp" || st.GetGroup() != "eu-from-us" || st.GetRunning() || st.GetSlices() != nil {
		t.Fatalf("before the member runs: %v; want grp of group eu-from-us, not running, no slices", st)
	}

	for i := range 20 {
		if _, err := p.Publish(context.Background(), &streamdv1.Event{EntityType: "car", EntityId: fmt.Sprint("c", i), EventType: "moved"}); err != nil {
			t.Fatal(err)
		}
	}
	half := offsets.SliceRange{First: 0, Last: 511}
	c := over(half)
	m.Running(c)
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- c.Run(runCtx) }()
	testwait.For(t, 10*time.Second, "the member's consumer to show connected over 0-511", func() bool {
		st := status()
		r, _ := offsets.SliceRangeFromProto(st.GetSlices())
		return st.GetRunning() && st.GetSlices() != nil && r == half && len(st.GetProducers()) > 0 && st.GetProducers()[0].GetConnected()
	})

	sel := &streamdv1.OffsetSelector{Consumer: "grp"}
	for _, execute := range []bool{false, true} {
		_, err = api.MoveOffsets(context.Background(), &streamdv1.MoveOffsetsRequest{Selector: sel, ToStartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST, Execute: execute})
		wantCode(t, err, codes.FailedPrecondition)
	}
	_, err = api.UpdateConsumerFilter(context.Background(), &streamdv1.UpdateConsumerFilterRequest{Consumer: "grp", Add: []*streamdv1.FilterCriterion{{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE, Value: "car"}}})
	wantCode(t, err, codes.FailedPrecondition)
	if !strings.Contains(err.Error(), "eu-from-us") {
		t.Fatalf("the refusal %q does not name the group", err)
	}

	stop()
	<-ran
	m.Stopped(errors.New("source journal changed"))
	if st := status(); st.GetRunning() || st.GetSlices() != nil || st.GetError() != "source journal changed" {
		t.Fatalf("after its consumer stopped: %v; want not running, no slices, its error", st)
	}
	if _, err := reg.AddMember(over(offsets.AllSlices), "eu-from-us"); err == nil {
		t.Fatal("a second consumer named grp was added")
	}
}

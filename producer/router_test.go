package producer

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// slowRouter routes entity type "order": it records the payloads in the
// order it writes them, taking longer for the first event of each entity,
// so that writes started out of order would finish out of order.
type slowRouter struct {
	mu      sync.Mutex
	written map[string][]string // per entity id
	n       int
}

func (r *slowRouter) Routes(e *streamdv1.Event) (bool, error) {
	if e.GetEntityType() == "order" && len(e.GetCrdtOps()) > 0 {
		return false, status.Error(codes.InvalidArgument, "no ops on orders")
	}
	return e.GetEntityType() == "order", nil
}

func (r *slowRouter) Publish(ctx context.Context, events []*streamdv1.Event) ([]*streamdv1.Appended, error) {
	id := events[0].GetEntityId()
	r.mu.Lock()
	first := len(r.written[id]) == 0
	r.mu.Unlock()
	if first {
		time.Sleep(20 * time.Millisecond) // a slow forward, not synchronisation
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*streamdv1.Appended
	for _, e := range events {
		if string(e.Payload) == "fail" {
			return nil, status.Error(codes.Unavailable, "region far is unavailable")
		}
		r.written[id] = append(r.written[id], string(e.Payload))
		r.n++
		out = append(out, &streamdv1.Appended{Offset: uint64(r.n), SeqNr: uint64(len(r.written[id])), Region: "far", Version: uint64(len(r.written[id]))})
	}
	return out, nil
}

func order(id, payload string) *streamdv1.Event {
	return &streamdv1.Event{EntityType: "order", EntityId: id, EventType: "Changed", Payload: []byte(payload)}
}

// Routed events go to the Router, in the order sent per entity, answered
// with its region and version; a publish mixing routed and local events,
// or carrying ops the Router refuses, is InvalidArgument and writes nothing.
func TestRouterPublish(t *testing.T) {
	r := &slowRouter{written: map[string][]string{}}
	h := start(t, Options{Server: ServerOptions{Router: r}})
	ctx := context.Background()
	resp, err := h.client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{order("o1", "a"), order("o1", "b")}})
	if err != nil || len(resp.Appended) != 2 || resp.Appended[1].Region != "far" || resp.Appended[1].Version != 2 {
		t.Fatalf("Publish of orders = %v, %v", resp, err)
	}
	_, err = h.client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{order("o1", "c"), car("1", "x")}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "1 of 2 events are written through this server's router") {
		t.Fatalf("a mixed publish = %v", err)
	}
	bad := order("o1", "")
	bad.CrdtOps = []*streamdv1.CrdtOp{{Field: "f", Op: &streamdv1.CrdtOp_AddCounter{AddCounter: 1}}}
	if _, err = h.client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{bad}}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "event 0: rpc error: code = InvalidArgument desc = no ops on orders") {
		t.Fatalf("ops the router refuses = %v", err)
	}

	st, err := h.client.PublishStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 20 {
		p := string(rune('A' + i))
		want = append(want, p)
		events := []*streamdv1.Event{order("o2", p), car("1", "x")}
		if i == 7 {
			events = append(events, order("o2", "fail"))
		}
		st.Send(&streamdv1.PublishStreamRequest{Events: events, SeparateAppends: true})
	}
	st.CloseSend()
	for i := range 20 {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if a := resp.Appended[0]; a.Region != "far" || a.Version != uint64(i+1) || resp.Appended[1].Region != "" {
			t.Fatalf("answer %d = %v", i, resp)
		}
		if i == 7 && codes.Code(resp.Appended[2].Code) != codes.Unavailable {
			t.Fatalf("answer %d: the failed write = %v", i, resp.Appended[2])
		}
	}
	if got := strings.Join(r.written["o2"], ""); got != strings.Join(want, "") {
		t.Fatalf("the router wrote o2's events in the order %s; sent %s", got, strings.Join(want, ""))
	}
	if last := h.p.Journal().LastOffset(); last != 20 {
		t.Fatalf("journal last offset %d, want 20 (the cars)", last)
	}
}

// Without a Router, events that carry CRDT operations are refused.
func TestCrdtOpsWithoutRouter(t *testing.T) {
	h := start(t, Options{})
	e := car("1", "x")
	e.CrdtOps = []*streamdv1.CrdtOp{{Field: "f", Op: &streamdv1.CrdtOp_AddCounter{AddCounter: 1}}}
	_, err := h.client.Publish(context.Background(), &streamdv1.PublishRequest{Events: []*streamdv1.Event{e}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "crdt_ops are for replicated entity types, and this server has none") {
		t.Fatalf("Publish with ops = %v", err)
	}
	if last := h.p.Journal().LastOffset(); last != 0 {
		t.Fatalf("journal last offset %d, want 0", last)
	}
}

package producer

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// refusals are the codes a producer may answer bad input from the network
// with; anything else (Internal, Unknown, a panic) is a bug.
var refusals = map[codes.Code]bool{
	codes.OK: true, codes.InvalidArgument: true, codes.NotFound: true, codes.FailedPrecondition: true,
	codes.OutOfRange: true, codes.Aborted: true, codes.Canceled: true, codes.DeadlineExceeded: true,
}

func mustMarshal(f *testing.F, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzSubscribe sends two arbitrary requests on a stream (as decoded from
// the fuzzed bytes) to a producer holding events.
func FuzzSubscribe(f *testing.F) {
	h := start(f, Options{})
	for i := range 20 {
		if _, err := h.p.Publish(context.Background(), car("c"+string(rune('a'+i%5)), "sports")); err != nil {
			f.Fatal(err)
		}
	}
	initReq := func(init *streamdv1.Init) []byte {
		return mustMarshal(f, &streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: init}})
	}
	update := mustMarshal(f, &streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_FilterUpdate{FilterUpdate: &streamdv1.FilterUpdate{
		Id: 1, Add: []*streamdv1.FilterCriterion{{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_ID, Value: "ca", ReplayFromSeqNr: 1}}}}})
	replay := mustMarshal(f, &streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Replay{Replay: &streamdv1.Replay{EntityType: "car", EntityId: "cb", FromSeqNr: 2}}})
	f.Add(initReq(earliest()), update)
	f.Add(initReq(earliest()), replay)
	f.Add(initReq(&streamdv1.Init{Stream: "nope", StartPolicy: streamdv1.StartPolicy_START_POLICY_LATEST}), replay)
	f.Add(initReq(&streamdv1.Init{SliceRange: &streamdv1.SliceRange{First: 9, Last: 2}, StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST}), update)
	f.Add(initReq(&streamdv1.Init{Position: &streamdv1.Position{JournalId: h.p.Journal().ID(), Offset: 99}}), update)
	f.Add(update, replay)
	f.Add(initReq(earliest()), mustMarshal(f, report(20)))
	f.Add(initReq(earliest()), mustMarshal(f, report(1<<63)))
	f.Fuzz(func(t *testing.T, first, second []byte) {
		var reqs []*streamdv1.SubscribeRequest
		for _, raw := range [][]byte{first, second} {
			r := &streamdv1.SubscribeRequest{}
			if proto.Unmarshal(raw, r) != nil {
				return
			}
			reqs = append(reqs, r)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		st, err := h.client.Subscribe(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range reqs {
			if st.Send(r) != nil {
				break // the producer ended the stream; Recv says why
			}
		}
		for {
			if _, err = st.Recv(); err != nil {
				break
			}
		}
		if code := status.Code(err); !refusals[code] {
			t.Fatalf("requests %v and %v: %v", reqs[0], reqs[1], err)
		}
	})
}

// FuzzPublish publishes arbitrary decoded requests: each is appended or
// refused with a clear code, never an internal error.
func FuzzPublish(f *testing.F) {
	h := start(f, Options{})
	f.Add(mustMarshal(f, &streamdv1.PublishRequest{Events: []*streamdv1.Event{car("c1", "sports")}}))
	f.Add(mustMarshal(f, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: "car", EntityId: "c1", SeqNr: 7}}}))
	f.Add(mustMarshal(f, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: "car", EntityId: "c1", Origin: "us", OriginSeqNr: 3}}}))
	f.Add(mustMarshal(f, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: "", EntityId: "\x00"}}}))
	f.Fuzz(func(t *testing.T, raw []byte) {
		req := &streamdv1.PublishRequest{}
		if proto.Unmarshal(raw, req) != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := h.client.Publish(ctx, req)
		if code := status.Code(err); !refusals[code] || code == codes.Canceled || code == codes.DeadlineExceeded {
			t.Fatalf("Publish(%v): %v", req, err)
		}
	})
}

// FuzzPublishStream sends one arbitrary decoded request on a publish
// stream: it is answered (as a whole, or with separate_appends set event by
// event) with codes a client can act on, and an event has an offset exactly
// when it was appended.
func FuzzPublishStream(f *testing.F) {
	h := start(f, Options{})
	f.Add(mustMarshal(f, &streamdv1.PublishStreamRequest{Events: []*streamdv1.Event{car("c1", "sports")}, SeparateAppends: true}))
	f.Add(mustMarshal(f, &streamdv1.PublishStreamRequest{Events: []*streamdv1.Event{car("c1", "x"), {EntityType: "car", EntityId: "c1", SeqNr: 9}}, SeparateAppends: true}))
	f.Add(mustMarshal(f, &streamdv1.PublishStreamRequest{Events: []*streamdv1.Event{{EntityType: "", EntityId: "\x00"}, car("c2", "x")}}))
	f.Fuzz(func(t *testing.T, raw []byte) {
		req := &streamdv1.PublishStreamRequest{}
		if proto.Unmarshal(raw, req) != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := h.client.PublishStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(req); err != nil {
			t.Fatal(err)
		}
		st.CloseSend()
		r, err := st.Recv()
		if err != nil || !refusals[codes.Code(r.Code)] {
			t.Fatalf("PublishStream(%v): %v, %v", req, r, err)
		}
		if !req.SeparateAppends {
			return
		}
		if r.Code != 0 || len(r.Appended) != len(req.Events) {
			t.Fatalf("PublishStream(%v) with separate_appends: %v", req, r)
		}
		for i, a := range r.Appended {
			if !refusals[codes.Code(a.Code)] || (a.Code == 0) != (a.Offset > 0) {
				t.Fatalf("PublishStream(%v) with separate_appends, event %d: %v", req, i, a)
			}
		}
	})
}

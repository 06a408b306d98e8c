package primary_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology/primary"
)

// FuzzPublish publishes arbitrary decoded requests to a region that is the
// primary and home of every single-writer type: each is written, with one
// answer per event, or refused as bad input, never an internal error.
func FuzzPublish(f *testing.F) {
	j, err := journal.Open(f.TempDir(), journal.Options{Region: "eu", Durability: journal.DurabilityAsync})
	if err != nil {
		f.Fatal(err)
	}
	defer j.Close()
	p, err := primary.New(primary.Options{Journal: j, Config: primary.Config{
		EntityTypes: []primary.EntityType{
			{Name: "account", Mode: primary.ModeRequestRegion, Home: "eu"},
			{Name: "cart", Mode: primary.ModeReplicated},
			{Name: "click", Mode: primary.ModeLocal},
		},
		DefaultMode: primary.ModePinned, DefaultPrimary: "eu",
	}})
	if err != nil {
		f.Fatal(err)
	}
	defer p.Close()
	add := func(events ...*streamdv1.Event) {
		raw, err := proto.Marshal(&streamdv1.PublishRequest{Events: events})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	add(&streamdv1.Event{EntityType: "order", EntityId: "o1", EventType: "Placed"})
	add(&streamdv1.Event{EntityType: "account", EntityId: "a1", EventType: "Opened"}, &streamdv1.Event{EntityType: "account", EntityId: "a1", EventType: "Paid"})
	add(&streamdv1.Event{EntityType: "cart", EntityId: "c1", CrdtOps: []*streamdv1.CrdtOp{
		{Field: "items", Op: &streamdv1.CrdtOp_AddElement{AddElement: "a"}},
		{Field: "items", Op: &streamdv1.CrdtOp_RemoveElement{RemoveElement: "a"}},
		{Field: "n", Op: &streamdv1.CrdtOp_AddCounter{AddCounter: -3}},
		{Field: "r", Op: &streamdv1.CrdtOp_SetRegister{SetRegister: "é"}},
	}})
	add(&streamdv1.Event{EntityType: "cart", EntityId: "c1", CrdtOps: []*streamdv1.CrdtOp{{Field: "x"}}})
	add(&streamdv1.Event{EntityType: "order", EntityId: "o1", SeqNr: 9})
	f.Fuzz(func(t *testing.T, raw []byte) {
		req := &streamdv1.PublishRequest{}
		if proto.Unmarshal(raw, req) != nil || len(req.Events) == 0 {
			return
		}
		for _, ev := range req.Events {
			if routed, err := p.Routes(ev); err != nil || !routed {
				return // the producer appends it, or refuses it
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		appended, err := p.Publish(ctx, req.Events)
		switch {
		case err == nil && len(appended) != len(req.Events):
			t.Fatalf("%d answers for %d events", len(appended), len(req.Events))
		case err != nil && !errors.Is(err, primary.ErrInvalidRequest) && !errors.Is(err, primary.ErrWrongMode) && !errors.Is(err, journal.ErrInvalidEvent):
			t.Fatalf("Publish(%v): %v", req, err)
		}
	})
}

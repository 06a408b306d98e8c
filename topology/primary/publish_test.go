package primary_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology/primary"
)

// countingObserver counts what Primary reports, per entity type.
type countingObserver struct {
	forwards, takeovers, ops chan string
}

func newCountingObserver() *countingObserver {
	return &countingObserver{forwards: make(chan string, 100), takeovers: make(chan string, 100), ops: make(chan string, 100)}
}

func (o *countingObserver) Forwarded(t string) { o.forwards <- t }
func (o *countingObserver) TookOver(t string)  { o.takeovers <- t }
func (o *countingObserver) CRDTOps(t string, n int) {
	for range n {
		o.ops <- t
	}
}

var publishConfig = primary.Config{
	EntityTypes: []primary.EntityType{
		{Name: "account", Mode: primary.ModeRequestRegion, Home: "eu"},
		{Name: "cart", Mode: primary.ModeReplicated},
		{Name: "click", Mode: primary.ModeLocal},
	},
	DefaultMode: primary.ModePinned, DefaultPrimary: "eu",
}

// Publish writes each mode as its config says: an unlisted type is pinned
// to the default primary (forwarded), a request-region entity is taken
// over, a replicated entity's CRDT operations merge in every region, and a
// local type is not Publish's.
func TestPublishByMode(t *testing.T) {
	pw := newPrimaryWorld(t, publishConfig, "eu", "us")
	pw.StartAll()
	ctx := context.Background()
	obs := newCountingObserver()
	pw.mu.Lock()
	pw.stopPrimary("us")
	pw.mu.Unlock()
	us := pw.Regions["us"]
	usPrim, err := primary.New(primary.Options{Journal: us.Producer.Journal(), Config: publishConfig, Regions: pw.regionsOf("us"), Observer: obs, CallTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { usPrim.Close() })

	// Unlisted: pinned to eu, forwarded.
	got, err := usPrim.Publish(ctx, []*streamdv1.Event{{EntityType: "invoice", EntityId: "i1", EventType: "Issued"}, {EntityType: "invoice", EntityId: "i1", EventType: "Paid"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Region != "eu" || got[0].Version != 1 || got[1].Version != 2 || got[1].SeqNr != 2 || got[1].Offset == 0 {
		t.Fatalf("invoice published in us: %v; want it written in eu at versions 1 and 2", got)
	}
	if typ := <-obs.forwards; typ != "invoice" {
		t.Fatalf("forward counted for %q", typ)
	}

	// Request-region: us takes account/a1 over from its home, eu.
	got, err = usPrim.Publish(ctx, []*streamdv1.Event{{EntityType: "account", EntityId: "a1", EventType: "Opened"}})
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Region != "us" || got[0].Version != 2 { // the handover is version 1
		t.Fatalf("account published in us: %v; want it written in us after the handover", got)
	}
	if typ := <-obs.takeovers; typ != "account" {
		t.Fatalf("takeover counted for %q", typ)
	}

	// Replicated: ops from both regions merge into one state everywhere.
	if _, err := usPrim.Publish(ctx, []*streamdv1.Event{{EntityType: "cart", EntityId: "c1", CrdtOps: []*streamdv1.CrdtOp{
		{Field: "items", Op: &streamdv1.CrdtOp_AddElement{AddElement: "apple"}},
		{Field: "qty", Op: &streamdv1.CrdtOp_AddCounter{AddCounter: 2}},
	}}}); err != nil {
		t.Fatal(err)
	}
	got, err = pw.primary("eu").Publish(ctx, []*streamdv1.Event{{EntityType: "cart", EntityId: "c1", CrdtOps: []*streamdv1.CrdtOp{
		{Field: "qty", Op: &streamdv1.CrdtOp_AddCounter{AddCounter: 3}},
		{Field: "note", Op: &streamdv1.CrdtOp_SetRegister{SetRegister: "gift"}},
	}}})
	if err != nil || len(got) != 1 || got[0].Region != "" || got[0].SeqNr == 0 {
		t.Fatalf("cart published in eu: %v, %v", got, err)
	}
	for range 2 {
		if typ := <-obs.ops; typ != "cart" {
			t.Fatalf("CRDT op counted for %q", typ)
		}
	}
	want := `register note="gift"; counter qty=5; set items=["apple"]`
	for _, p := range []*primary.Primary{usPrim, pw.primary("eu")} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, err := p.State(ctx, "cart", "c1")
			if err != nil {
				t.Fatal(err)
			}
			s := st.String()
			if i := strings.Index(s, " (ts"); i >= 0 { // the register's timestamp varies
				s = s[:i] + s[strings.Index(s, ")")+1:]
			}
			if s == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("state in %s is %s; want %s", p.Region(), s, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Local: not routed.
	if routed, err := usPrim.Routes(&streamdv1.Event{EntityType: "click", EntityId: "k1"}); routed || err != nil {
		t.Fatalf("click routed %v, %v; want a local append", routed, err)
	}
	for _, typ := range []string{"cart", "account", "invoice"} {
		if routed, err := usPrim.Routes(&streamdv1.Event{EntityType: typ, EntityId: "x"}); !routed || err != nil {
			t.Fatalf("%s routed %v, %v", typ, routed, err)
		}
	}
}

// Bad publishes are refused with what to do, and nothing is written.
func TestPublishRefusals(t *testing.T) {
	pw := newPrimaryWorld(t, publishConfig, "eu", "us")
	pw.StartAll()
	p := pw.primary("eu")
	ctx := context.Background()
	ops := []*streamdv1.CrdtOp{{Field: "items", Op: &streamdv1.CrdtOp_AddElement{AddElement: "a"}}}
	if _, err := p.Routes(&streamdv1.Event{EntityType: "click", EntityId: "k1", CrdtOps: ops}); !errors.Is(err, primary.ErrWrongMode) || !strings.Contains(err.Error(), `"click" is local; crdt_ops are for replicated entity types`) {
		t.Errorf("ops on a local type: %v", err)
	}
	if _, err := p.Routes(&streamdv1.Event{EntityType: "invoice", EntityId: "i1", CrdtOps: ops}); !errors.Is(err, primary.ErrWrongMode) {
		t.Errorf("ops on a pinned type: %v", err)
	}
	for _, tc := range []struct {
		name   string
		events []*streamdv1.Event
		want   string
	}{
		{"two entities", []*streamdv1.Event{{EntityType: "invoice", EntityId: "i1", EventType: "x"}, {EntityType: "invoice", EntityId: "i2", EventType: "x"}}, "event 1 is of invoice/i2, event 0 of invoice/i1"},
		{"no ops", []*streamdv1.Event{{EntityType: "cart", EntityId: "c1", EventType: "Added"}}, "no crdt_ops"},
		{"ops and payload", []*streamdv1.Event{{EntityType: "cart", EntityId: "c1", Payload: []byte("x"), CrdtOps: ops}}, "carries only crdt_ops"},
		{"op without kind", []*streamdv1.Event{{EntityType: "cart", EntityId: "c1", CrdtOps: []*streamdv1.CrdtOp{{Field: "items"}}}}, `crdt_ops[0]: field "items" has no operation`},
		{"op without field", []*streamdv1.Event{{EntityType: "cart", EntityId: "c1", CrdtOps: []*streamdv1.CrdtOp{{Op: &streamdv1.CrdtOp_AddCounter{AddCounter: 1}}}}}, "crdt_ops[0]: field is empty"},
		{"seq_nr on a pinned type", []*streamdv1.Event{{EntityType: "invoice", EntityId: "i1", EventType: "x", SeqNr: 1}}, "the owner sets them"},
		{"local", []*streamdv1.Event{{EntityType: "click", EntityId: "k1", EventType: "x"}}, "is local"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := pw.Regions["eu"].Producer.Journal().LastOffset()
			_, err := p.Publish(ctx, tc.events)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want it to mention %q", err, tc.want)
			}
			if code := status.Code(primary.ToStatus(err)); code != codes.InvalidArgument {
				t.Errorf("code %v; want InvalidArgument", code)
			}
			if after := pw.Regions["eu"].Producer.Journal().LastOffset(); after != before {
				t.Errorf("the journal went from offset %d to %d", before, after)
			}
		})
	}
	if _, err := p.State(ctx, "invoice", "i1"); !errors.Is(err, primary.ErrWrongMode) {
		t.Errorf("State of a pinned type: %v", err)
	}

	// The primary unreachable: Unavailable naming it and the override.
	pw.cut("eu", "us")
	usOnly := primary.Config{DefaultMode: primary.ModePinned, DefaultPrimary: "us"}
	eu, err := primary.New(primary.Options{Journal: pw.Regions["eu"].Producer.Journal(), Config: usOnly, Regions: pw.regionsOf("eu"), CallTimeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer eu.Close()
	_, err = eu.Publish(ctx, []*streamdv1.Event{{EntityType: "invoice", EntityId: "i9", EventType: "x"}})
	var ue *primary.UnavailableError
	if !errors.As(err, &ue) || ue.Region != "us" || status.Code(primary.ToStatus(err)) != codes.Unavailable ||
		!strings.Contains(err.Error(), "if it is gone: against region eu run streamctl primary failover --from us --to eu (a dry run; --execute moves all us had), or for this entity alone streamctl primary set --type invoice --region eu, then streamctl primary takeover --force --type invoice --entity i9") {
		t.Fatalf("publish with the primary cut off: %v", err)
	}
}

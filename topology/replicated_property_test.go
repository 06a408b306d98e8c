package topology_test

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/crdt"
)

// cartCommand draws a command of the cart (see the example) as its changes.
var cartCommand = rapid.Custom(func(t *rapid.T) []crdt.Change {
	sku := rapid.SampledFrom([]string{"sku-1", "sku-2", "sku-3"}).Draw(t, "sku")
	switch rapid.IntRange(0, 3).Draw(t, "command") {
	case 0:
		return addItem(sku, rapid.Int64Range(1, 3).Draw(t, "quantity"))
	case 1:
		return removeItem(sku)
	case 2:
		return []crdt.Change{crdt.Increment("quantity/"+sku, rapid.Int64Range(-2, 2).Draw(t, "delta"))}
	default:
		return setAddress(rapid.SampledFrom([]string{"Paris", "New York", "Mumbai"}).Draw(t, "address"))
	}
})

// TestPropertyReplicatedJournalsConverge: three regions write one cart
// concurrently, each on what it has received so far, while a replication that
// is partial, late, relayed through a third region and repeated moves events
// between their journals. Once every region has every event, all fold to
// Equal states, the cache agrees with a fresh fold, and every op has a dot
// of its own.
func TestPropertyReplicatedJournalsConverge(t *testing.T) {
	regions := []*crdtRegion{
		newCRDTRegion(t, "ap", topology.ReplicatedOptions{}),
		newCRDTRegion(t, "eu", topology.ReplicatedOptions{}),
		newCRDTRegion(t, "us", topology.ReplicatedOptions{}),
	}
	ctx := context.Background()
	check := 0
	rapid.Check(t, func(rt *rapid.T) {
		check++
		id := fmt.Sprintf("cart-%d", check) // journals are shared: one entity per check
		for _, reg := range regions {
			reg.clock.ns.Store(rapid.Int64Range(0, 3).Draw(rt, "clock "+reg.name))
		}
		// replicate copies a prefix of from's events of the cart, in from's
		// order, to to: what a replicator has delivered by some moment. The
		// journal drops what to holds already.
		replicate := func(from, to *crdtRegion, all bool) {
			var events []*streamdv1.Event
			for _, e := range entityEvents(rt, from.j, id) {
				if e.Origin != to.name {
					c := proto.CloneOf(e)
					c.Offset, c.SeqNr, c.Slice, c.TimestampUnixNano = 0, 0, 0, 0
					events = append(events, c)
				}
			}
			if !all && len(events) > 0 {
				events = events[:rapid.IntRange(0, len(events)).Draw(rt, "prefix")]
			}
			if len(events) > 0 {
				if _, err := to.j.Append(ctx, events...); err != nil {
					rt.Fatalf("replicate %s→%s: %v", from.name, to.name, err)
				}
			}
		}
		for range rapid.IntRange(1, 25).Draw(rt, "steps") {
			reg := rapid.SampledFrom(regions).Draw(rt, "region")
			if rapid.Bool().Draw(rt, "replicate") {
				from := rapid.SampledFrom(regions).Draw(rt, "from")
				if from != reg {
					replicate(from, reg, false)
				}
				continue
			}
			reg.clock.ns.Add(rapid.Int64Range(-1, 2).Draw(rt, "tick"))
			if _, err := reg.r.Apply(ctx, cartType, id, cartCommand.Draw(rt, "changes")...); err != nil {
				rt.Fatalf("%s: %v", reg.name, err)
			}
		}
		for _, from := range regions {
			for _, to := range regions {
				if from != to {
					replicate(from, to, true)
				}
			}
		}

		want := regions[0].state(rt, id)
		for _, reg := range regions {
			got := reg.state(rt, id)
			if !got.Equal(want) {
				rt.Fatalf("%s and %s differ:\n%v\n%v", reg.name, regions[0].name, got, want)
			}
			fresh, err := reg.restarted(rt).State(ctx, cartType, id)
			if err != nil {
				rt.Fatal(err)
			}
			if !fresh.Equal(got) {
				rt.Fatalf("%s: cached %v, folded %v", reg.name, got, fresh)
			}
		}
		// Every region holds each (origin, origin seqNr) once, the same op
		// everywhere; so every dot names one op.
		type dot struct {
			origin string
			seq    uint64
		}
		ops := map[dot]string{}
		for _, reg := range regions {
			events := entityEvents(rt, reg.j, id)
			seen := map[dot]bool{}
			for _, e := range events {
				d := dot{e.Origin, e.OriginSeqNr}
				if seen[d] {
					rt.Fatalf("%s holds %v twice", reg.name, d)
				}
				seen[d] = true
				op := e.EventType + string(e.Payload)
				if prev, ok := ops[d]; ok && prev != op {
					rt.Fatalf("dot %v names two ops: %s and %s", d, prev, op)
				}
				ops[d] = op
			}
			if len(seen) != len(ops) {
				rt.Fatalf("%s holds %d events, want all %d", reg.name, len(seen), len(ops))
			}
		}
	})
}

package primary

import (
	"context"
	"fmt"
	"maps"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// FuzzHistoryFold: whatever events of a single-writer entity arrive from
// other regions (vectors that continue the history or not, forks, forced
// and plain handovers, garbage payloads, events without a vector), folding
// them never panics, and the history is a chain of versions 1..n each one
// more than the last for its origin; every event is in it, outside it, or
// beyond it.
func FuzzHistoryFold(f *testing.F) {
	f.Add([]byte{0, 0, 1, 1, 1, 1, 1, 0, 2, 2, 3, 3})
	f.Add([]byte{0, 0, 1, 0, 1, 0, 1, 4, 0, 1, 2, 9, 2, 3, 0, 1})
	f.Add([]byte{1, 0, 0, 0, 2, 0, 0, 4, 0, 1, 1, 1, 2, 1, 1, 5})
	j, err := journal.Open(f.TempDir(), journal.Options{Region: "eu", Durability: journal.DurabilityAsync})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { j.Close() })
	regions := []string{"eu", "us", "ap"}
	n := 0
	f.Fuzz(func(t *testing.T, raw []byte) {
		n++
		id := fmt.Sprint("e", n)
		var sent []*streamdv1.Event
		originSeq := map[string]uint64{}
		for len(raw) >= 4 && len(sent) < 64 {
			b := raw[:4]
			raw = raw[4:]
			origin := regions[int(b[0])%3]
			ev := &streamdv1.Event{EntityType: "account", EntityId: id, Origin: origin, EventType: "Changed", Payload: []byte{b[3]}}
			switch b[1] % 4 {
			case 0: // continues the event it names (or starts the history)
				ev.VersionVector = continuing(sent, int(b[2])%(len(sent)+1), origin)
			case 1: // a vector that continues nothing in particular
				ev.VersionVector = map[string]uint64{regions[int(b[2])%3]: uint64(b[2] % 5), origin: uint64(b[3] % 4)}
			case 2: // no vector: published without Primary
			case 3: // a handover continuing the last event sent
				ev.VersionVector, ev.EventType = continuing(sent, len(sent), origin), HandoverEventType
				ev.Payload, _ = proto.Marshal(&streamdv1.Handover{To: regions[int(b[2])%3], Forced: b[3]&1 == 1})
			}
			originSeq[origin]++
			ev.OriginSeqNr = originSeq[origin]
			sent = append(sent, proto.CloneOf(ev))
			if _, err := j.Append(context.Background(), ev); err != nil {
				t.Fatal(err)
			}
		}
		e := newPrimaryEntity("account", id, "eu")
		if err := e.fold(j); err != nil {
			return // a handover payload that does not decode is reported
		}
		var tip map[string]uint64
		for i, c := range e.chain {
			if Version(c) != uint64(i+1) || !extends(tip, c) {
				t.Fatalf("history event %d has vector %v after %v", i, c.VersionVector, tip)
			}
			tip = c.VersionVector
		}
		h := e.history(AnyVersion)
		beyond := 0
		for _, ev := range e.events {
			if Version(ev) > uint64(len(e.chain)) {
				beyond++
			}
		}
		if len(h.Events)+len(h.Outside)+beyond != len(sent) {
			t.Fatalf("%d events sent; %d in the history, %d outside, %d beyond", len(sent), len(h.Events), len(h.Outside), beyond)
		}
	})
}

// continuing is the version vector of an event from origin that continues
// sent[k-1] (k 0: that starts a history).
func continuing(sent []*streamdv1.Event, k int, origin string) map[string]uint64 {
	var vv map[string]uint64
	if k > 0 {
		vv = maps.Clone(sent[k-1].VersionVector)
	}
	if vv == nil {
		vv = map[string]uint64{}
	}
	vv[origin]++
	return vv
}

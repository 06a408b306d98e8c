package primary

import (
	"fmt"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// FuzzFailoverFold: whatever events of a single-writer entity a region
// holds (continuing the history or not, handovers, claims, at any origin
// time) and whatever failover records it knows, the history is a chain of
// versions each one more than the last for its origin, and every region
// holding the same events and records folds the same history and owner,
// whatever order they arrived in. No event of a failover's region after its
// failover point continues a history it moved, unless a later failover
// gave the entity back to that region and it claimed it.
func FuzzFailoverFold(f *testing.F) {
	// Each event is 4 bytes: origin, kind, which earlier event it continues
	// (byte % (events so far + 1); 0: none), origin time. Each record:
	// from, to, failover point, time.
	f.Add([]byte{0, 0, 0, 10, 0, 0, 1, 20}, []byte{0, 1, 15, 25})                                                      // eu writes after the point
	f.Add([]byte{0, 0, 0, 10, 0, 0, 1, 20, 1, 3, 1, 30, 1, 0, 3, 35}, []byte{0, 1, 15, 25})                            // us claims, writes
	f.Add([]byte{0, 0, 0, 10, 1, 3, 1, 30, 1, 0, 2, 35, 0, 3, 3, 50, 0, 0, 4, 60}, []byte{0, 1, 10, 20, 1, 0, 40, 45}) // and fails back
	f.Add([]byte{2, 0, 0, 5, 0, 0, 1, 10}, []byte{})
	regions := []string{"eu", "us", "ap"}
	f.Fuzz(func(t *testing.T, raw, recs []byte) {
		var fs []failover
		for len(recs) >= 4 && len(fs) < 4 {
			b := recs[:4]
			recs = recs[4:]
			from, to := regions[int(b[0])%3], regions[int(b[1])%3]
			if from == to {
				continue
			}
			fs = append(fs, failover{from: from, to: to, held: map[string]int64{from: int64(b[2])}, at: int64(b[3]), in: to})
		}
		slices.SortFunc(fs, compareFailovers)
		var sent []*streamdv1.Event
		originSeq := map[string]uint64{}
		for len(raw) >= 4 && len(sent) < 48 {
			b := raw[:4]
			raw = raw[4:]
			origin := regions[int(b[0])%3]
			ev := &streamdv1.Event{EntityType: "order", EntityId: "o1", Origin: origin, EventType: "Changed", OriginTimestampUnixNano: int64(b[3])}
			ev.VersionVector = continuing(sent, int(b[2])%(len(sent)+1), origin)
			switch b[1] % 4 {
			case 1: // a handover to another region
				ev.EventType = HandoverEventType
				ev.Payload, _ = proto.Marshal(&streamdv1.Handover{To: regions[int(b[3])%3]})
			case 3: // a claim: a forced handover to itself
				ev.EventType = HandoverEventType
				ev.Payload, _ = proto.Marshal(&streamdv1.Handover{To: origin, Forced: true})
			}
			originSeq[origin]++
			ev.OriginSeqNr = originSeq[origin]
			sent = append(sent, ev)
		}
		fold := func(events []*streamdv1.Event) *primaryEntity {
			e := newPrimaryEntity("order", "o1", "eu")
			e.setFailovers(fs)
			for _, ev := range events {
				e.events = append(e.events, ev)
				v := Version(ev)
				e.byVersion[v] = append(e.byVersion[v], ev)
			}
			if err := e.extend(); err != nil {
				t.Fatal(err)
			}
			return e
		}
		describe := func(e *primaryEntity) string {
			s := fmt.Sprintf("owner %s effective %s claim %v:", e.owner, e.effective, e.claim)
			for _, ev := range e.chain {
				s += fmt.Sprintf(" %s/%d", ev.Origin, ev.OriginSeqNr)
			}
			return s
		}
		e := fold(sent)
		reversed := slices.Clone(sent)
		slices.Reverse(reversed)
		if got, want := describe(fold(reversed)), describe(e); got != want {
			t.Fatalf("the events in reverse fold to %s; in order to %s", got, want)
		}
		var tip map[string]uint64
		for i, c := range e.chain {
			if Version(c) != uint64(i+1) || !extends(tip, c) {
				t.Fatalf("history event %d has vector %v after %v", i, c.VersionVector, tip)
			}
			tip = c.VersionVector
		}
		// Replay the chain: at each version, a failover that moved the
		// entity admits only its owner's events up to the point, or a claim.
		owner, by := "eu", (*streamdv1.Event)(nil)
		for i, c := range e.chain {
			if applied, _ := redirect(fs, owner, by); len(applied) > 0 {
				h, _ := handoverOf(c)
				claim := h != nil && h.To == c.Origin && slices.ContainsFunc(applied, func(f failover) bool { return f.to == c.Origin })
				if !claim && (c.Origin != owner || c.OriginTimestampUnixNano > applied[0].cutoff()) {
					t.Fatalf("version %d (%s/%d at %d) continues a history failovers %v moved from %s", i+1, c.Origin, c.OriginSeqNr, c.OriginTimestampUnixNano, applied, owner)
				}
			}
			if h, _ := handoverOf(c); h != nil {
				owner, by = h.To, c
			}
		}
	})
}

package fault

import (
	"fmt"
	"slices"
	"testing"
)

// cleanHistory: entities x and y, three events each, interleaved; all
// acknowledged; the exactly-once consumer applied each once, the
// at-least-once one re-delivered y/2 after a restart.
func cleanHistory() History {
	var journal []Event
	sent := map[string]bool{}
	for i := range 6 {
		e := Event{EntityType: "acct", EntityID: []string{"x", "y"}[i%2], SeqNr: uint64(i/2 + 1), Offset: uint64(i + 1), ID: fmt.Sprint("id", i)}
		journal = append(journal, e)
		sent[e.ID] = true
	}
	eo := make([]Delivery, len(journal))
	for i, e := range journal {
		eo[i] = Delivery{Event: e, Run: 1}
	}
	alo := []Delivery{{journal[0], 1}, {journal[1], 1}, {journal[2], 1}, {journal[3], 1},
		{journal[3], 2}, {journal[4], 2}, {journal[5], 2}}
	return History{Acked: slices.Clone(journal), Sent: sent, Journal: journal, ExactlyOnce: eo, AtLeastOnce: alo}
}

func TestCheckerCounts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(h *History)
		want   func(r *Report) int // the figure this change must set
		n      int
		fails  bool
	}{
		{"clean", func(h *History) {}, func(r *Report) int { return len(r.Failures()) }, 0, false},
		{"at-least-once re-delivery after a restart is allowed", func(h *History) {},
			func(r *Report) int { return r.AtLeastOnce.Redelivered }, 1, false},
		{"acknowledged event missing from the journal", func(h *History) {
			h.Journal = slices.Delete(h.Journal, 5, 6)
			h.ExactlyOnce, h.AtLeastOnce = h.ExactlyOnce[:5], h.AtLeastOnce[:6]
		}, func(r *Report) int { return r.LostAtProducer }, 1, true},
		{"acknowledged event stored with other contents", func(h *History) {
			h.Journal[2].ID = "id99"
			h.Sent["id99"] = true
			h.ExactlyOnce[2].ID, h.AtLeastOnce[2].ID = "id99", "id99"
		}, func(r *Report) int { return r.LostAtProducer }, 1, true},
		{"event nobody sent", func(h *History) {
			delete(h.Sent, "id4")
			h.Acked = slices.Delete(h.Acked, 4, 5)
		}, func(r *Report) int { return r.Phantom }, 1, true},
		{"unacknowledged but written event is fine", func(h *History) {
			h.Acked = slices.Delete(h.Acked, 4, 5)
		}, func(r *Report) int { return len(r.Failures()) }, 0, false},
		{"journal offsets not contiguous", func(h *History) {
			for i := 3; i < len(h.Journal); i++ {
				h.Journal[i].Offset++
			}
			h.Acked = slices.Clone(h.Journal)
			for i := range h.ExactlyOnce {
				h.ExactlyOnce[i].Event = h.Journal[i]
			}
			h.AtLeastOnce = nil
		}, func(r *Report) int { return r.JournalOrder }, 1, true},
		{"acks out of publish order", func(h *History) {
			h.Acked[0], h.Acked[2] = h.Acked[2], h.Acked[0]
		}, func(r *Report) int { return r.AckOrder }, 1, true},
		{"exactly-once applied twice", func(h *History) {
			h.ExactlyOnce = append(h.ExactlyOnce, Delivery{h.Journal[1], 2})
		}, func(r *Report) int { return r.ExactlyOnce.Duplicates }, 1, true},
		{"exactly-once order", func(h *History) {
			h.ExactlyOnce[0], h.ExactlyOnce[2] = h.ExactlyOnce[2], h.ExactlyOnce[0] // x/2 before x/1
		}, func(r *Report) int { return r.ExactlyOnce.Order }, 1, true},
		{"exactly-once gap", func(h *History) {
			h.ExactlyOnce = slices.Delete(h.ExactlyOnce, 2, 3) // x/2 never applied
		}, func(r *Report) int { return r.ExactlyOnce.Gaps + r.ExactlyOnce.Lost }, 2, true},
		{"exactly-once wrong event", func(h *History) {
			h.ExactlyOnce[3].ID = "other"
		}, func(r *Report) int { return r.ExactlyOnce.Wrong }, 1, true},
		{"at-least-once lost", func(h *History) {
			h.AtLeastOnce = h.AtLeastOnce[:6]
		}, func(r *Report) int { return r.AtLeastOnce.Lost }, 1, true},
		{"at-least-once duplicate within one process", func(h *History) {
			h.AtLeastOnce = append(h.AtLeastOnce, Delivery{h.Journal[5], 2})
		}, func(r *Report) int { return r.AtLeastOnce.DuplicatesInRun }, 1, true},
		{"at-least-once order within one process", func(h *History) {
			// x/3 before x/2
			h.AtLeastOnce = []Delivery{{h.Journal[0], 1}, {h.Journal[1], 1}, {h.Journal[4], 1}, {h.Journal[2], 1}, {h.Journal[3], 1}, {h.Journal[5], 1}}
		}, func(r *Report) int { return r.AtLeastOnce.Order }, 1, true},
		{"at-least-once skips ahead", func(h *History) {
			h.AtLeastOnce = []Delivery{{h.Journal[0], 1}, {h.Journal[1], 1}, {h.Journal[4], 2}, {h.Journal[2], 2}, {h.Journal[3], 2}, {h.Journal[5], 2}}
		}, func(r *Report) int { return r.AtLeastOnce.Gaps }, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := cleanHistory()
			tc.change(&h)
			r := Check(h)
			if got := tc.want(r); got != tc.n {
				t.Errorf("figure %d, want %d\n%s", got, tc.n, r)
			}
			if fails := len(r.Failures()) > 0; fails != tc.fails {
				t.Errorf("failures %v, want failing %v\n%s", r.Failures(), tc.fails, r)
			}
		})
	}
}

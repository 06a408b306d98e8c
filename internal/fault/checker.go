package fault

import (
	"fmt"
	"strings"
)

// Event is one event as the harness knows it: where the journal put it and
// which publish it came from.
type Event struct {
	EntityType, EntityID string
	SeqNr, Offset        uint64
	// ID is the payload's identity, unique per publish attempt.
	ID string
}

func (e Event) entity() string { return e.EntityType + "/" + e.EntityID }

func (e Event) String() string {
	return fmt.Sprintf("%s seqNr %d offset %d id %s", e.entity(), e.SeqNr, e.Offset, e.ID)
}

// Delivery is an event as a consumer handed it to its handler; Run numbers
// the consumer process that did, so that a re-delivery after a crash can be
// told from one within a process.
type Delivery struct {
	Event
	Run int
}

// History is what one run recorded.
type History struct {
	// Acked are the acknowledged publishes, in the order the acknowledgements
	// arrived. Every entity is published to by one publisher, one publish at a
	// time, so an entity's acks are in publish order.
	Acked []Event
	// Sent holds the ID of every publish attempted, acknowledged or not: a
	// publish cut off by a fault may still have been written.
	Sent map[string]bool
	// Journal is what the journal holds at the end, in offset order.
	Journal []Event
	// ExactlyOnce and AtLeastOnce are what the consumers applied, in order;
	// nil when the run had no such consumer.
	ExactlyOnce []Delivery
	AtLeastOnce []Delivery
}

// Report counts what Check found. The correctness figures (Failures) must
// all be 0; Redelivered is what at-least-once delivery is allowed to do.
type Report struct {
	Acked, Unacked, JournalEvents int
	// LostAtProducer: acknowledged events missing from the journal or stored
	// there with other contents.
	LostAtProducer int
	// Phantom: journal events that no publisher sent.
	Phantom int
	// JournalOrder: offsets not contiguous or an entity's seqNrs not 1, 2, 3…
	// in the journal; AckOrder: an entity's acknowledged seqNrs or offsets
	// not increasing in publish order.
	JournalOrder, AckOrder int

	ExactlyOnce, AtLeastOnce ConsumerReport
	// Examples describe the first few problems found.
	Examples []string
}

// ConsumerReport is what Check found for one consumer.
type ConsumerReport struct {
	Checked    bool
	Deliveries int
	// Lost: acknowledged events never applied. Missed: journal events never
	// applied (acknowledged or not: a consumer sees what was written).
	Lost, Missed int
	// Duplicates: deliveries of an event applied before, by any run.
	// DuplicatesInRun: by the same consumer process. An exactly-once
	// consumer must have none; an at-least-once one may re-deliver after a
	// crash (counted in Redelivered) but not within one process.
	Duplicates, DuplicatesInRun, Redelivered int
	// Order: an event applied after a later event of its entity (EO: ever;
	// AL: within one process). Gaps: an event applied while an earlier one of
	// its entity had never been.
	Order, Gaps int
	// Wrong: an applied event that is not the journal's event of that
	// (entity, seqNr).
	Wrong int
}

// Failures names every correctness figure that is not 0.
func (r *Report) Failures() []string {
	var f []string
	add := func(name string, n int) {
		if n != 0 {
			f = append(f, fmt.Sprintf("%s=%d", name, n))
		}
	}
	add("lost at producer", r.LostAtProducer)
	add("phantom events", r.Phantom)
	add("journal order", r.JournalOrder)
	add("ack order", r.AckOrder)
	for _, c := range []struct {
		name string
		r    ConsumerReport
		eo   bool
	}{{"exactly-once", r.ExactlyOnce, true}, {"at-least-once", r.AtLeastOnce, false}} {
		if !c.r.Checked {
			continue
		}
		add(c.name+" lost", c.r.Lost)
		add(c.name+" missed", c.r.Missed)
		add(c.name+" duplicates in one process", c.r.DuplicatesInRun)
		if c.eo {
			add(c.name+" duplicates", c.r.Duplicates)
		}
		add(c.name+" order", c.r.Order)
		add(c.name+" gaps", c.r.Gaps)
		add(c.name+" wrong events", c.r.Wrong)
	}
	return f
}

// String is a table of the figures.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "producer: %d acknowledged, %d sent without ack, %d in journal; lost %d, phantom %d, journal order %d, ack order %d\n",
		r.Acked, r.Unacked, r.JournalEvents, r.LostAtProducer, r.Phantom, r.JournalOrder, r.AckOrder)
	fmt.Fprintf(&b, "%-14s %10s %6s %6s %6s %9s %11s %6s %5s %6s\n", "consumer", "deliveries", "lost", "missed", "dups", "dups/run", "redelivered", "order", "gaps", "wrong")
	for _, c := range []struct {
		name string
		r    ConsumerReport
	}{{"exactly-once", r.ExactlyOnce}, {"at-least-once", r.AtLeastOnce}} {
		if c.r.Checked {
			fmt.Fprintf(&b, "%-14s %10d %6d %6d %6d %9d %11d %6d %5d %6d\n", c.name, c.r.Deliveries, c.r.Lost, c.r.Missed,
				c.r.Duplicates, c.r.DuplicatesInRun, c.r.Redelivered, c.r.Order, c.r.Gaps, c.r.Wrong)
		}
	}
	for _, e := range r.Examples {
		fmt.Fprintf(&b, "  %s\n", e)
	}
	return b.String()
}

const maxExamples = 20

func (r *Report) example(format string, args ...any) {
	if len(r.Examples) < maxExamples {
		r.Examples = append(r.Examples, fmt.Sprintf(format, args...))
	}
}

type seqKey struct {
	entity string
	seqNr  uint64
}

// Check compares a history against what streamd guarantees.
func Check(h History) *Report {
	r := &Report{Acked: len(h.Acked), JournalEvents: len(h.Journal)}
	byOffset := make(map[uint64]Event, len(h.Journal))
	bySeq := make(map[seqKey]Event, len(h.Journal))
	lastSeq := map[string]uint64{}
	for i, e := range h.Journal {
		if i > 0 && e.Offset != h.Journal[i-1].Offset+1 {
			r.JournalOrder++
			r.example("journal: offset %d follows %d", e.Offset, h.Journal[i-1].Offset)
		}
		if e.SeqNr != lastSeq[e.entity()]+1 {
			r.JournalOrder++
			r.example("journal: %s after seqNr %d", e, lastSeq[e.entity()])
		}
		lastSeq[e.entity()] = e.SeqNr
		byOffset[e.Offset] = e
		bySeq[seqKey{e.entity(), e.SeqNr}] = e
		if h.Sent != nil && !h.Sent[e.ID] {
			r.Phantom++
			r.example("journal: %s was never sent", e)
		}
	}
	acked := make(map[seqKey]bool, len(h.Acked))
	lastAck := map[string]Event{}
	for _, a := range h.Acked {
		acked[seqKey{a.entity(), a.SeqNr}] = true
		if got, ok := byOffset[a.Offset]; !ok || got != a {
			r.LostAtProducer++
			if ok {
				r.example("acknowledged %s, journal has %s there", a, got)
			} else {
				r.example("acknowledged %s is not in the journal", a)
			}
		}
		if prev, ok := lastAck[a.entity()]; ok && (a.SeqNr <= prev.SeqNr || a.Offset <= prev.Offset) {
			r.AckOrder++
			r.example("acknowledged %s after %s", a, prev)
		}
		lastAck[a.entity()] = a
	}
	if h.Sent != nil {
		r.Unacked = len(h.Sent) - len(h.Acked)
	}
	if h.ExactlyOnce != nil {
		r.ExactlyOnce = checkConsumer(r, "exactly-once", h.ExactlyOnce, h.Journal, bySeq, acked, false)
	}
	if h.AtLeastOnce != nil {
		r.AtLeastOnce = checkConsumer(r, "at-least-once", h.AtLeastOnce, h.Journal, bySeq, acked, true)
	}
	return r
}

// checkConsumer checks one consumer's deliveries. With perRun (at-least-once)
// order is checked within each process, since a restarted one re-delivers
// what was handled after its last save.
func checkConsumer(r *Report, name string, ds []Delivery, journal []Event, bySeq map[seqKey]Event, acked map[seqKey]bool, perRun bool) ConsumerReport {
	c := ConsumerReport{Checked: true, Deliveries: len(ds)}
	type runSeq struct {
		run    int
		entity string
		seqNr  uint64
	}
	seen := make(map[seqKey]bool, len(ds))
	seenInRun := make(map[runSeq]bool, len(ds))
	highest := map[string]uint64{} // highest applied seqNr per entity, all runs
	runHighest := map[string]uint64{}
	run := 0
	for i, d := range ds {
		if d.Run != run {
			run = d.Run
			clear(runHighest)
		}
		k := seqKey{d.entity(), d.SeqNr}
		if want, ok := bySeq[k]; !ok || want != d.Event {
			c.Wrong++
			r.example("%s applied %s, journal has %v", name, d.Event, want)
		}
		top := highest[k.entity]
		if perRun {
			top = runHighest[k.entity]
		}
		switch {
		case seen[k]:
			c.Duplicates++
			if seenInRun[runSeq{d.Run, k.entity, k.seqNr}] {
				c.DuplicatesInRun++
				r.example("%s applied %s twice in process %d (delivery %d)", name, d.Event, d.Run, i)
			} else {
				c.Redelivered++
				if !perRun {
					r.example("%s applied %s again in process %d (delivery %d)", name, d.Event, d.Run, i)
				}
			}
			if d.SeqNr < top && !seenInRun[runSeq{d.Run, k.entity, k.seqNr}] && perRun {
				c.Order++
				r.example("%s re-delivered %s after seqNr %d in process %d", name, d.Event, top, d.Run)
			}
		case d.SeqNr < top:
			c.Order++
			r.example("%s applied %s after seqNr %d", name, d.Event, top)
		case d.SeqNr > highest[k.entity]+1:
			c.Gaps++
			r.example("%s applied %s while seqNr %d was never applied", name, d.Event, highest[k.entity]+1)
		}
		seen[k] = true
		seenInRun[runSeq{d.Run, k.entity, k.seqNr}] = true
		highest[k.entity] = max(highest[k.entity], d.SeqNr)
		runHighest[k.entity] = max(runHighest[k.entity], d.SeqNr)
	}
	for _, e := range journal {
		k := seqKey{e.entity(), e.SeqNr}
		if seen[k] {
			continue
		}
		c.Missed++
		if acked[k] {
			c.Lost++
			r.example("%s never applied acknowledged %s", name, e)
		} else {
			r.example("%s never applied %s", name, e)
		}
	}
	return c
}

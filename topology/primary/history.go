package primary

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
)

const (
	// HandoverEventType is the event type of a handover in a single-writer
	// entity's history; its payload is a streamdv1.Handover naming the new
	// owner.
	HandoverEventType = "streamd.primary.handover"
	// PinEntityType is the entity type of pin events: the entity id is the
	// pinned entity type, the payload a streamdv1.PrimaryPin.
	PinEntityType = "streamd.primary"
	// PinEventType is the event type of pin events.
	PinEventType = "streamd.primary.pin"
)

// readBatch is how many events a fold reads at a time.
const readBatch = 256

// Version is an event's version in its single-writer entity's history: the
// sum of its version vector (1 for the first event, 2 for the second…).
func Version(e *streamdv1.Event) uint64 {
	var v uint64
	for _, n := range e.GetVersionVector() {
		v += n
	}
	return v
}

// History is a single-writer entity's history as one region knows it.
type History struct {
	// Events are versions 1..Version in order, handovers included.
	Events []*streamdv1.Event
	// Version is the version of the last event (0: none).
	Version uint64
	// Owner is the region that writes the entity, as far as Events say.
	Owner string
	// Outside are events of the entity in the journal that are not part of
	// its history: the branch a forced takeover left behind (a fork: an
	// event with the version of one in Events), or events published
	// without Primary (no version vector).
	Outside []*streamdv1.Event
}

// primaryEntity is what a region knows of one single-writer entity: every
// event of it in the local journal, and the history they make.
type primaryEntity struct {
	entityType, entityID string
	firstOwner           string

	// write serialises this region's writes, takeovers and their remote
	// calls for the entity; it is taken before mu.
	write sync.Mutex
	// mu guards the fields below; it is never held across a remote call.
	mu        sync.Mutex
	lastSeqNr uint64             // journal seqNr folded
	events    []*streamdv1.Event // in journal order
	held      map[string]uint64  // per origin, the last origin seqNr held
	byVersion map[uint64][]*streamdv1.Event
	chain     []*streamdv1.Event // the history: chain[v-1] has version v
	owner     string             // as the history's handovers say
	ownerBy   *streamdv1.Event   // the handover that made owner the owner; nil: first owner
	lastData  uint64             // version of the last event that is not a handover

	// failovers folded into the history (they change what extends it), and
	// what they make of owner: effective is the region that writes the
	// entity; claim says it must append a forced handover to itself first.
	failovers []failover
	stale     bool // failovers changed since the last fold
	effective string
	claim     bool
}

func newPrimaryEntity(entityType, entityID, firstOwner string) *primaryEntity {
	return &primaryEntity{
		entityType: entityType, entityID: entityID, firstOwner: firstOwner, owner: firstOwner, effective: firstOwner,
		held: map[string]uint64{}, byVersion: map[uint64][]*streamdv1.Event{},
	}
}

// setFailovers gives the entity the failover records folded from the
// journal; the next fold rebuilds the history if they changed (a record is
// never removed). Callers hold e.mu.
func (e *primaryEntity) setFailovers(fs []failover) {
	if len(fs) != len(e.failovers) {
		e.failovers, e.stale = fs, true
	}
}

// fold reads the entity's events appended to j since the last fold and
// extends the history. Callers hold e.mu.
func (e *primaryEntity) fold(j *journal.Journal) error {
	var buf []*streamdv1.Event
	rebuild := e.stale
	e.stale = false
	for {
		var err error
		buf, err = j.ReadEntity(e.entityType, e.entityID, e.lastSeqNr+1, readBatch, buf[:0])
		if err != nil {
			return fmt.Errorf("topology: %w", err)
		}
		for _, ev := range buf {
			if ev.SeqNr != e.lastSeqNr+1 {
				return fmt.Errorf("%w: %s/%s has seqNr %d after %d; keep retention off for single-writer entity types",
					topology.ErrIncompleteHistory, e.entityType, e.entityID, ev.SeqNr, e.lastSeqNr)
			}
			e.lastSeqNr = ev.SeqNr
			e.events = append(e.events, ev)
			e.held[ev.Origin] = max(e.held[ev.Origin], ev.OriginSeqNr)
			v := Version(ev)
			if v == 0 {
				continue // not written through Primary: Outside
			}
			e.byVersion[v] = append(e.byVersion[v], ev)
			rebuild = rebuild || v <= uint64(len(e.chain))
		}
		if len(buf) < readBatch {
			break
		}
	}
	if rebuild { // a competing event for a version already in the history, or a new failover
		e.chain, e.owner, e.ownerBy, e.lastData = nil, e.firstOwner, nil, 0
	}
	return e.extend()
}

// extend appends to the history the events that continue it: at each
// version, an event whose vector is the last one's plus one for its
// origin. Of two (a fork), a forced handover wins, then the smaller
// origin, so that every region picks the same branch.
//
// Where failovers move the entity from its owner, only two kinds of event
// continue it: the owner's events up to the first failover's point (its
// region to held them), and a handover that a failover's region to wrote
// to itself (a claim). The owner's later events are fenced (Conflicts).
func (e *primaryEntity) extend() error {
	for {
		applied, effective := redirect(e.failovers, e.owner, e.ownerBy)
		e.effective, e.claim = effective, len(applied) > 0
		var tip map[string]uint64
		if n := len(e.chain); n > 0 {
			tip = e.chain[n-1].VersionVector
		}
		var next *streamdv1.Event
		var nextForced bool
		for _, c := range e.byVersion[uint64(len(e.chain))+1] {
			if !extends(tip, c) {
				continue
			}
			h, err := handoverOf(c)
			if err != nil {
				return err
			}
			if len(applied) > 0 {
				before := c.Origin == e.owner && c.OriginTimestampUnixNano <= applied[0].cutoff()
				claim := h != nil && h.To == c.Origin && slices.ContainsFunc(applied, func(f failover) bool { return f.to == c.Origin })
				if !before && !claim {
					continue
				}
			}
			forced := h != nil && h.Forced
			if next == nil || (forced && !nextForced) || (forced == nextForced && cmp.Or(cmp.Compare(c.Origin, next.Origin), cmp.Compare(c.OriginSeqNr, next.OriginSeqNr)) < 0) {
				next, nextForced = c, forced
			}
		}
		if next == nil {
			return nil
		}
		e.chain = append(e.chain, next)
		if h, _ := handoverOf(next); h != nil {
			e.owner, e.ownerBy = h.To, next
		} else {
			e.lastData = uint64(len(e.chain))
		}
	}
}

// extends reports whether c's vector is tip plus one for c's origin.
func extends(tip map[string]uint64, c *streamdv1.Event) bool {
	vv := c.VersionVector
	want := len(tip)
	if _, ok := tip[c.Origin]; !ok {
		want++
	}
	if len(vv) != want {
		return false
	}
	for region, n := range vv {
		inc := uint64(0)
		if region == c.Origin {
			inc = 1
		}
		if n != tip[region]+inc {
			return false
		}
	}
	return true
}

// handoverOf decodes a handover event's payload; nil for other events.
func handoverOf(ev *streamdv1.Event) (*streamdv1.Handover, error) {
	if ev.EventType != HandoverEventType {
		return nil, nil
	}
	h := &streamdv1.Handover{}
	if err := proto.Unmarshal(ev.Payload, h); err != nil || h.To == "" {
		return nil, fmt.Errorf("topology: %s/%s: handover event from %q (origin seqNr %d) has no valid payload: %v",
			ev.EntityType, ev.EntityId, ev.Origin, ev.OriginSeqNr, err)
	}
	return h, nil
}

// tip is the vector of the history's last event (nil when empty).
func (e *primaryEntity) tip() map[string]uint64 {
	if n := len(e.chain); n > 0 {
		return e.chain[n-1].VersionVector
	}
	return nil
}

// history returns a copy of the first n versions (all when n is larger).
func (e *primaryEntity) history(n uint64) History {
	n = min(n, uint64(len(e.chain)))
	h := History{Version: n, Owner: e.firstOwner}
	for _, ev := range e.chain[:n] {
		if ho, _ := handoverOf(ev); ho != nil {
			h.Owner = ho.To
		}
		h.Events = append(h.Events, proto.CloneOf(ev))
	}
	if n == uint64(len(e.chain)) {
		h.Owner = e.effective
	}
	in := make(map[*streamdv1.Event]bool, len(e.chain))
	for _, ev := range e.chain {
		in[ev] = true
	}
	for _, ev := range e.events {
		if !in[ev] && Version(ev) <= uint64(len(e.chain)) {
			h.Outside = append(h.Outside, proto.CloneOf(ev))
		}
	}
	return h
}

// missing returns events of e that a region holding held lacks, in journal
// order, at most maxEvents and about maxBytes; more reports what is left.
func (e *primaryEntity) missing(held map[string]uint64, maxEvents, maxBytes int) (out []*streamdv1.Event, more bool) {
	size := 0
	for _, ev := range e.events {
		if ev.OriginSeqNr <= held[ev.Origin] {
			continue
		}
		n := proto.Size(ev)
		if len(out) == maxEvents || (len(out) > 0 && size+n > maxBytes) {
			return out, true
		}
		size += n
		out = append(out, ev)
	}
	return out, false
}

// nextVector is the vector of the next event written by region.
func (e *primaryEntity) nextVector(region string) map[string]uint64 {
	vv := maps.Clone(e.tip())
	if vv == nil {
		vv = map[string]uint64{}
	}
	vv[region]++
	return vv
}

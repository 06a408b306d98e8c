package primary

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

const (
	// FailoverEntityType and FailoverEntityID name the entity whose events
	// are the failover records of a project (event type FailoverEventType,
	// payload a streamdv1.FailoverRecord).
	FailoverEntityType = "streamd.failover"
	FailoverEntityID   = "regions"
	// FailoverEventType is the event type of a failover record.
	FailoverEventType = "streamd.primary.failover"
)

// skewMargin is how much earlier than a failover point Conflicts starts
// reading the local journal: a region's copy of an event is stamped with
// its own clock when it arrives, which may run behind the origin's.
const skewMargin = time.Minute

// failover is one failover record as every region folds it.
type failover struct {
	from, to string
	held     map[string]int64
	at       int64  // the record's origin time
	in       string // its origin (the region to)
}

// cutoff is the failover point: the origin time of the last event of from
// that to held.
func (f failover) cutoff() int64 { return f.held[f.from] }

// knows reports whether to held ev when it wrote the record: ev's origin
// time is at most the last one of its origin to held (the record's own
// time for an origin it does not name).
func (f failover) knows(ev *streamdv1.Event) bool {
	held, ok := f.held[ev.Origin]
	if !ok {
		held = f.at
	}
	return ev.OriginTimestampUnixNano <= held
}

// failoverState is the failover records folded from the local journal,
// in (origin time, origin) order.
type failoverState struct {
	lastSeqNr uint64
	list      []failover
}

// failovers folds the failover records in the local journal and returns
// them in (origin time, origin) order; the slice is not modified later.
func (p *Primary) failovers() ([]failover, error) {
	p.pinMu.Lock()
	defer p.pinMu.Unlock()
	st := &p.fails
	for {
		evs, err := p.j.ReadEntity(FailoverEntityType, FailoverEntityID, st.lastSeqNr+1, readBatch, nil)
		if err != nil {
			return nil, fmt.Errorf("topology: reading the failover records: %w", err)
		}
		for _, ev := range evs {
			st.lastSeqNr = ev.SeqNr
			r := &streamdv1.FailoverRecord{}
			if err := proto.Unmarshal(ev.Payload, r); err != nil || ev.EventType != FailoverEventType || r.From == "" || r.To == "" {
				p.log.Warn("primary: ignoring an event that is not a valid failover record", "origin", ev.Origin, "seq_nr", ev.SeqNr, "err", err)
				continue
			}
			f := failover{from: r.From, to: r.To, held: r.Held, at: ev.OriginTimestampUnixNano, in: ev.Origin}
			list := slices.Clone(st.list) // callers keep the old one
			i, _ := slices.BinarySearchFunc(list, f, compareFailovers)
			st.list = slices.Insert(list, i, f)
		}
		if len(evs) < readBatch {
			return st.list, nil
		}
	}
}

func compareFailovers(a, b failover) int {
	return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.in, b.in))
}

// redirect returns the failover records that move an entity owned by owner
// (since the event by, nil for its first owner) and the region that owns
// it after them: each record moves what its from owns, the first one only
// if its region to held by.
func redirect(fs []failover, owner string, by *streamdv1.Event) (applied []failover, effective string) {
	effective = owner
	for _, f := range fs {
		if f.from != effective || (len(applied) == 0 && by != nil && !f.knows(by)) {
			continue
		}
		applied = append(applied, f)
		effective = f.to
	}
	return applied, effective
}

// FailoverPlan is what Failover reports, and with execute did.
type FailoverPlan struct {
	From, To string
	// EntityTypes are the listed pinned entity types whose primary moves;
	// UnlistedTypes: the types not listed move too (default_mode pinned,
	// default_primary From).
	EntityTypes   []string
	UnlistedTypes bool
	// Progress is, per region other than From, how far it applied From's
	// journals; AtRisk the events of From's journals no reachable region
	// applied (an upper bound of what the failover may lose): per journal,
	// the most any reachable region knows it holds minus the most any
	// applied, summed over the journals.
	Progress []RegionProgress
	AtRisk   uint64
	// FromApplied is the failover point: the origin time of the last event
	// of From this region applied (0: none); of a region whose pods share
	// the entities (Options.Pods), the last any of its pods applied.
	FromApplied int64
	// Executed: the record was appended, at Offset in this region's journal.
	Executed bool
	Offset   uint64
}

// RegionProgress is how far a region applied another region's journals.
type RegionProgress struct {
	Region    string
	Reachable bool
	// Applied and Known are the sums over Journals: for a source of one
	// journal, the last offset of it the region applied and the last one it
	// knows the source wrote. Sums of different journals' offsets only
	// count events; compare Journals.
	Applied, Known uint64
	// Journals are the source's journals the region knows of (one per pod
	// of a source whose pods share the entities), sorted by journal id.
	Journals []JournalProgress
	Err      error
}

// JournalProgress is how far a region applied one journal of another
// region. Offsets of different journals are not comparable.
type JournalProgress struct {
	JournalID []byte
	// Applied is the last offset of the journal applied (of a region whose
	// pods share the entities, the least over its pods: each applies the
	// slices it serves); Known the last one known to be written.
	Applied, Known uint64
}

// ProgressFunc reports how far this journal applied source's journals
// (the replication from it into this journal): one JournalProgress per
// journal of source; ok false when no replication from source runs here.
// Entries with the same journal id are merged (the most of each).
type ProgressFunc func(source string) (journals []JournalProgress, ok bool)

// SourceProgress is how far a region, or one pod of it, applied a source
// region's journals (Primary.Progress).
type SourceProgress struct {
	// Replicating: a replication from the source runs here (in a pod).
	Replicating bool
	// Journals are the source's journals, one per journal id, sorted by it.
	Journals []JournalProgress
	// LastApplied is the origin time of the last event of the source held
	// here (0: none): the failover point of a failover from the source.
	LastApplied int64
}

// Sums returns the sums of Journals' Applied and Known.
func (sp SourceProgress) Sums() (applied, known uint64) {
	for _, j := range sp.Journals {
		applied, known = applied+j.Applied, known+j.Known
	}
	return applied, known
}

// Failover moves region from's single-writer entities to this region, to:
// every pinned entity type whose primary is from gets the primary to, and
// every entity from owns is owned by to. Without execute it only reports
// the plan: how far each region applied from's journal, and how many of
// from's events no reachable region holds. With execute it appends one
// failover record to this region's journal, which replicates to every
// region; from then on:
//
//   - every region forwards writes of those types to to (or takes their
//     entities over from to), from included once it learns the record;
//   - to takes each entity over (a forced handover) on its next write;
//   - events of from written after the failover point (the last event of
//     from to had applied) are in no entity's history: they are conflicts
//     (Conflicts), never merged.
//
// Failing back is Failover the other way, run in the old region.
func (p *Primary) Failover(ctx context.Context, from, to string, execute bool) (FailoverPlan, error) {
	switch {
	case from == "" || to == "":
		return FailoverPlan{}, fmt.Errorf("%w: a failover needs the region that fails (from) and the region that takes over (to)", ErrInvalidRequest)
	case to != p.region:
		return FailoverPlan{}, fmt.Errorf("%w: a failover to %q runs in region %q (it writes the record there); this is region %q", ErrInvalidRequest, to, to, p.region)
	case from == to:
		return FailoverPlan{}, fmt.Errorf("%w: a failover from %q to itself", ErrInvalidRequest, from)
	case p.regions[from] == nil:
		return FailoverPlan{}, fmt.Errorf("%w: region %q is unknown; the regions are %v", ErrInvalidRequest, from, p.regionNames())
	}
	plan := FailoverPlan{From: from, To: to}
	for _, t := range p.config.EntityTypes {
		if t.Mode != ModePinned {
			continue
		}
		pin, err := p.pin(t.Name)
		if err != nil {
			return FailoverPlan{}, err
		}
		if pin.primary == from {
			plan.EntityTypes = append(plan.EntityTypes, t.Name)
		}
	}
	slices.Sort(plan.EntityTypes)
	plan.UnlistedTypes = p.config.DefaultMode == ModePinned && p.config.DefaultPrimary == from
	// The failover point must be the whole region's: a pod that cannot be
	// asked could hold later events of from, which the record would fence.
	local, err := p.Progress(ctx, from)
	if err != nil {
		return FailoverPlan{}, err
	}
	plan.Progress = p.progress(ctx, from, local)
	plan.AtRisk = atRisk(plan.Progress)
	point := local.LastApplied
	plan.FromApplied = point
	if !execute {
		return plan, nil
	}
	payload, err := proto.Marshal(&streamdv1.FailoverRecord{From: from, To: to, Held: map[string]int64{from: point}})
	if err != nil {
		return FailoverPlan{}, err
	}
	a, err := p.j.Append(ctx, &streamdv1.Event{EntityType: FailoverEntityType, EntityId: FailoverEntityID, EventType: FailoverEventType, Payload: payload})
	if err != nil {
		return FailoverPlan{}, fmt.Errorf("topology: failover from %q to %q: %w", from, to, err)
	}
	plan.Executed, plan.Offset = true, a[0].Offset
	p.log.Warn("primary: failover: this region took over the region's pinned entity types and entities; its events after the failover point are fenced",
		"from", from, "to", to, "entity_types", plan.EntityTypes, "unlisted_types", plan.UnlistedTypes, "failover_point", time.Unix(0, point).UTC(), "at_risk", plan.AtRisk)
	return plan, nil
}

// progress asks every region but from and this one how far it applied
// from's journals, after local, this region's answer.
func (p *Primary) progress(ctx context.Context, from string, local SourceProgress) []RegionProgress {
	rp := RegionProgress{Region: p.region, Reachable: true, Journals: local.Journals}
	rp.Applied, rp.Known = local.Sums()
	out := []RegionProgress{rp}
	for _, region := range p.regionNames() {
		if region == from || region == p.region {
			continue
		}
		rp := RegionProgress{Region: region}
		err := p.call(ctx, region, "asking for its replication progress", func(ctx context.Context, c streamdv1.PrimaryServiceClient) error {
			resp, err := c.Progress(ctx, &streamdv1.ProgressRequest{Source: from})
			if err == nil {
				rp.Reachable, rp.Journals = true, sourceProgressOf(resp).Journals
				rp.Applied, rp.Known = resp.AppliedOffset, resp.KnownOffset
			}
			return err
		})
		rp.Err = err
		out = append(out, rp)
	}
	return out
}

// atRisk is, per journal, the most a reachable region knows it holds minus
// the most one applied, summed over the journals.
func atRisk(progress []RegionProgress) uint64 {
	applied, known := map[string]uint64{}, map[string]uint64{}
	for _, rp := range progress {
		if !rp.Reachable {
			continue
		}
		for _, j := range rp.Journals {
			id := string(j.JournalID)
			applied[id], known[id] = max(applied[id], j.Applied), max(known[id], j.Known)
		}
	}
	var n uint64
	for id, k := range known {
		if a := applied[id]; k > a {
			n += k - a
		}
	}
	return n
}

// sourceProgressOf reads a ProgressResponse; one without journals (a
// server that does not report them) counts as one journal of unknown id.
func sourceProgressOf(resp *streamdv1.ProgressResponse) SourceProgress {
	sp := SourceProgress{Replicating: resp.Replicating, LastApplied: resp.LastAppliedUnixNano}
	for _, j := range resp.Journals {
		if j != nil {
			sp.Journals = append(sp.Journals, JournalProgress{JournalID: j.JournalId, Applied: j.AppliedOffset, Known: j.KnownOffset})
		}
	}
	if len(sp.Journals) == 0 && (resp.AppliedOffset != 0 || resp.KnownOffset != 0) {
		sp.Journals = []JournalProgress{{Applied: resp.AppliedOffset, Known: resp.KnownOffset}}
	}
	sp.Journals = mergeJournals(sp.Journals, most)
	return sp
}

func least(a, b uint64) uint64 { return min(a, b) }
func most(a, b uint64) uint64  { return max(a, b) }

// mergeJournals returns one entry per journal id, sorted by it, merging
// the Applied of entries with the same id with applied and their Known
// with max.
func mergeJournals(js []JournalProgress, applied func(a, b uint64) uint64) []JournalProgress {
	var out []JournalProgress
	for _, j := range js {
		i, found := slices.BinarySearchFunc(out, j.JournalID, func(e JournalProgress, id []byte) int { return bytes.Compare(e.JournalID, id) })
		if found {
			out[i].Applied, out[i].Known = applied(out[i].Applied, j.Applied), max(out[i].Known, j.Known)
			continue
		}
		out = slices.Insert(out, i, JournalProgress{JournalID: bytes.Clone(j.JournalID), Applied: j.Applied, Known: j.Known})
	}
	return out
}

// lastFrom returns the origin time of the last event of origin from in the
// local journal (0: none), reading back from the end.
func (p *Primary) lastFrom(from string) (int64, error) {
	const chunk = 1024
	var buf []*streamdv1.Event
	for end := p.j.LastOffset(); end > 0; {
		start := uint64(1)
		if end > chunk {
			start = end - chunk + 1
		}
		var err error
		buf, err = p.j.Read(start, int(end-start+1), buf[:0])
		if err != nil {
			return 0, fmt.Errorf("topology: finding the last event of region %q: %w", from, err)
		}
		var last int64
		for _, ev := range buf {
			if ev.Origin == from {
				last = max(last, ev.OriginTimestampUnixNano)
			}
		}
		if last > 0 {
			return last, nil
		}
		end = start - 1
	}
	return 0, nil
}

// Conflict is an event a failover fenced out of its entity's history: its
// region From wrote it after the failover point.
type Conflict struct {
	From, To string
	Event    *streamdv1.Event
}

// Conflicts lists the events of this region that failovers fenced: events
// of single-writer entities, written by a failed-over region after its
// failover point, that are in no history. It reads the journal from the
// earliest failover point on; with Options.Pods, every pod's journal
// (asking the others for theirs), and lists each event, by (origin, entity,
// origin seqNr), once: a slice that moved leaves its events in the journal
// of the pod that served it before. Sorted by offset (of the journal of the
// pod that listed the event).
func (p *Primary) Conflicts(ctx context.Context) ([]Conflict, error) {
	own, err := p.podConflicts(ctx)
	if err != nil || p.pods == nil {
		return own, err
	}
	others, err := askPods(ctx, p, "listing its conflicts", func(ctx context.Context, c streamdv1.PrimaryServiceClient) ([]Conflict, error) {
		resp, err := c.Conflicts(ctx, &streamdv1.ConflictsRequest{Pod: true})
		if err != nil {
			return nil, err
		}
		var cs []Conflict
		for _, c := range resp.Conflicts {
			if c.GetEvent() != nil {
				cs = append(cs, Conflict{From: c.From, To: c.To, Event: c.Event})
			}
		}
		return cs, nil
	})
	if err != nil {
		return nil, err
	}
	type key struct {
		origin, entityType, entityID string
		originSeqNr                  uint64
	}
	seen := map[key]bool{}
	var out []Conflict
	for _, cs := range append([][]Conflict{own}, others...) {
		for _, c := range cs {
			k := key{c.Event.Origin, c.Event.EntityType, c.Event.EntityId, c.Event.OriginSeqNr}
			if !seen[k] {
				seen[k] = true
				out = append(out, c)
			}
		}
	}
	sortConflicts(out)
	return out, nil
}

// podConflicts is Conflicts of this pod's journal.
func (p *Primary) podConflicts(ctx context.Context) ([]Conflict, error) {
	fs, err := p.failovers()
	if err != nil || len(fs) == 0 {
		return nil, err
	}
	since := fs[0].cutoff()
	for _, f := range fs {
		since = min(since, f.cutoff())
	}
	from, err := p.j.OffsetAt(time.Unix(0, since).Add(-skewMargin))
	if err != nil {
		return nil, fmt.Errorf("topology: conflicts: %w", err)
	}
	var entities [][2]string
	seen := map[[2]string]bool{}
	var buf []*streamdv1.Event
	for last := p.j.LastOffset(); from <= last; {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		buf, err = p.j.Read(from, readBatch, buf[:0])
		if err != nil {
			return nil, fmt.Errorf("topology: conflicts: %w", err)
		}
		if len(buf) == 0 {
			break
		}
		for _, ev := range buf {
			k := [2]string{ev.EntityType, ev.EntityId}
			if !seen[k] && p.fenceable(fs, ev) {
				seen[k] = true
				entities = append(entities, k)
			}
		}
		from = buf[len(buf)-1].Offset + 1
	}
	var out []Conflict
	for _, k := range entities {
		cs, err := p.entityConflicts(k[0], k[1])
		if err != nil {
			return nil, err
		}
		out = append(out, cs...)
	}
	sortConflicts(out)
	return out, nil
}

// sortConflicts sorts by offset, then in the origin's order (the offsets
// of a region whose pods share the entities are of different journals).
func sortConflicts(cs []Conflict) {
	slices.SortFunc(cs, func(a, b Conflict) int {
		x, y := a.Event, b.Event
		return cmp.Or(cmp.Compare(x.Offset, y.Offset), cmp.Compare(x.OriginTimestampUnixNano, y.OriginTimestampUnixNano), cmp.Compare(x.Origin, y.Origin),
			cmp.Compare(x.EntityType, y.EntityType), cmp.Compare(x.EntityId, y.EntityId), cmp.Compare(x.OriginSeqNr, y.OriginSeqNr))
	})
}

// fenceable reports whether a failover may fence ev: an event of a
// single-writer entity type, written by a failover's from after its
// failover point.
func (p *Primary) fenceable(fs []failover, ev *streamdv1.Event) bool {
	t, ok := p.config.Lookup(ev.EntityType)
	if !ok || !t.SingleWriter() {
		return false
	}
	for _, f := range fs {
		if ev.Origin == f.from && ev.OriginTimestampUnixNano > f.cutoff() {
			return true
		}
	}
	return false
}

// entityConflicts folds an entity and returns its fenced events.
func (p *Primary) entityConflicts(entityType, entityID string) ([]Conflict, error) {
	t, err := p.singleWriter(entityType, entityID)
	if err != nil {
		return nil, err
	}
	e := p.entity(t, entityID)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := p.fold(e); err != nil {
		return nil, err
	}
	fs := e.failovers
	in := make(map[*streamdv1.Event]bool, len(e.chain))
	for _, ev := range e.chain {
		in[ev] = true
	}
	var out []Conflict
	for _, ev := range e.events {
		if in[ev] || Version(ev) == 0 {
			continue
		}
		for _, f := range fs {
			if ev.Origin == f.from && ev.OriginTimestampUnixNano > f.cutoff() {
				out = append(out, Conflict{From: f.from, To: f.to, Event: proto.CloneOf(ev)})
				break
			}
		}
	}
	return out, nil
}

// ConflictObserver, implemented by an Options.Observer, is told of each
// conflict WatchConflicts finds.
type ConflictObserver interface {
	// Conflict: an event of entityType written by region from was fenced
	// out by a failover.
	Conflict(from, entityType string)
}

// WatchConflicts reports every conflict (see Conflicts) of this pod's
// journal once, with a warning in the log and to the Observer if it is a
// ConflictObserver: those in the journal when it starts, then those that
// arrive, until ctx is done, and returns why it stopped (ctx's error, or
// the journal's). It does not ask the other pods (Options.Pods): each pod
// watches its own journal. Run it in one goroutine.
func (p *Primary) WatchConflicts(ctx context.Context) error {
	reported := map[[2]string]bool{} // origin, and entity key with origin seqNr
	report := func(cs []Conflict) {
		for _, c := range cs {
			ev := c.Event
			k := [2]string{ev.Origin, fmt.Sprintf("%s/%d", journal.EntityKey(ev.EntityType, ev.EntityId), ev.OriginSeqNr)}
			if reported[k] {
				continue
			}
			reported[k] = true
			p.log.Warn("primary: conflict: an event written by a failed-over region after the failover point is in no history (streamctl primary conflicts lists them)",
				"from", c.From, "to", c.To, "entity_type", ev.EntityType, "entity_id", ev.EntityId, "origin_seq_nr", ev.OriginSeqNr, "offset", ev.Offset)
			if o, ok := p.obs.(ConflictObserver); ok {
				o.Conflict(c.From, ev.EntityType)
			}
		}
	}
	cur := p.j.NewCursor(p.j.LastOffset() + 1)
	fs, err := p.failovers()
	if err != nil {
		return err
	}
	known := len(fs) // the records the last full scan saw, at least
	cs, err := p.podConflicts(ctx)
	if err != nil {
		return err
	}
	report(cs)
	var recs []journal.Record
	for {
		recs, err = cur.Wait(ctx, readBatch, recs[:0])
		if err != nil {
			return err
		}
		fs, err = p.failovers()
		if err != nil {
			return err
		}
		if len(fs) == 0 {
			// Nothing is fenced: skip to the end without decoding events.
			cur = p.j.NewCursor(p.j.LastOffset() + 1)
			continue
		}
		if len(fs) != known { // a new record: what is fenced changed
			known = len(fs)
			cs, err = p.podConflicts(ctx)
			if err != nil {
				return err
			}
			report(cs)
			continue
		}
		var entities [][2]string
		for i := range recs {
			ev, err := recs[i].Event()
			if err != nil {
				return fmt.Errorf("topology: watching for conflicts: %w", err)
			}
			if p.fenceable(fs, ev) {
				entities = append(entities, [2]string{ev.EntityType, ev.EntityId})
			}
		}
		for _, k := range entities {
			cs, err := p.entityConflicts(k[0], k[1])
			if err != nil {
				p.log.Warn("primary: could not check an entity for conflicts", "entity_type", k[0], "entity_id", k[1], "err", err)
				continue
			}
			report(cs)
		}
	}
}

// Progress answers how far this region applied source's journals, and the
// origin time of the last event of source it holds. With Options.Pods it
// asks the other pods for theirs and merges them: per journal of source,
// the least any pod that reports it applied (each pod applies the slices
// it serves) and the most any knows; the latest last event. If a pod
// cannot be asked, it fails naming the pod: a region's progress without a
// pod's would under-report the events at risk.
func (p *Primary) Progress(ctx context.Context, source string) (SourceProgress, error) {
	own, err := p.podProgress(source)
	if err != nil || p.pods == nil {
		return own, err
	}
	others, err := askPods(ctx, p, fmt.Sprintf("asking for its replication progress from %q", source), func(ctx context.Context, c streamdv1.PrimaryServiceClient) (SourceProgress, error) {
		resp, err := c.Progress(ctx, &streamdv1.ProgressRequest{Source: source, Pod: true})
		if err != nil {
			return SourceProgress{}, err
		}
		return sourceProgressOf(resp), nil
	})
	if err != nil {
		return SourceProgress{}, err
	}
	merged := own
	var all []JournalProgress
	for _, sp := range append(others, own) {
		merged.Replicating = merged.Replicating || sp.Replicating
		merged.LastApplied = max(merged.LastApplied, sp.LastApplied)
		all = append(all, sp.Journals...)
	}
	merged.Journals = mergeJournals(all, least)
	return merged, nil
}

// podProgress is Progress of this pod's journal.
func (p *Primary) podProgress(source string) (SourceProgress, error) {
	var sp SourceProgress
	if p.progressOf != nil {
		var js []JournalProgress
		js, sp.Replicating = p.progressOf(source)
		sp.Journals = mergeJournals(js, most)
	}
	var err error
	sp.LastApplied, err = p.lastFrom(source)
	return sp, err
}

// askPods asks every other pod of this region (Options.Pods) at once and
// returns their answers in the order of the pods; if any fails, the
// errors, each naming its pod.
func askPods[T any](ctx context.Context, p *Primary, why string, ask func(context.Context, streamdv1.PrimaryServiceClient) (T, error)) ([]T, error) {
	pods, err := p.pods()
	if err != nil {
		return nil, fmt.Errorf("%w: listing the other pods of region %q (%s): %w", ErrUnavailable, p.region, why, err)
	}
	out, errs := make([]T, len(pods)), make([]error, len(pods))
	var wg sync.WaitGroup
	for i, c := range pods {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, p.timeout)
			defer cancel()
			var err error
			if out[i], err = ask(cctx, c); err != nil {
				errs[i] = p.podError(ctx, podName(i, c), why, err)
			}
		})
	}
	wg.Wait()
	return out, errors.Join(errs...)
}

// podName names the i-th of Options.Pods in errors: its String if it has
// one, else its place in the list.
func podName(i int, c streamdv1.PrimaryServiceClient) string {
	if s, ok := c.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("#%d (of Options.Pods)", i+1)
}

// podError words the error of a call to another pod of this region, with
// the status codes call gives the errors of other regions.
func (p *Primary) podError(ctx context.Context, pod, why string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("topology: pod %s of region %q (%s): %w", pod, p.region, why, ctx.Err())
	}
	switch s, _ := status.FromError(err); s.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Errorf("%w: pod %s of region %q (%s): %s", ErrUnavailable, pod, p.region, why, s.Message())
	}
	return fmt.Errorf("topology: pod %s of region %q (%s): %w", pod, p.region, why, err)
}

package topology

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology/crdt"
)

// Replicated is the replicated-writes model of an entity type (ARCHITECTURE.md
// §7): every region writes the same entity in its own journal, and the entity's
// state is a crdt.State folded from all its events, which converges in every
// region whatever the order in which replication delivers them.
//
// Apply turns a command's changes into CRDT ops (crdt.State.Prepare) and
// appends them in one journal append, one event per op: EventType names the
// op, Payload is its JSON, Origin is this region, VersionVector the entity's
// vector as this region has seen it (the pointwise maximum of its events'
// vectors and origin seqNrs) with this region's entry raised by one per event,
// OriginSeqNr that entry (this region's count of its own events of the entity,
// as the journal numbers them per origin), and OriginTimestampUnixNano the
// clock. (Origin, OriginSeqNr) is the op's unique Dot, the tag of an OR-set
// add. Replication copies these events into the other regions' journals
// keeping the origin fields; State folds every event of the entity found in
// the local journal (journal.ReadEntity).
//
// What it guarantees:
//
//   - Regions whose journals hold the same events of an entity, in any order
//     and with any duplicates, return Equal states: the ops commute and are
//     idempotent (see package crdt), so the fold does not depend on the
//     journal dropping duplicates by (origin, origin seqNr), though it does.
//   - A region's writes to an entity are serialised: Apply appends with the
//     seqNr it expects (optimistic concurrency) and, when a concurrent append
//     (typically a replicated event) took that seqNr, folds it and prepares the
//     changes again, so an op always reflects every event of the entity that
//     this journal holds before it, and Dots are never reused.
//   - Folded states are cached per entity with the last seqNr folded, so a
//     State or Apply reads only the events appended since.
//
// What it does not guarantee: region names must be unique among the regions
// (two journals writing as one region would reuse Dots; when the journal is
// given a region, journal.Options.Region, it must be this one), and the entity's
// history must stay whole: retention must not delete the events of
// replicated-write entity types. A seqNr missing from the history is reported
// as ErrIncompleteHistory rather than folded into a wrong state, but a history
// deleted entirely reads as an empty entity (State); Apply then fails, as the
// journal shows it numbers the entity's events beyond what can be read. Events
// of the entity that are not CRDT ops are an error (crdt.ErrInvalidOp).
type Replicated struct {
	j           *journal.Journal
	region      string
	now         func() time.Time
	maxAttempts int

	mu       sync.Mutex
	entities map[string]*list.Element // of *replicatedEntity, most recently used first
	lru      *list.List
	max      int
}

// ReplicatedOptions configure a Replicated.
type ReplicatedOptions struct {
	// Region is the name of this region, written as the origin of every op.
	// Required; unique among the regions.
	Region string
	// Now is the clock of LWW timestamps and origin timestamps; default
	// time.Now.
	Now func() time.Time
	// CachedEntities bounds how many entities' folded states are kept in
	// memory; default 1024.
	CachedEntities int
	// MaxAttempts bounds how often Apply appends when concurrent appends to the
	// same entity keep taking the seqNr it expects, and how many journal
	// commits it waits for a seqNr it was told of to become readable; default
	// 100.
	MaxAttempts int
}

// ErrInvalidOptions is wrapped by every error of ReplicatedOptions.Validate.
var ErrInvalidOptions = errors.New("topology: invalid options")

// Validate reports every nonsensical field, joined; each error wraps
// ErrInvalidOptions.
func (o ReplicatedOptions) Validate() error {
	var errs []error
	if o.Region == "" {
		errs = append(errs, fmt.Errorf("%w: ReplicatedOptions.Region is empty; name this region", ErrInvalidOptions))
	}
	if o.CachedEntities < 0 {
		errs = append(errs, fmt.Errorf("%w: ReplicatedOptions.CachedEntities is %d; it must be 0 (default) or more", ErrInvalidOptions, o.CachedEntities))
	}
	if o.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("%w: ReplicatedOptions.MaxAttempts is %d; it must be 0 (default) or more", ErrInvalidOptions, o.MaxAttempts))
	}
	return errors.Join(errs...)
}

// ErrIncompleteHistory: events of an entity are missing from the local
// journal (a gap in its seqNrs, or a seqNr the journal has committed that
// never becomes readable: retention deleted them), so its state cannot be
// folded.
var ErrIncompleteHistory = errors.New("topology: replicated entity's history is incomplete")

// replicatedEntity is the folded state of one entity as far as lastSeqNr.
type replicatedEntity struct {
	key string
	mu  sync.Mutex // serialises folds and writes of the entity in this process
	// Guarded by mu.
	state     *crdt.State
	vv        map[string]uint64
	lastSeqNr uint64
}

// replicatedReadBatch is how many events a fold reads at a time.
const replicatedReadBatch = 256

// NewReplicated returns the replicated-writes API over j for the region
// opts.Region.
func NewReplicated(j *journal.Journal, opts ReplicatedOptions) (*Replicated, error) {
	if j == nil {
		return nil, errors.New("topology: NewReplicated needs a journal")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	r := &Replicated{
		j: j, region: opts.Region, now: opts.Now, maxAttempts: opts.MaxAttempts,
		entities: make(map[string]*list.Element), lru: list.New(), max: opts.CachedEntities,
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.maxAttempts == 0 {
		r.maxAttempts = 100
	}
	if r.max == 0 {
		r.max = 1024
	}
	return r, nil
}

// Region is the name this region writes as origin.
func (r *Replicated) Region() string { return r.region }

// State returns the entity's state folded from every event of it in the local
// journal: empty for an entity with no events. The state is the caller's.
func (r *Replicated) State(ctx context.Context, entityType, entityID string) (*crdt.State, error) {
	e, err := r.entity(entityType, entityID)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := r.fold(ctx, e, entityType, entityID); err != nil {
		return nil, err
	}
	return e.state.Clone(), nil
}

// Apply makes changes to the entity in this region, as one journal append,
// and returns the state with them. With no changes it appends nothing.
func (r *Replicated) Apply(ctx context.Context, entityType, entityID string, changes ...crdt.Change) (*crdt.State, error) {
	state, _, err := r.update(ctx, entityType, entityID, nil, changes)
	return state, err
}

// Append makes changes as Apply does and returns where each change's event
// landed in the local journal.
func (r *Replicated) Append(ctx context.Context, entityType, entityID string, changes ...crdt.Change) ([]journal.Appended, error) {
	_, appended, err := r.update(ctx, entityType, entityID, nil, changes)
	return appended, err
}

// Update runs a command: decide reads the entity's current state and returns
// the changes to make, which are appended as by Apply. decide may run more than
// once (when a concurrent append to the entity intervenes) and must not keep
// or modify the state it is given. An error from decide is returned as is and
// nothing is appended.
func (r *Replicated) Update(ctx context.Context, entityType, entityID string, decide func(*crdt.State) ([]crdt.Change, error)) (*crdt.State, error) {
	if decide == nil {
		return nil, errors.New("topology: Update needs a decide function")
	}
	state, _, err := r.update(ctx, entityType, entityID, decide, nil)
	return state, err
}

func (r *Replicated) update(ctx context.Context, entityType, entityID string, decide func(*crdt.State) ([]crdt.Change, error), changes []crdt.Change) (*crdt.State, []journal.Appended, error) {
	e, err := r.entity(entityType, entityID)
	if err != nil {
		return nil, nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for attempt := 1; ; attempt++ {
		if err := r.fold(ctx, e, entityType, entityID); err != nil {
			return nil, nil, err
		}
		if decide != nil {
			if changes, err = decide(e.state.Clone()); err != nil {
				return nil, nil, err
			}
		}
		if len(changes) == 0 {
			return e.state.Clone(), nil, nil
		}
		next, vv, events, err := r.prepare(e, entityType, entityID, changes)
		if err != nil {
			return nil, nil, err
		}
		appended, err := r.j.Append(ctx, events...)
		var conflict *journal.SeqNrConflictError
		if errors.As(err, &conflict) {
			if attempt >= r.maxAttempts {
				return nil, nil, fmt.Errorf("topology: %s/%s: %d appends in a row lost the seqNr to concurrent appends to the entity; try again: %w",
					entityType, entityID, attempt, err)
			}
			if err := r.awaitSeqNr(ctx, e, entityType, entityID, conflict.Next-1); err != nil {
				return nil, nil, err
			}
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("topology: %s/%s: append: %w", entityType, entityID, err)
		}
		for i, a := range appended {
			if a.Duplicate {
				// This region's ops are not all in the fold: the journal had
				// another writer as this region, or lost the history.
				return nil, nil, fmt.Errorf("topology: %s/%s: the journal already holds origin seqNr %d of region %q, so it dropped change %d: another process writes as %q, or retention deleted the entity's history",
					entityType, entityID, events[i].OriginSeqNr, r.region, i, r.region)
			}
		}
		e.state, e.vv, e.lastSeqNr = next, vv, appended[len(appended)-1].SeqNr
		return next.Clone(), appended, nil
	}
}

// prepare turns changes into the events of one append, against e's state, and
// returns the state and version vector once they are applied.
func (r *Replicated) prepare(e *replicatedEntity, entityType, entityID string, changes []crdt.Change) (*crdt.State, map[string]uint64, []*streamdv1.Event, error) {
	state := e.state.Clone()
	vv := maps.Clone(e.vv)
	if vv == nil {
		vv = make(map[string]uint64)
	}
	now := r.now().UnixNano()
	events := make([]*streamdv1.Event, 0, len(changes))
	for i, c := range changes {
		vv[r.region]++
		op, err := state.Prepare(c, crdt.Dot{Region: r.region, Counter: vv[r.region]}, now)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("topology: %s/%s: change %d: %w", entityType, entityID, i, err)
		}
		eventType, payload, err := crdt.Encode(op)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("topology: %s/%s: change %d: %w", entityType, entityID, i, err)
		}
		if err := state.Apply(op); err != nil {
			return nil, nil, nil, err // Prepare made it: cannot happen
		}
		events = append(events, &streamdv1.Event{
			EntityType:              entityType,
			EntityId:                entityID,
			SeqNr:                   e.lastSeqNr + uint64(i) + 1, // the expectation that serialises writes
			EventType:               eventType,
			Payload:                 payload,
			Origin:                  r.region,
			OriginSeqNr:             vv[r.region],
			OriginTimestampUnixNano: now,
			VersionVector:           maps.Clone(vv),
		})
	}
	return state, vv, events, nil
}

// awaitSeqNr folds e until it has folded seqNr. An append that conflicted
// may name events committed but not yet durable, which readers do not see yet:
// then it waits for the journal's next durable commit, with ctx. After
// maxAttempts commits that bring none of the entity's missing events, they are
// taken as deleted.
func (r *Replicated) awaitSeqNr(ctx context.Context, e *replicatedEntity, entityType, entityID string, seqNr uint64) error {
	for idle := 0; ; idle++ {
		visible, folded := r.j.LastOffset(), e.lastSeqNr
		if err := r.fold(ctx, e, entityType, entityID); err != nil {
			return err
		}
		if e.lastSeqNr >= seqNr {
			return nil
		}
		if e.lastSeqNr > folded {
			idle = 0
		}
		if idle >= r.maxAttempts {
			return fmt.Errorf("%w: %s/%s: seqNr %d is committed but not readable after %d more commits; was it deleted by retention?",
				ErrIncompleteHistory, entityType, entityID, seqNr, idle)
		}
		if _, err := r.j.NewCursor(visible+1).Wait(ctx, 1, nil); err != nil {
			return fmt.Errorf("topology: %s/%s: waiting for seqNr %d to be readable: %w", entityType, entityID, seqNr, err)
		}
	}
}

// fold applies the entity's events after e.lastSeqNr.
func (r *Replicated) fold(ctx context.Context, e *replicatedEntity, entityType, entityID string) error {
	var buf []*streamdv1.Event
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		buf, err = r.j.ReadEntity(entityType, entityID, e.lastSeqNr+1, replicatedReadBatch, buf[:0])
		if err != nil {
			return fmt.Errorf("topology: %w", err)
		}
		for _, ev := range buf {
			if ev.SeqNr != e.lastSeqNr+1 {
				return fmt.Errorf("%w: %s/%s has seqNr %d after %d; keep retention off for replicated-write entity types",
					ErrIncompleteHistory, entityType, entityID, ev.SeqNr, e.lastSeqNr)
			}
			op, err := crdt.Decode(ev.EventType, ev.Payload)
			if err != nil {
				return fmt.Errorf("topology: %s/%s seqNr %d (origin %q): %w", entityType, entityID, ev.SeqNr, ev.Origin, err)
			}
			if err := e.state.Apply(op); err != nil {
				return err // Decode validated it: cannot happen
			}
			for region, n := range ev.VersionVector {
				e.vv[region] = max(e.vv[region], n)
			}
			if ev.Origin != "" {
				e.vv[ev.Origin] = max(e.vv[ev.Origin], ev.OriginSeqNr)
			}
			e.lastSeqNr = ev.SeqNr
		}
		if len(buf) < replicatedReadBatch {
			return nil
		}
	}
}

// entity returns the cache entry of an entity, making it the most recently
// used. An entry evicted while in use is harmless: a new one folds the journal
// again, and seqNr expectations keep two writers of the entity apart.
func (r *Replicated) entity(entityType, entityID string) (*replicatedEntity, error) {
	if entityType == "" || entityID == "" {
		return nil, fmt.Errorf("topology: entity type %q and id %q: both are required", entityType, entityID)
	}
	key := journal.EntityKey(entityType, entityID)
	r.mu.Lock()
	defer r.mu.Unlock()
	if el, ok := r.entities[key]; ok {
		r.lru.MoveToFront(el)
		return el.Value.(*replicatedEntity), nil
	}
	e := &replicatedEntity{key: key, state: &crdt.State{}, vv: make(map[string]uint64)}
	r.entities[key] = r.lru.PushFront(e)
	for r.lru.Len() > r.max {
		old := r.lru.Remove(r.lru.Back()).(*replicatedEntity)
		delete(r.entities, old.key)
	}
	return e, nil
}

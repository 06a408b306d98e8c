package consumer

import (
	"context"
	"errors"

	"github.com/dgraph-io/badger/v4"

	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// maxCachedEntities bounds the in-memory seqNr cache of a producer; past it
// the cache is emptied after a save (everything in it is then in the store).
const maxCachedEntities = 1 << 17

type entityKey struct{ typ, id string }

// applied is what the follower knows of an entity: the last seqNr it
// applied (saved, or pending: in follower.pending).
type applied struct {
	seqNr   uint64
	pending bool
}

// pendingEntity is an entity applied since the last save began.
type pendingEntity struct {
	key entityKey
	a   *applied
}

// entity returns the record of k: the cache's, else one read from the
// store and cached. One map lookup per event on the way to the handler.
func (f *follower) entity(k entityKey) (*applied, error) {
	if a := f.cache[k]; a != nil {
		return a, nil
	}
	v, err := f.c.opts.Store.AppliedSeqNr(nil, f.c.opts.Name, f.journalID, k.typ, k.id)
	if err != nil {
		return nil, storeErrorf("consumer: producer %s: read applied seqNr of %s/%s: %w", f.addr, k.typ, k.id, err)
	}
	a := &applied{seqNr: v}
	f.cache[k] = a
	return a, nil
}

// lastApplied is the last applied seqNr of k: the cache, else the store.
func (f *follower) lastApplied(k entityKey) (uint64, error) {
	a, err := f.entity(k)
	if err != nil {
		return 0, err
	}
	return a.seqNr, nil
}

// apply records seqNr as applied to k (whose record is a), to be saved.
func (f *follower) apply(k entityKey, a *applied, seqNr uint64) {
	a.seqNr = seqNr
	if !a.pending {
		a.pending = true
		f.pending = append(f.pending, pendingEntity{k, a})
	}
}

// remember records seqNr as applied to k and stored (ExactlyOnce).
func (f *follower) remember(k entityKey, seqNr uint64) {
	if a := f.cache[k]; a != nil {
		a.seqNr = seqNr
		return
	}
	f.cache[k] = &applied{seqNr: seqNr}
}

// forgetApplied empties the cache and drops what is pending (another
// journal's seqNrs).
func (f *follower) forgetApplied() {
	clear(f.cache)
	clear(f.pending)
	f.pending = f.pending[:0]
}

func (f *follower) handlerError(ctx context.Context, e *streamdv1.Event, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx) // the stream is ending; the event comes again
	}
	return &HandlerError{Addr: f.addr, Offset: e.GetOffset(), EntityType: e.GetEntityType(), EntityID: e.GetEntityId(), SeqNr: e.GetSeqNr(), Err: err}
}

func (f *follower) batchAtLeastOnce(ctx context.Context, b *streamdv1.EventBatch) error {
	o := f.c.opts
	if o.BatchHandler != nil {
		return f.wholeBatchAtLeastOnce(ctx, b)
	}
	for _, e := range b.GetEvents() {
		if err := f.checkEvent(e); err != nil {
			return err
		}
		if !b.GetReplay() {
			f.lastKnown = max(f.lastKnown, e.GetOffset())
		}
		if f.mine(e, b.GetReplay()) {
			k := entityKey{e.GetEntityType(), e.GetEntityId()}
			a, err := f.entity(k)
			if err != nil {
				return err
			}
			if e.GetSeqNr() > a.seqNr {
				if err := o.Handler(ctx, e); err != nil {
					return f.handlerError(ctx, e, err)
				}
				f.apply(k, a, e.GetSeqNr())
				f.sinceSave++
			}
		}
		if !b.GetReplay() && e.GetOffset() > f.offset {
			f.offset, f.dirty = e.GetOffset(), true
		}
		if f.sinceSave >= o.SaveEvery {
			if err := f.saveSoon(); err != nil {
				return err
			}
		}
	}
	return nil
}

// admit checks an event of batch b, notes its offset (live batches move
// *end, the offset after the batch) and reports whether it is in this
// consumer's slices.
func (f *follower) admit(b *streamdv1.EventBatch, e *streamdv1.Event, end *uint64) (mine bool, err error) {
	if err := f.checkEvent(e); err != nil {
		return false, err
	}
	if !b.GetReplay() {
		f.lastKnown = max(f.lastKnown, e.GetOffset())
		*end = max(*end, e.GetOffset())
	}
	return f.mine(e, b.GetReplay()), nil
}

// wholeBatchAtLeastOnce hands the new events of b to the BatchHandler at
// once, then records them as applied.
func (f *follower) wholeBatchAtLeastOnce(ctx context.Context, b *streamdv1.EventBatch) error {
	o := f.c.opts
	end := f.offset
	var todo []*streamdv1.Event
	next := make(map[entityKey]uint64) // applied seqNrs after this batch
	for _, e := range b.GetEvents() {
		if mine, err := f.admit(b, e, &end); err != nil || !mine {
			if err != nil {
				return err
			}
			continue
		}
		if o.NoDedupe {
			todo = append(todo, e)
			continue
		}
		k := entityKey{e.GetEntityType(), e.GetEntityId()}
		last, ok := next[k]
		if !ok {
			var err error
			if last, err = f.lastApplied(k); err != nil {
				return err
			}
		}
		if e.GetSeqNr() > last {
			todo = append(todo, e)
			next[k] = e.GetSeqNr()
		}
	}
	if len(todo) > 0 {
		// The handler may take the events over; errors name the first as sent.
		first := &streamdv1.Event{Offset: todo[0].GetOffset(), EntityType: todo[0].GetEntityType(), EntityId: todo[0].GetEntityId(), SeqNr: todo[0].GetSeqNr()}
		if err := o.BatchHandler(ctx, todo); err != nil {
			return f.handlerError(ctx, first, err)
		}
	}
	for k, seq := range next {
		a, err := f.entity(k) // cached by the loop above
		if err != nil {
			return err
		}
		f.apply(k, a, seq)
	}
	f.sinceSave += len(todo)
	if end > f.offset {
		f.offset, f.dirty = end, true
	}
	if f.sinceSave >= o.SaveEvery {
		return f.saveSoon()
	}
	return nil
}

func (f *follower) batchExactlyOnce(ctx context.Context, b *streamdv1.EventBatch) error {
	end := f.offset // the offset after the batch
	var todo []*streamdv1.Event
	for _, e := range b.GetEvents() {
		if mine, err := f.admit(b, e, &end); err != nil || !mine {
			if err != nil {
				return err
			}
			continue
		}
		// Cached seqNrs are committed, so a hit is surely a duplicate; the
		// rest is checked inside the transaction.
		if a := f.cache[entityKey{e.GetEntityType(), e.GetEntityId()}]; a != nil && e.GetSeqNr() <= a.seqNr {
			continue
		}
		todo = append(todo, e)
	}
	if len(todo) == 0 {
		if end > f.offset {
			f.offset, f.dirty = end, true // nothing to apply: saved with the next save
		}
		return nil
	}
	if f.c.opts.CommitHandler != nil {
		return f.handOver(ctx, todo, end)
	}
	err := f.commit(ctx, todo, end)
	if errors.Is(err, badger.ErrTxnTooBig) && len(todo) > 1 {
		f.log.Debug("consumer: batch too big for one transaction, committing event by event", "events", len(todo))
		for i, e := range todo {
			pos := f.offset
			if !b.GetReplay() {
				pos = max(pos, e.GetOffset())
			}
			if i == len(todo)-1 {
				pos = end
			}
			if err := f.commit(ctx, todo[i:i+1], pos); err != nil {
				return err
			}
		}
		return nil
	}
	return err
}

// commit runs the TxHandler on events in one transaction that also stores
// their seqNrs and the offset pos.
func (f *follower) commit(ctx context.Context, events []*streamdv1.Event, pos uint64) error {
	o := f.c.opts
	if f.parts != nil {
		f.c.resplitMu.Lock()
		defer f.c.resplitMu.Unlock()
	}
	keys := f.savedKeys(pos)
	var last, applied map[entityKey]uint64 // last: read or applied in txn; applied: to store
	err := o.Store.Update(func(txn *badger.Txn) error {
		last = make(map[entityKey]uint64, len(events))
		applied = make(map[entityKey]uint64, len(events))
		var origins originSeqNrs
		for _, e := range events {
			ek := entityKey{e.GetEntityType(), e.GetEntityId()}
			seq, ok := last[ek]
			if !ok {
				var err error
				seq, err = o.Store.AppliedSeqNr(txn, o.Name, f.journalID, ek.typ, ek.id)
				if err != nil {
					return storeErrorf("consumer: producer %s: read applied seqNr of %s/%s: %w", f.addr, ek.typ, ek.id, err)
				}
				last[ek] = seq
			}
			if e.GetSeqNr() <= seq {
				continue
			}
			copied := false // applied before from another journal's copy
			if o.DedupeOrigin && e.GetOrigin() != "" && e.GetOriginSeqNr() > 0 {
				var err error
				if copied, err = origins.seen(txn, o.Store, o.Name, e); err != nil {
					return storeErrorf("consumer: producer %s: read origin seqNr of %s/%s: %w", f.addr, ek.typ, ek.id, err)
				}
			}
			if !copied {
				if err := o.TxHandler(ctx, txn, e); err != nil {
					return f.handlerError(ctx, e, err)
				}
			}
			last[ek], applied[ek] = e.GetSeqNr(), e.GetSeqNr()
		}
		list := make([]offsets.Applied, 0, len(applied))
		for ek, seq := range applied {
			list = append(list, offsets.Applied{EntityType: ek.typ, EntityID: ek.id, SeqNr: seq})
		}
		for _, k := range keys {
			if err := o.Store.SaveTxn(txn, k, pos, list); err != nil {
				return storeErrorf("consumer: producer %s: stage the offset: %w", f.addr, err)
			}
			list = nil
		}
		if err := o.Store.SetOriginSeqNrs(txn, o.Name, origins.list()); err != nil {
			return storeErrorf("consumer: producer %s: stage the origin seqNrs: %w", f.addr, err)
		}
		return nil
	})
	if err != nil {
		var he *HandlerError
		var se *storeError
		if errors.As(err, &he) || errors.As(err, &se) || errors.Is(err, badger.ErrTxnTooBig) || ctx.Err() != nil {
			return err
		}
		return storeErrorf("consumer: producer %s: commit: %w", f.addr, err)
	}
	f.committed(keys, pos, last)
	return nil
}

type originEntity struct{ origin, typ, id string }

// originSeqNrs is what one exactly-once transaction read and applied of
// (origin, entity) origin seqNrs (Options.DedupeOrigin).
type originSeqNrs struct {
	last    map[originEntity]uint64 // read or applied in the transaction
	applied map[originEntity]uint64 // to store with it
}

// seen reports whether e's origin seqNr was applied already by consumer,
// from any journal; if not, it counts it as applied in this transaction.
func (m *originSeqNrs) seen(txn *badger.Txn, store *offsets.Store, consumer string, e *streamdv1.Event) (bool, error) {
	if m.last == nil {
		m.last, m.applied = map[originEntity]uint64{}, map[originEntity]uint64{}
	}
	k := originEntity{e.GetOrigin(), e.GetEntityType(), e.GetEntityId()}
	last, ok := m.last[k]
	if !ok {
		var err error
		if last, err = store.OriginSeqNr(txn, consumer, k.origin, k.typ, k.id); err != nil {
			return false, err
		}
		m.last[k] = last
	}
	if e.GetOriginSeqNr() <= last {
		return true, nil
	}
	m.last[k], m.applied[k] = e.GetOriginSeqNr(), e.GetOriginSeqNr()
	return false, nil
}

func (m *originSeqNrs) list() []offsets.OriginApplied {
	list := make([]offsets.OriginApplied, 0, len(m.applied))
	for k, seq := range m.applied {
		list = append(list, offsets.OriginApplied{Origin: k.origin, EntityType: k.typ, EntityID: k.id, SeqNr: seq})
	}
	return list
}

// handOver gives the CommitHandler the events not applied yet (all of them
// with NoDedupe) and the offset records to commit with them.
func (f *follower) handOver(ctx context.Context, events []*streamdv1.Event, pos uint64) error {
	o := f.c.opts
	todo := events
	applied := make(map[entityKey]uint64)
	if !o.NoDedupe {
		todo = nil
		for _, e := range events {
			ek := entityKey{e.GetEntityType(), e.GetEntityId()}
			last, ok := applied[ek]
			if !ok {
				var err error
				if last, err = f.lastApplied(ek); err != nil {
					return err
				}
			}
			if e.GetSeqNr() > last {
				todo = append(todo, e)
				applied[ek] = e.GetSeqNr()
			}
		}
	}
	list := make([]offsets.Applied, 0, len(applied))
	for ek, seq := range applied {
		list = append(list, offsets.Applied{EntityType: ek.typ, EntityID: ek.id, SeqNr: seq})
	}
	if f.parts != nil {
		f.c.resplitMu.Lock()
		defer f.c.resplitMu.Unlock()
	}
	keys := f.savedKeys(pos)
	var writes []offsets.Write
	for _, k := range keys {
		w, err := o.Store.OffsetWrites(k, pos, list)
		if err != nil {
			return storeErrorf("consumer: producer %s: offset %d: %w", f.addr, pos, err)
		}
		writes, list = append(writes, w...), nil
	}
	// The handler may take the events over; errors name the first as sent.
	first := &streamdv1.Event{Offset: events[0].GetOffset(), EntityType: events[0].GetEntityType(), EntityId: events[0].GetEntityId(), SeqNr: events[0].GetSeqNr()}
	if err := o.CommitHandler(ctx, todo, writes); err != nil {
		return f.handlerError(ctx, first, err)
	}
	f.committed(keys, pos, applied)
	return nil
}

// committed records what an exactly-once commit stored: the offset pos
// under keys, and the entities' last seqNrs applied.
func (f *follower) committed(keys []offsets.Key, pos uint64, applied map[entityKey]uint64) {
	if len(f.cache) > maxCachedEntities {
		clear(f.cache)
	}
	for ek, seq := range applied {
		f.remember(ek, seq)
	}
	f.saved(keys)
	f.stored = max(f.stored, pos)
	if pos >= f.offset {
		f.offset, f.dirty = pos, false
	}
}

// save is what an at-least-once save writes: the offset, under keys, and
// the seqNrs applied since the save before.
type save struct {
	keys    []offsets.Key
	offset  uint64
	applied []offsets.Applied
	resplit bool // made during a re-split: written under Consumer.resplitMu
}

// take returns what moved since the last save (nil if nothing did) and
// starts counting afresh.
func (f *follower) take() *save {
	if !f.known || (!f.dirty && len(f.pending) == 0) {
		return nil
	}
	s := &save{keys: f.savedKeys(f.offset), offset: f.offset, applied: make([]offsets.Applied, 0, len(f.pending)), resplit: f.parts != nil}
	for _, p := range f.pending {
		s.applied = append(s.applied, offsets.Applied{EntityType: p.key.typ, EntityID: p.key.id, SeqNr: p.a.seqNr})
		p.a.pending = false
	}
	f.dirty, f.sinceSave = false, 0
	clear(f.pending)
	f.pending = f.pending[:0]
	return s
}

// write stores s durably: through the CommitHandler, with no events, if
// there is one (a replication appends the offset records to its journal
// like a batch, instead of a separate transaction that waits for its own
// sync), else with the store. It touches nothing of f but the store, so it
// may run beside the handler.
func (f *follower) write(s *save) error {
	if s.resplit {
		f.c.resplitMu.Lock()
		defer f.c.resplitMu.Unlock()
	}
	applied := s.applied
	if h := f.c.opts.CommitHandler; h != nil {
		var writes []offsets.Write
		for _, k := range s.keys {
			w, err := f.c.opts.Store.OffsetWrites(k, s.offset, applied)
			if err != nil {
				return storeErrorf("consumer: producer %s: offset %d: %w", f.addr, s.offset, err)
			}
			writes, applied = append(writes, w...), nil
		}
		// Also at the end of a stream, whose context is over.
		if err := h(context.Background(), nil, writes); err != nil {
			return storeErrorf("consumer: producer %s: save offset %d through the CommitHandler: %w", f.addr, s.offset, err)
		}
		return nil
	}
	for _, k := range s.keys {
		if err := f.c.opts.Store.Save(k, s.offset, applied); err != nil {
			return storeErrorf("consumer: producer %s: save offset %d: %w", f.addr, s.offset, err)
		}
		applied = nil
	}
	return nil
}

// written records the end of s. A failed save's seqNrs go back to pending,
// so that the save at the end of the stream writes them again.
func (f *follower) written(s *save, err error) error {
	if err != nil {
		for _, x := range s.applied {
			k := entityKey{x.EntityType, x.EntityID}
			a := f.cache[k] // holds x.SeqNr or a later one
			if a == nil {
				a = &applied{seqNr: x.SeqNr}
				f.cache[k] = a
			}
			f.apply(k, a, a.seqNr)
		}
		f.dirty = true
		return err
	}
	f.saved(s.keys)
	f.stored = max(f.stored, s.offset)
	if len(f.cache) > maxCachedEntities {
		clear(f.cache) // what is not pending is in the store now
		for _, p := range f.pending {
			f.cache[p.key] = p.a
		}
	}
	return nil
}

// unsavedSaves bounds what is handled while a save is in flight: with
// unsavedSaves×SaveEvery events handled since it began, the handler waits
// for it, so that a crash re-delivers no more than that (plus what the save
// in flight held). A save that covers more events than there are entities
// among them writes fewer seqNrs than events: with a slow disk, large saves
// are what lets the handler keep up (bench workload 2: 10,000 entities).
const unsavedSaves = 100

// saveSoon starts saving what moved in the background, while the handler
// goes on: the save waits for its fsync, the handler does not. With a save
// in flight it notes the request, and the end of that save (saveEnded)
// starts the next one; unless unsavedSaves×SaveEvery events were handled
// since it began: then it waits for it. Only AtLeastOnce saves this way.
func (f *follower) saveSoon() error {
	if f.inflight != nil {
		if f.sinceSave < unsavedSaves*f.c.opts.SaveEvery {
			f.again = true
			return nil
		}
		if err := f.awaitSave(); err != nil {
			return err
		}
	}
	s := f.take()
	if s == nil {
		return nil
	}
	f.inflight = s
	go func() { f.saveDone <- f.write(s) }()
	return nil
}

// awaitSave waits for the save in flight, if any, and handles its result;
// a save noted meanwhile is dropped (the caller saves next).
func (f *follower) awaitSave() error {
	s := f.inflight
	if s == nil {
		return nil
	}
	f.inflight, f.again = nil, false
	return f.written(s, <-f.saveDone)
}

// saveEnded handles the result of the save in flight.
func (f *follower) saveEnded(err error) error {
	s := f.inflight
	f.inflight = nil
	if err := f.written(s, err); err != nil {
		return err
	}
	if f.again || f.sinceSave >= f.c.opts.SaveEvery {
		f.again = false
		return f.saveSoon()
	}
	return nil
}

// saveDue saves when SaveInterval, SaveEvery or Progress says so: in the background
// for AtLeastOnce, at once for ExactlyOnce (whose events commit their own
// offsets; this saves only an offset moved over events it dropped).
func (f *follower) saveDue() error {
	if f.c.opts.Mode() == ExactlyOnce {
		return f.flush()
	}
	return f.saveSoon()
}

// flush waits for the save in flight, then saves the offset and the pending
// applied seqNrs, if they moved.
func (f *follower) flush() error {
	if err := f.awaitSave(); err != nil {
		return err
	}
	s := f.take()
	if s == nil {
		return nil
	}
	return f.written(s, f.write(s))
}

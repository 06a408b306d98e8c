package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// The per-entity index maps (entity, seqNr) to offsets. It is kept in runs:
// the offsets of consecutive seqNrs of one entity, under one Badger key
//
//	i/<type>\x00<id>\x00<first seqNr> -> uvarint count, uvarint first offset,
//	                                   count-1 uvarint offset deltas
//
// An append does not write to Badger per event: the writer adds its events'
// offsets to the pending index in memory, where readers find them, and
// writes the pending runs to Badger once they reach indexFlushEvents events
// or indexFlushEntities entities (a flush), in as many groups of its own as
// Badger's transactions take; the last also sets m/indexed, the last offset
// whose index entries Badger holds. A flush is not logged: Open derives the
// pending index again from the event blocks after m/indexed, so a crash
// loses nothing of it. A crash between a flush's groups leaves runs in
// Badger that the derived ones overwrite (the same keys: the same first
// seqNrs), and a reader reads a run that Badger and the pending index both
// hold once.
//
// Runs hold at most maxRunEvents offsets. Retention deletes a run once it
// deleted the run's last event; a run's older events may be gone before
// (a read skips them).
const maxRunEvents = 4096

// indexFlushEvents and indexFlushEntities bound the pending index: the
// events it holds, and the entities (each a run in memory, a map entry and
// its key), which bound its memory whatever the entities' number (variables
// for tests).
var indexFlushEvents, indexFlushEntities = 1 << 18, 1 << 16

// runPrefix is the prefix of every run key of one entity.
func runPrefix(ek string) []byte {
	k := make([]byte, 0, 2+len(ek)+1+8)
	k = append(k, prefixRun...)
	k = append(k, ek...)
	return append(k, 0)
}

func runKey(ek string, first uint64) []byte {
	return binary.BigEndian.AppendUint64(runPrefix(ek), first)
}

// firstOfRunKey is the first seqNr of a run key.
func firstOfRunKey(k []byte) uint64 { return binary.BigEndian.Uint64(k[len(k)-8:]) }

func encodeRun(offs []uint64) []byte {
	v := make([]byte, 0, 2*binary.MaxVarintLen64+2*len(offs))
	v = binary.AppendUvarint(v, uint64(len(offs)))
	prev := uint64(0)
	for _, off := range offs {
		v = binary.AppendUvarint(v, off-prev)
		prev = off
	}
	return v
}

// decodeRun appends a run's offsets to dst; anything but strictly
// increasing offsets, as many as the run says, is ErrCorrupt.
func decodeRun(v []byte, dst []uint64) ([]uint64, error) {
	n, k := binary.Uvarint(v)
	if k <= 0 || n == 0 || n > maxRunEvents {
		return dst, fmt.Errorf("%w: index run of %d events", ErrCorrupt, n)
	}
	v = v[k:]
	prev := uint64(0)
	for i := uint64(0); i < n; i++ {
		d, k := binary.Uvarint(v)
		if k <= 0 || d == 0 {
			return dst, fmt.Errorf("%w: index run cut or not increasing", ErrCorrupt)
		}
		prev += d
		dst = append(dst, prev)
		v = v[k:]
	}
	if len(v) != 0 {
		return dst, fmt.Errorf("%w: %d bytes after an index run", ErrCorrupt, len(v))
	}
	return dst, nil
}

// itemRun decodes the run Badger holds in item into dst[:0].
func itemRun(item *badger.Item, dst []uint64) (offs []uint64, err error) {
	err = item.Value(func(v []byte) error {
		offs, err = decodeRun(v, dst[:0])
		return err
	})
	return offs, err
}

// run is the offsets of seqNrs first, first+1, … of one entity.
type run struct {
	first uint64
	offs  []uint64
}

func (r *run) last() uint64 { return r.first + uint64(len(r.offs)) - 1 }

// indexEntry is one event's place, as the writer stages it.
type indexEntry struct {
	ek         string
	seqNr, off uint64
}

// pendingIndex holds the index entries Badger does not hold yet: cur, the
// events appended since the last flush, and flushing, those of a flush
// built and not yet applied.
type pendingIndex struct {
	mu       sync.RWMutex
	cur      map[string]*run
	flushing map[string]*run
	// applied counts the flushes applied (flushing dropped).
	applied atomic.Uint64

	// Owned by the writer: the events in cur, and the flushes built.
	events int
	built  uint64
}

func newPendingIndex() *pendingIndex {
	return &pendingIndex{cur: map[string]*run{}}
}

// addEntry appends an event's offset to its entity's run in runs, and
// returns the run's length before.
func addEntry(runs map[string]*run, ek string, seqNr, off uint64) int {
	r := runs[ek]
	if r == nil {
		r = &run{first: seqNr}
		runs[ek] = r
	}
	r.offs = append(r.offs, off)
	return len(r.offs) - 1
}

// add takes a group's entries into cur; each entity's seqNrs follow on.
func (p *pendingIndex) add(entries []indexEntry) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range entries {
		addEntry(p.cur, e.ek, e.seqNr, e.off)
	}
	p.events += len(entries)
}

// entity returns a copy of an entity's pending offsets: flushing's run
// followed by cur's (first 0: none).
func (p *pendingIndex) entity(ek string) run {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var out run
	for _, m := range []map[string]*run{p.flushing, p.cur} {
		if r := m[ek]; r != nil {
			if out.first == 0 {
				out.first = r.first
			}
			out.offs = append(out.offs, r.offs...)
		}
	}
	return out
}

// latest is an entity's last pending seqNr and its offset, if it has one.
func (p *pendingIndex) latest(ek string) (seqNr, off uint64, ok bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	r := p.cur[ek]
	if r == nil {
		r = p.flushing[ek]
	}
	if r == nil {
		return 0, 0, false
	}
	return r.last(), r.offs[len(r.offs)-1], true
}

// full reports whether cur holds enough events or entities to flush. Only
// the writer changes cur, and calls full.
func (p *pendingIndex) full() bool {
	return p.events >= indexFlushEvents || len(p.cur) >= indexFlushEntities
}

// flushIndex moves cur to flushing and returns the groups that write it to
// Badger, each within one Badger transaction, m/indexed in the last, which
// alone is the flush (group.flush); nil when nothing is pending. A flush
// still applying is waited for first.
func (w *writer) flushIndex() []*group {
	p := w.j.index
	if p.events == 0 {
		return nil
	}
	p.mu.RLock()
	busy := p.flushing != nil
	p.mu.RUnlock()
	if busy {
		w.awaitApplied()
	}
	p.mu.Lock()
	p.flushing, p.cur = p.cur, map[string]*run{}
	p.mu.Unlock()
	c := runChanges(p.flushing, w.floor)
	c = append(c, change{key: keyIndexed, value: u64(w.nextOffset - 1), derived: true})
	g := &group{bytes: w.bytes}
	var gs []*group
	for _, ch := range c {
		cost := entryCost(ch.key, ch.value)
		if len(g.changes) > 0 && (g.cost+cost > w.j.groupCost || g.entries+1 > w.j.groupEntries) {
			gs = append(gs, g)
			g = &group{bytes: w.bytes}
		}
		g.changes = append(g.changes, ch)
		g.cost, g.entries = g.cost+cost, g.entries+1
	}
	g.flush = true
	p.events = 0
	p.built++
	return append(gs, g)
}

// sendIndexFlush logs a flush of the pending index, if anything is
// pending.
func (w *writer) sendIndexFlush() {
	for _, g := range w.flushIndex() {
		w.log(g)
	}
}

// runChanges are the Badger writes of pending runs, in keys of at most
// maxRunEvents offsets, leaving out those whose events are all below
// floor (deleted by retention). They are not logged (derived).
func runChanges(runs map[string]*run, floor uint64) changes {
	var c changes
	for ek, r := range runs {
		for i := 0; i < len(r.offs); i += maxRunEvents {
			offs := r.offs[i:min(i+maxRunEvents, len(r.offs))]
			if offs[len(offs)-1] < floor {
				continue
			}
			c = append(c, change{key: runKey(ek, r.first+uint64(i)), value: encodeRun(offs), derived: true})
		}
	}
	return c
}

// flushApplied drops the flush just applied from memory.
func (p *pendingIndex) flushApplied() {
	p.mu.Lock()
	p.flushing = nil
	p.mu.Unlock()
	p.applied.Add(1)
}

// lastRun returns the last run of an entity in txn: its first seqNr and
// its offsets (ok false: none).
func lastRun(txn *badger.Txn, ek string) (first uint64, offs []uint64, ok bool, err error) {
	k, found := lastKey(txn, runPrefix(ek))
	if !found {
		return 0, nil, false, nil
	}
	item, err := txn.Get(k)
	if err != nil {
		return 0, nil, false, err
	}
	offs, err = itemRun(item, nil)
	return firstOfRunKey(k), offs, err == nil, err
}

// runFrom returns the key of the run that holds seqNr in txn, or of the
// first run after it: where a read from seqNr starts.
func runFrom(txn *badger.Txn, ek string, seqNr uint64) []byte {
	prefix := runPrefix(ek)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true, PrefetchValues: false})
	defer it.Close()
	it.Seek(runKey(ek, seqNr))
	if it.ValidForPrefix(prefix) {
		return it.Item().KeyCopy(nil)
	}
	return prefix
}

// loadIndex writes to Badger the index entries of the events after
// m/indexed (a crash left them in memory only) and sets m/indexed to the
// last offset. It runs at Open, before the writer.
func (j *Journal) loadIndex() error {
	var indexed uint64
	err := j.db.View(func(txn *badger.Txn) error {
		v, err := getValue(txn, keyIndexed)
		if err != nil {
			return fmt.Errorf("%w: m/indexed: %v", ErrCorrupt, err)
		}
		indexed = readU64(v)
		return nil
	})
	if err != nil {
		return err
	}
	from, last := max(indexed+1, j.floor.Load()), j.durable.Load()
	if from > last {
		return nil
	}
	runs := map[string]*run{}
	failed := func(err error) error {
		return fmt.Errorf("journal: derive the index after offset %d: %w", indexed, err)
	}
	for from <= last {
		recs, err := j.ReadRecords(from, 4096, nil)
		if err == nil && len(recs) == 0 {
			err = fmt.Errorf("%w: no event at offset %d, below the last (%d)", ErrCorrupt, from, last)
		}
		if err != nil {
			return failed(err)
		}
		for i := range recs {
			e, err := recs[i].Event()
			if err != nil {
				return failed(err)
			}
			addEntry(runs, EntityKey(e.EntityType, e.EntityId), e.SeqNr, recs[i].Offset)
		}
		from = recs[len(recs)-1].Offset + 1
	}
	if err := setAll(j.db, runChanges(runs, j.floor.Load())); err != nil {
		return err
	}
	// Last: a crash before it derives the same runs again, from the same
	// first seqNrs, so they overwrite what was written.
	return j.db.Update(func(txn *badger.Txn) error { return txn.Set(keyIndexed, u64(last)) })
}

// setAll writes the sets c to Badger in as many transactions as it takes
// (not atomically).
func setAll(db *badger.DB, c changes) error {
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	if err := setIn(wb, c); err != nil {
		return err
	}
	return wb.Flush()
}

// setIn adds the sets c to wb.
func setIn(wb *badger.WriteBatch, c changes) error {
	for _, ch := range c {
		if err := wb.Set(ch.key, ch.value); err != nil {
			return err
		}
	}
	return nil
}

// storedVersion is the format version Badger holds (0: a new journal).
func storedVersion(db *badger.DB) (version uint64, err error) {
	err = db.View(func(txn *badger.Txn) error {
		v, err := getValue(txn, keyVersion)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		version = readU64(v)
		return err
	})
	return version, err
}

// upgradeIndex converts the index of formats 1 to 3 (one n/ key per event)
// to runs and sets the format version, after the WAL replay; then removes
// the n/ keys. A crash at any point converts again at the next Open.
func upgradeIndex(db *badger.DB, version uint64, log *slog.Logger) error {
	switch {
	case version == formatVersion:
		// A conversion whose removal of the old keys was cut short.
		if hasAnyIn(db, prefixIndex) {
			return db.DropPrefix(prefixIndex)
		}
		return nil
	case version == 0 || version > formatVersion:
		return nil // new, or refused by load
	}
	if err := db.DropPrefix(prefixRun); err != nil { // a conversion cut short
		return err
	}
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	var indexed uint64
	err := db.View(func(txn *badger.Txn) error {
		if k, ok := lastKey(txn, prefixEvent); ok {
			indexed = lastOffsetOfBlockKey(k)
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixIndex})
		defer it.Close()
		var ek string
		var r *run
		flush := func() error {
			if r == nil {
				return nil
			}
			return setIn(wb, runChanges(map[string]*run{ek: r}, 0))
		}
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			if len(k) < len(prefixIndex)+1+8 {
				return fmt.Errorf("%w: index key %q", ErrCorrupt, k)
			}
			kek, seq := string(k[len(prefixIndex):len(k)-9]), binary.BigEndian.Uint64(k[len(k)-8:])
			var off uint64
			if err := it.Item().Value(func(v []byte) error { off = readU64(v); return nil }); err != nil {
				return err
			}
			if r == nil || kek != ek || seq != r.last()+1 {
				if err := flush(); err != nil {
					return err
				}
				ek, r = kek, &run{first: seq}
			}
			r.offs = append(r.offs, off)
		}
		return flush()
	})
	if err == nil {
		err = wb.Flush()
	}
	if err == nil {
		err = db.Update(func(txn *badger.Txn) error {
			return errors.Join(txn.Set(keyIndexed, u64(indexed)), txn.Set(keyVersion, u64(formatVersion)))
		})
	}
	if err == nil {
		err = db.DropPrefix(prefixIndex)
	}
	if err != nil {
		return fmt.Errorf("journal: convert the index of format %d: %w", version, err)
	}
	log.Info("journal: upgraded the format; older builds cannot open it any more", "from", version, "to", formatVersion)
	return nil
}

func hasAnyIn(db *badger.DB, prefix []byte) (found bool) {
	_ = db.View(func(txn *badger.Txn) error {
		found = hasAny(txn, prefix)
		return nil
	})
	return found
}

package journal

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Read appends up to limit committed events with offsets from `from` on, in
// offset order. It returns fewer (possibly none) when it reaches the last
// committed offset. Reading below the retention floor is an *OutOfRangeError.
func (j *Journal) Read(from uint64, limit int, dst []*streamdv1.Event) ([]*streamdv1.Event, error) {
	recs, err := j.ReadRecords(from, limit, nil)
	if err != nil {
		return dst, err
	}
	for i := range recs {
		e, err := recs[i].Event()
		if err != nil {
			return dst, fmt.Errorf("journal: read from offset %d: %w", from, err)
		}
		dst = append(dst, e)
	}
	return dst, nil
}

// ReadRecords is Read without decoding: records carry their encoding and
// decode on demand.
func (j *Journal) ReadRecords(from uint64, limit int, dst []Record) ([]Record, error) {
	return j.readRecords(from, limit, dst, nil)
}

// readBuffers are what a reader reuses from one read to the next
// (Cursor.ReuseBuffers) instead of two allocations of a block's size per
// block: the block read from its segment, and the encodings of the
// events, which the records of one read share until the next.
type readBuffers struct {
	block  []byte // nil while records share the last block (an older format)
	events []byte
}

// maxKeptBuffer bounds each buffer that readBuffers keeps for the next
// read: a larger one (a block of large events) is left to the collector.
const maxKeptBuffer = 1 << 20

// reset readies the buffers for the next read.
func (b *readBuffers) reset() {
	if cap(b.block) > maxKeptBuffer {
		b.block = nil
	}
	if cap(b.events) > maxKeptBuffer {
		b.events = nil
	}
	b.events = b.events[:0]
}

// readRecords is ReadRecords, reusing bufs unless nil.
func (j *Journal) readRecords(from uint64, limit int, dst []Record, bufs *readBuffers) ([]Record, error) {
	if floor := j.floor.Load(); from < floor {
		return dst, &OutOfRangeError{Requested: from, FirstAvailable: floor}
	}
	last := j.durable.Load()
	n := len(dst)
	// Wait for Badger only if the read reaches events it may not hold yet
	// (a catch-up reads far behind the batches being applied).
	read := j.View
	if limit <= 0 || j.applied.offset.Load() >= min(last, from+uint64(limit)-1) {
		read = j.view
	}
	err := read(func(txn *badger.Txn) error {
		if from > last || limit <= 0 {
			return nil
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixEvent, PrefetchValues: false})
		defer it.Close()
		want := from
		for it.Seek(blockKey(from)); it.Valid() && want <= last && limit > 0; it.Next() {
			item := it.Item()
			blockLast := lastOffsetOfBlockKey(item.Key())
			var (
				block  []byte
				events *[]byte
			)
			if bufs != nil {
				block, events = bufs.block, &bufs.events
			}
			val, err := j.readBlock(item, block)
			if bufs != nil {
				// Records of a block of the current format share
				// bufs.events; of an older one, the block, which is theirs.
				bufs.block = nil
				if len(val) > 0 && val[0] == blockFormat {
					bufs.block = val
				}
			}
			if err == nil {
				err = walkBlockInto(blockLast, val, want, events, func(off uint64, raw []byte) bool {
					if off != want || off > last || limit == 0 {
						return false // a gap means retention deleted it: checked below
					}
					dst = append(dst, Record{Offset: off, Raw: raw})
					want++
					limit--
					return true
				})
			}
			if err != nil {
				return err
			}
			if want <= blockLast {
				break // stopped inside this block
			}
		}
		if want <= last && limit > 0 {
			// Offsets are contiguous: want is gone, by retention or damage.
			return missingEvent(txn, want)
		}
		return nil
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		err = nil // retention deleted it meanwhile: the floor check below
	}
	if err != nil {
		return dst[:n], fmt.Errorf("journal: read from offset %d: %w", from, err)
	}
	if len(dst) == n {
		// Offsets are contiguous: finding nothing at from <= last means
		// retention removed it after the floor check.
		if floor := j.floor.Load(); from < floor {
			return dst, &OutOfRangeError{Requested: from, FirstAvailable: floor}
		}
	}
	return dst, nil
}

// ReadEntity appends up to limit events of one entity from seqNr fromSeqNr on,
// in seqNr order. Events below the retention floor are not returned.
func (j *Journal) ReadEntity(entityType, entityID string, fromSeqNr uint64, limit int, dst []*streamdv1.Event) ([]*streamdv1.Event, error) {
	fromSeqNr = max(fromSeqNr, 1)
	ek := EntityKey(entityType, entityID)
	last := j.durable.Load()
	n := len(dst)
	if err := j.applied.await(j.released.Load()); err != nil {
		return dst, fmt.Errorf("journal: read entity %s/%s: %w", entityType, entityID, err)
	}
	// The pending runs before Badger's snapshot: a run leaves the pending
	// index only once Badger holds it (a run in both is read once).
	pending := j.index.entity(ek)
	err := j.view(func(txn *badger.Txn) error {
		var prev uint64 // the last seqNr seen: seqNrs are contiguous, retention removes a prefix
		// visit reads the events of a run from fromSeqNr on; false: stop.
		visit := func(first uint64, offs []uint64) (bool, error) {
			if prev != 0 && first > prev+1 {
				return false, fmt.Errorf("%w: the index of %s/%s jumps from seqNr %d to %d; a damaged file, or a table Badger could not read", ErrCorrupt, entityType, entityID, prev, first)
			}
			for i, off := range offs {
				seq := first + uint64(i)
				if seq <= prev || seq < fromSeqNr {
					continue
				}
				prev = seq
				if off > last || limit <= 0 {
					return false, nil // committed but not yet durable, or enough
				}
				e, err := j.getEvent(txn, off)
				if errors.Is(err, badger.ErrKeyNotFound) {
					continue // removed by retention
				}
				if err != nil {
					return false, err
				}
				dst = append(dst, e)
				limit--
			}
			prev = max(prev, first+uint64(len(offs))-1)
			return true, nil
		}
		prefix := runPrefix(ek)
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		var offs []uint64
		for it.Seek(runFrom(txn, ek, fromSeqNr)); it.ValidForPrefix(prefix); it.Next() {
			var err error
			if offs, err = itemRun(it.Item(), offs); err != nil {
				return err
			}
			if more, err := visit(firstOfRunKey(it.Item().Key()), offs); !more || err != nil {
				return err
			}
		}
		if pending.first != 0 {
			_, err := visit(pending.first, pending.offs)
			return err
		}
		return nil
	})
	if err != nil {
		return dst[:n], fmt.Errorf("journal: read entity %s/%s: %w", entityType, entityID, err)
	}
	return dst, nil
}

// Load returns one event by (entity, seqNr), or ErrNotFound.
func (j *Journal) Load(entityType, entityID string, seqNr uint64) (*streamdv1.Event, error) {
	evs, err := j.ReadEntity(entityType, entityID, seqNr, 1, nil)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 || evs[0].SeqNr != seqNr {
		return nil, fmt.Errorf("%w: %s/%s seqNr %d", ErrNotFound, entityType, entityID, seqNr)
	}
	return evs[0], nil
}

// OffsetAt returns the first offset committed at or after t, or the next
// offset to be committed if there is none. Timestamps never decrease along
// offsets, so this is a binary search.
func (j *Journal) OffsetAt(t time.Time) (uint64, error) {
	target := t.UnixNano()
	lo, hi := j.floor.Load(), j.durable.Load()+1
	err := j.View(func(txn *badger.Txn) error {
		for lo < hi {
			mid := lo + (hi-lo)/2
			e, err := j.getEvent(txn, mid)
			if errors.Is(err, badger.ErrKeyNotFound) {
				lo = mid + 1 // deleted by retention under us: older than anything kept
				continue
			}
			if err != nil {
				return err
			}
			if e.TimestampUnixNano >= target {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("journal: offset at %v: %w", t, err)
	}
	return lo, nil
}

// View runs fn in a read transaction of the journal's Badger DB that sees
// every append, AppendWith and Update answered before View was called
// (reading DB() directly may not yet). It holds off Close until fn returns.
// A journal that failed to commit what it acknowledged returns ErrFailed.
func (j *Journal) View(fn func(txn *badger.Txn) error) error {
	if err := j.applied.await(j.released.Load()); err != nil {
		return err
	}
	return j.view(fn)
}

// view is View without the wait: fn sees what Badger holds now.
func (j *Journal) view(fn func(txn *badger.Txn) error) error {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		return ErrClosed
	}
	return j.db.View(fn)
}

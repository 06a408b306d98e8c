package journal

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// deletion removes the oldest events: every offset below upTo.
type deletion struct {
	from uint64 // the floor the deletion was planned from
	upTo uint64
	// flushes: the index flushes applied when it was planned; a flush
	// built since may have written runs it did not see.
	flushes uint64
	keys    [][]byte // block keys and index runs
	// entities are those of the events deleted.
	entities []string
	bytes    int64
	count    int
	// lastSeq keeps, per entity whose runs it deletes, the last seqNr of
	// the last one, so that seqNrs continue after the history is gone.
	lastSeq map[string]uint64
}

// retentionChunk bounds one deletion transaction.
const retentionChunk = 10_000

func (j *Journal) retentionLoop() {
	defer close(j.retentionDone)
	if j.opts.RetentionMaxAge == 0 && j.opts.RetentionMaxBytes == 0 {
		<-j.stopBackground
		return
	}
	t := time.NewTicker(j.opts.RetentionInterval)
	defer t.Stop()
	for {
		if _, err := j.EnforceRetention(); err != nil && err != ErrClosed {
			j.opts.Logger.Error("journal retention failed", "err", err)
		}
		select {
		case <-j.stopBackground:
			return
		case <-t.C:
		}
	}
}

// EnforceRetention deletes what the retention options say must go, now, and
// returns how many events it deleted. It runs in the background every
// RetentionInterval; calling it directly is for tests and operators.
func (j *Journal) EnforceRetention() (int, error) {
	j.retentionMu.Lock()
	defer j.retentionMu.Unlock()
	total := 0
	for {
		d, err := j.nextDeletion()
		if err != nil || d == nil {
			return total, err
		}
		p, err := j.submit(context.Background(), writeReq{del: d})
		if err == nil {
			_, err = p.Wait()
		}
		if err != nil {
			return total, err
		}
		total += d.count
		if j.opts.Observer != nil {
			j.opts.Observer.RetentionDeleted(d.count)
		}
	}
}

// nextDeletion picks the next chunk of expired events, oldest first.
func (j *Journal) nextDeletion() (*deletion, error) {
	maxAge, maxBytes := j.opts.RetentionMaxAge, j.opts.RetentionMaxBytes
	cutoff := int64(0)
	if maxAge > 0 {
		cutoff = j.opts.Now().Add(-maxAge).UnixNano()
	}
	floor, last := j.floor.Load(), j.durable.Load()
	excess := int64(0)
	if maxBytes > 0 {
		excess = j.bytes.Load() - maxBytes
	}
	d := &deletion{from: floor, upTo: floor, flushes: j.index.applied.Load(), lastSeq: map[string]uint64{}}
	err := j.View(func(txn *badger.Txn) error {
		entities := map[string]bool{} // of the events deleted
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixEvent, PrefetchValues: false})
		defer it.Close()
		// Retention deletes whole blocks: a block goes once its newest event
		// is older than the cutoff, or while the journal is over its size.
		for it.Seek(blockKey(floor)); it.Valid() && d.count < retentionChunk; it.Next() {
			item := it.Item()
			blockLast := lastOffsetOfBlockKey(item.Key())
			if blockLast > last || d.bytes >= excess && !j.olderThan(txn, blockLast, cutoff) {
				break
			}
			var events []*streamdv1.Event
			val, err := j.readBlock(item, nil)
			if err != nil {
				return err
			}
			var derr error
			werr := walkBlock(blockLast, val, 0, func(off uint64, raw []byte) bool {
				e := new(streamdv1.Event)
				derr = decodeEvent(raw, off, e)
				events = append(events, e)
				return derr == nil
			})
			if err := errors.Join(werr, derr); err != nil {
				return err
			}
			d.keys = append(d.keys, item.KeyCopy(nil))
			for _, e := range events {
				entities[EntityKey(e.EntityType, e.EntityId)] = true
				d.bytes += int64(proto.Size(e))
			}
			d.count += len(events)
			d.upTo = blockLast + 1
		}
		for ek := range entities {
			d.entities = append(d.entities, ek)
			if err := d.deleteRuns(txn, ek); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("journal: retention scan: %w", err)
	}
	if d.count == 0 {
		return nil, nil
	}
	return d, nil
}

// deleteRuns adds the runs of an entity whose events the deletion deletes
// entirely, the oldest first, and keeps its last seqNr when it deletes the
// last run Badger holds.
func (d *deletion) deleteRuns(txn *badger.Txn, ek string) error {
	prefix := runPrefix(ek)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	var offs []uint64
	for it.Rewind(); it.ValidForPrefix(prefix); it.Next() {
		var err error
		if offs, err = itemRun(it.Item(), offs); err != nil {
			return err
		}
		if offs[len(offs)-1] >= d.upTo {
			return nil
		}
		d.keys = append(d.keys, it.Item().KeyCopy(nil))
		d.lastSeq[ek] = firstOfRunKey(it.Item().Key()) + uint64(len(offs)) - 1
	}
	return nil
}

// delete builds a deletion's changes in the writer goroutine, so the byte
// count and the floor stay consistent with concurrent appends; applyLoop
// publishes the new floor in order.
func (w *writer) delete(g *group) {
	d := g.del
	if d.from != w.floor || d.flushes != w.j.index.built {
		g.bytes, d.count, g.del = w.bytes, 0, nil
		return // planned from a floor that has moved since: stale
	}
	for _, k := range d.keys {
		g.changes.del(k)
	}
	// An entity whose pending events are all deleted keeps its last seqNr
	// too: a flush leaves out their runs.
	for _, ek := range d.entities {
		if seq, off, ok := w.j.index.latest(ek); ok && off < d.upTo {
			d.lastSeq[ek] = max(d.lastSeq[ek], seq)
		}
	}
	for ek, seq := range d.lastSeq {
		g.changes.set(seqKey(ek), u64(seq))
	}
	bytes := max(w.bytes-d.bytes, 0)
	g.changes.set(keyFloor, u64(d.upTo))
	g.changes.set(keyBytes, u64(uint64(bytes)))
	for _, c := range g.changes {
		g.cost += entryCost(c.key, c.value)
	}
	g.entries = len(g.changes)
	w.bytes, g.bytes, w.floor = bytes, bytes, d.upTo
}

// olderThan reports whether the event at offset was committed before cutoff.
func (j *Journal) olderThan(txn *badger.Txn, offset uint64, cutoff int64) bool {
	if cutoff == 0 {
		return false
	}
	e, err := j.getEvent(txn, offset)
	return err == nil && e.TimestampUnixNano < cutoff
}

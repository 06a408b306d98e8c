package journal

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// A write goes through three goroutines, each working on later groups while
// the next one works on earlier ones:
//
//   - writeLoop takes every request queued, assigns offsets and seqNrs,
//     builds the group's changes to Badger (writer.commit), writes them to
//     the WAL as one frame and fdatasyncs it (sync durability), and
//     releases the group: appends arriving during an fsync share the next
//     one;
//   - applyLoop commits the logged groups to Badger;
//   - checkpointLoop makes Badger durable and removes WAL segments that
//     hold nothing unapplied, and answers Updates once they are durable.
//
// A logged group is durable: writeLoop publishes its events to readers and
// answers its appends (release) before applyLoop commits it, and a read of
// Badger waits until the groups released before it are applied (View).
// The writer logs each group itself: a goroutine of its own for the WAL
// cost a wake-up per group and idled most of the time (BENCHMARKS.md,
// Alternatives measured).

// writer is the state owned by the writer goroutine.
type writer struct {
	j          *Journal
	nextOffset uint64
	lastTime   int64
	bytes      int64
	floor      uint64            // retention floor as of the last deletion
	lastSeq    map[string]uint64 // last seqNr of recently written entities
	// writable: the slices written here (SetWritable); nil: all.
	writable func(uint32) bool
	// cacheComplete: lastSeq holds every entity the journal ever had (it was
	// empty at open and the cache was never cleared), so a miss means 0.
	cacheComplete bool
	logged        uint64           // groups logged: 1, 2, 3…
	toApply       chan<- *logBatch // groups logged, in order
}

// group is one unit of the writer: appends taken together, one retention
// deletion, one Update or a barrier, on its way to Badger and the answers.
type group struct {
	reqs     []writeReq
	answered []bool
	results  [][]Appended
	errs     [][]error // per event of a request with each set (SubmitEach)
	records  []Record  // the events, for the live ring
	changes  changes   // what the group writes to Badger, in order
	// cost and entries bound the changes in a Badger transaction.
	cost, entries int
	addBytes      int64
	bytes         int64  // stored bytes once this group is applied
	last          uint64 // last offset once this group is applied
	del           *deletion
	update        func(*badger.Txn) error
	flush         bool          // writes the pending index to Badger (index.go)
	barrier       chan struct{} // closed once every earlier group is applied
	newTypes      []string      // entity types this group adds
	err           error         // the group failed; every unanswered request gets it
}

func (g *group) answer(i int, res writeResult) {
	g.answered[i] = true
	g.reqs[i].done <- res
}

func (g *group) failAll(err error) {
	for i := range g.reqs {
		if !g.answered[i] {
			g.answer(i, writeResult{err: err})
		}
	}
}

// logBatch is a group the writer made durable with one fsync.
type logBatch struct {
	seq     uint64 // 1, 2, 3… in the order logged
	g       *group
	err     error // not logged: do not apply it
	syncDur time.Duration
	// checkpoint: once the batch is applied, checkpointLoop makes Badger
	// durable up to at, the end of what was logged with the batch.
	checkpoint bool
	at         walPos
}

// last is the last offset of the batch's events, 0 if it has none.
func (b *logBatch) last() uint64 {
	if b.g.err == nil && len(b.g.records) > 0 {
		return b.g.last
	}
	return 0
}

// checkpoint hands checkpointLoop the end of what was logged with a batch
// applied, and the Updates to answer once Badger is durable.
type checkpoint struct {
	at      walPos
	updates []*group
}

// maxGroupBytes caps the events of one group commit (encoded); Badger's
// own transaction limits (which follow MemTableSize) may cap it lower
// (Journal.groupCost).
const maxGroupBytes = 8 << 20

// maxCachedEntities bounds the seqNr cache; beyond it the cache restarts
// (a variable for a test).
var maxCachedEntities = 1 << 20

func (j *Journal) writeLoop(w *writer) {
	toApply := make(chan *logBatch, 4)
	w.toApply = toApply
	checkpoints := make(chan checkpoint, 16)
	var stages sync.WaitGroup
	stages.Go(func() {
		j.applyLoop(toApply, checkpoints)
		close(checkpoints)
	})
	stages.Go(func() { j.checkpointLoop(checkpoints) })
	defer func() {
		if j.failed.Load() == nil {
			w.sendIndexFlush() // the next Open need not derive the index
		}
		close(toApply)
		stages.Wait()
		close(j.writerDone)
	}()
	var pending *writeReq
	for {
		var first writeReq
		cost, entries := 0, 0 // of the appends in the group
		if pending != nil {
			first, pending = *pending, nil
		} else {
			r, ok := <-j.writes
			if !ok {
				return
			}
			first = r
		}
		if first.writable != nil {
			// Every group before it is logged (log is synchronous): the
			// appends queued before it are durable, the later ones see it.
			w.writable = first.writable.slice
			first.done <- writeResult{}
			continue
		}
		g := &group{reqs: []writeReq{first}}
		if first.del == nil && first.update == nil {
			var size int
			cost, entries, size = first.cost, first.entries, first.size
		drain:
			for {
				select {
				case r, ok := <-j.writes:
					if !ok {
						break drain
					}
					if r.del != nil || r.update != nil || r.writable != nil || cost+r.cost > j.groupCost || entries+r.entries > j.groupEntries ||
						size+r.size > maxGroupBytes {
						pending = &r
						break drain
					}
					g.reqs = append(g.reqs, r)
					cost, entries, size = cost+r.cost, entries+r.entries, size+r.size
				default:
					break drain
				}
			}
		}
		g.answered = make([]bool, len(g.reqs))
		if f := j.failed.Load(); f != nil {
			g.failAll(*f)
			continue
		}
		switch {
		case first.del != nil:
			g.del = first.del
			w.delete(g)
		case first.update != nil:
			g.update = first.update
		default:
			if err := j.checkSpace(); err != nil {
				g.failAll(err)
				continue
			}
			if j.index.full() {
				w.sendIndexFlush()
			}
			g.err = w.commit(g)
		}
		w.log(g)
	}
}

// awaitApplied returns once every group logged is applied to Badger, so
// that reads of Badger see them.
func (w *writer) awaitApplied() {
	done := make(chan struct{})
	w.log(&group{barrier: done})
	<-done
}

// log makes a group built durable in the WAL, one frame and one
// fdatasync, releases it and hands it to applyLoop. Appends
// queued meanwhile wait in Journal.writes and make the next group.
func (w *writer) log(g *group) {
	j := w.j
	w.logged++
	b := &logBatch{seq: w.logged, g: g}
	if f := j.failed.Load(); f != nil {
		b.err = *f
	} else {
		start := time.Now()
		if err := j.log(b); err != nil {
			// What the WAL holds is unknown now: refuse everything.
			err = fmt.Errorf("%w: %v", ErrFailed, err)
			j.failed.Store(&err)
			j.opts.Logger.Error("journal WAL write failed; refusing appends until reopened", "err", err)
			b.err = err
		}
		b.syncDur = time.Since(start)
	}
	j.release(b, b.err)
	w.toApply <- b
}

// log writes the batch's group to the WAL and closes the segment when it
// is full: checkpointLoop then makes Badger durable up to the end of the
// batch once it is applied. A batch with an Update gets that checkpoint
// too (no change logged before an Update may be replayed after it).
func (j *Journal) log(b *logBatch) error {
	if b.g.err == nil && len(b.g.changes) > 0 {
		if err := j.wal.write(b.g); err != nil {
			return err
		}
	}
	if j.wal.full() || j.wal.spareReady() {
		if err := j.wal.rotate(); err != nil {
			return err
		}
		b.checkpoint = true
	}
	b.at = walPos{segment: j.wal.id, byte: uint64(j.wal.size)}
	return nil
}

// applyLoop commits logged batches to Badger, then answers the Updates
// (at the checkpoint with a WAL) and opens the barriers.
func (j *Journal) applyLoop(in <-chan *logBatch, checkpoints chan<- checkpoint) {
	var failed error // once a batch is not applied, no later one may be
	for b := range in {
		g, err := b.g, b.err
		if err == nil {
			err = failed
		}
		if err == nil {
			if err = j.apply(g); err != nil {
				err = fmt.Errorf("%w: apply to Badger: %v", ErrFailed, err)
				failed = err
				j.failed.Store(&err)
				j.opts.Logger.Error("journal commit to Badger failed; refusing appends until reopened", "err", err)
			}
		}
		if failed != nil {
			j.applied.fail(failed) // released batches may be missing from Badger
		} else {
			if g.flush && g.err == nil {
				j.index.flushApplied()
			}
			j.applied.advance(b.seq, b.last()) // a batch not logged holds nothing to read
		}
		var updates []*group
		switch {
		case g.barrier != nil:
			close(g.barrier)
		case g.update == nil:
		case err != nil:
			g.answer(0, writeResult{err: err})
		case g.err != nil || !j.wal.sync:
			g.answer(0, writeResult{err: g.err})
		default: // durable at the checkpoint
			updates = []*group{g}
		}
		if err == nil && (b.checkpoint || len(updates) > 0) {
			checkpoints <- checkpoint{at: b.at, updates: updates}
		}
	}
}

// release publishes a batch's events to readers and answers its appends
// and deletions, or fails them with err. Updates and barriers wait for
// applyLoop.
func (j *Journal) release(b *logBatch, err error) {
	j.released.Store(b.seq) // before durable: see View
	g := b.g
	if g.barrier != nil || g.update != nil {
		return
	}
	if g.err == nil {
		g.err = err
	}
	if g.err != nil {
		g.failAll(fmt.Errorf("journal: commit: %w", g.err))
		return
	}
	j.bytes.Store(g.bytes)
	if g.del != nil {
		j.floor.Store(g.del.upTo)
		g.answer(0, writeResult{})
		return
	}
	if len(g.newTypes) > 0 {
		j.typesMu.Lock()
		for _, t := range g.newTypes {
			j.types[t] = true
		}
		j.typesMu.Unlock()
	}
	if len(g.records) > 0 {
		j.durable.Store(g.last)
		j.ring.push(g.records)
	}
	appends := 0
	for i := range g.reqs {
		if !g.answered[i] {
			res := writeResult{}
			if i < len(g.results) {
				res.appended = g.results[i]
			}
			if i < len(g.errs) {
				res.errs = g.errs[i]
			}
			g.answer(i, res)
			appends++
		}
	}
	if j.opts.Observer != nil && len(g.records) > 0 {
		j.opts.Observer.Committed(appends, len(g.records), g.addBytes, b.syncDur)
	}
}

// progress counts the batches applied to Badger, for readers waiting for
// one.
type progress struct {
	applied atomic.Uint64 // changed under mu
	offset  atomic.Uint64 // every event up to it is applied
	mu      sync.Mutex
	err     error         // Badger misses a released batch: readers get it
	wake    chan struct{} // closed at the next change; nil while no one waits
}

// advance records batch seq applied, and its events up to offset (0: it
// had none).
func (p *progress) advance(seq, offset uint64) {
	p.mu.Lock()
	p.applied.Store(seq)
	if offset > 0 {
		p.offset.Store(offset)
	}
	p.signal()
	p.mu.Unlock()
}

func (p *progress) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
		p.signal()
	}
	p.mu.Unlock()
}

func (p *progress) signal() {
	if p.wake != nil {
		close(p.wake)
		p.wake = nil
	}
}

// await returns once batch seq is applied, or the error that stops it.
func (p *progress) await(seq uint64) error {
	if p.applied.Load() >= seq {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.applied.Load() < seq {
		if p.err != nil {
			return p.err
		}
		if p.wake == nil {
			p.wake = make(chan struct{})
		}
		wake := p.wake
		p.mu.Unlock()
		<-wake
		p.mu.Lock()
	}
	return nil
}

// apply commits a group's changes to Badger in one transaction (a group
// fits Badger's limits: writeLoop bounds it), or runs its Update.
func (j *Journal) apply(g *group) error {
	switch {
	case g.err != nil || g.barrier != nil:
	case g.update != nil:
		g.err = j.runUpdate(g.update)
	case len(g.changes) > 0:
		txn := j.db.NewTransaction(true)
		defer txn.Discard()
		if err := g.changes.stage(txn); err != nil {
			return err
		}
		return txn.Commit()
	}
	return nil
}

// runUpdate runs an Update's function and commits its transaction; a
// failure of either is the Update's alone.
func (j *Journal) runUpdate(fn func(*badger.Txn) error) error {
	txn := j.db.NewTransaction(true)
	defer txn.Discard()
	if err := fn(txn); err != nil {
		return err
	}
	if err := checkUpdateKeys(txn); err != nil {
		return err
	}
	return txn.Commit()
}

// checkpointLoop makes Badger durable once a segment is closed, or an
// Update waits for it (syncBadger), so that a recovery no longer replays
// the segments up to it; then it reclaims the segments retention emptied
// and answers the Updates. Badger holds only references and the index, so
// what a checkpoint writes back is small beside the segment's events.
func (j *Journal) checkpointLoop(in <-chan checkpoint) {
	for c := range in {
		if f := j.failed.Load(); f != nil {
			// What is durable is unknown: the WAL stays for the next Open.
			for _, g := range c.updates {
				g.answer(0, writeResult{err: *f})
			}
			continue
		}
		start := time.Now()
		err := syncBadger(j.db, j.dir)
		if err == nil {
			err = j.wal.state.advance(c.at)
		}
		if err == nil {
			err = j.reclaim()
		}
		if err != nil {
			j.checkpointFailed(err, c.updates)
			continue
		}
		for _, g := range c.updates {
			g.answer(0, writeResult{})
		}
		j.opts.Logger.Debug("journal checkpoint", "segment", c.at.segment, "byte", c.at.byte, "took", time.Since(start))
	}
}

func (j *Journal) checkpointFailed(err error, updates []*group) {
	err = fmt.Errorf("%w: checkpoint: %v", ErrFailed, err)
	j.failed.CompareAndSwap(nil, &err)
	j.opts.Logger.Error("journal checkpoint failed; refusing appends until reopened", "err", err)
	for _, g := range updates {
		g.answer(0, writeResult{err: err})
	}
}

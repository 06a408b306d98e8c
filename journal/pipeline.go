package journal

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// A write goes through four goroutines, each working on later groups while
// the next one works on earlier ones:
//
//   - writeLoop takes every request queued, assigns offsets and seqNrs and
//     builds the group's changes to Badger (writer.commit);
//   - logLoop takes every group built, writes their changes to the WAL as
//     one frame and fdatasyncs it (sync durability): appends arriving during
//     an fsync share the next one;
//   - applyLoop commits the logged groups to Badger;
//   - checkpointLoop makes Badger durable and removes WAL segments that
//     hold nothing unapplied, and answers Updates once they are durable.
//
// A logged batch is durable: logLoop publishes its events to readers and
// answers its appends (release) before applyLoop commits it, and a read of
// Badger waits until the batches released before it are applied (View).
// Without a WAL (async durability) Badger's own log is all there is, and
// applyLoop releases each batch once it is committed.

// writer is the state owned by the writer goroutine.
type writer struct {
	j          *Journal
	nextOffset uint64
	lastTime   int64
	bytes      int64
	floor      uint64            // retention floor as of the last deletion
	lastSeq    map[string]uint64 // last seqNr of recently written entities
	// cacheComplete: lastSeq holds every entity the journal ever had (it was
	// empty at open and the cache was never cleared), so a miss means 0.
	cacheComplete bool
	toLog         chan *group // groups built, in order
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
	// logged: past logLoop, so no longer counted in Journal.queued.
	logged bool
	queued *atomic.Int64
}

func (g *group) answer(i int, res writeResult) {
	g.answered[i] = true
	if !g.logged {
		g.queued.Add(-1)
	}
	g.reqs[i].done <- res
}

func (g *group) unanswered() (n int64) {
	for _, a := range g.answered {
		if !a {
			n++
		}
	}
	return n
}

func (g *group) failAll(err error) {
	for i := range g.reqs {
		if !g.answered[i] {
			g.answer(i, writeResult{err: err})
		}
	}
}

// logBatch is what logLoop made durable with one fsync.
type logBatch struct {
	seq     uint64 // 1, 2, 3… in the order logged
	groups  []*group
	err     error // not logged: apply none of it
	syncDur time.Duration
	// checkpoint: once the batch is applied, checkpointLoop makes Badger
	// durable up to at, the end of what was logged with the batch.
	checkpoint bool
	at         walPos
}

// last is the last offset of the batch's events, 0 if it has none.
func (b *logBatch) last() (last uint64) {
	for _, g := range b.groups {
		if g.err == nil && len(g.records) > 0 {
			last = g.last
		}
	}
	return last
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
	// Unbuffered: while logLoop fsyncs, the writer builds one group and
	// waits, and the next one it builds takes every request queued by then
	// (a buffer let it build a group of ~3 appends per request wave).
	w.toLog = make(chan *group)
	toApply := make(chan *logBatch, 4)
	checkpoints := make(chan checkpoint, 16)
	var stages sync.WaitGroup
	stages.Go(func() {
		j.logLoop(w.toLog, toApply)
		close(toApply)
	})
	stages.Go(func() {
		j.applyLoop(toApply, checkpoints)
		close(checkpoints)
	})
	stages.Go(func() { j.checkpointLoop(checkpoints) })
	defer func() {
		if j.failed.Load() == nil {
			w.sendIndexFlush() // the next Open need not derive the index
		}
		close(w.toLog)
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
		g := &group{reqs: []writeReq{first}, queued: &j.queued}
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
					if r.del != nil || r.update != nil || cost+r.cost > j.groupCost || entries+r.entries > j.groupEntries ||
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
			if j.index.full(j, cost, entries) {
				w.sendIndexFlush()
			}
			g.err = w.commit(g)
		}
		w.toLog <- g
	}
}

// awaitApplied returns once every group sent on is applied to Badger, so
// that reads of Badger see them.
func (w *writer) awaitApplied() {
	done := make(chan struct{})
	w.toLog <- &group{barrier: done, queued: &w.j.queued}
	<-done
}

// logLoop makes the groups built durable in the WAL, one frame and one
// fdatasync for all groups built so far, releases them (with a WAL) and
// hands them to applyLoop.
func (j *Journal) logLoop(in <-chan *group, out chan<- *logBatch) {
	var lastSync time.Duration
	var seq uint64
	for g := range in {
		seq++
		// reqs: the batch's requests still to be answered.
		b, pending, reqs := &logBatch{seq: seq, groups: []*group{g}}, len(g.records), g.unanswered()
		more := func(g *group) {
			b.groups, pending, reqs = append(b.groups, g), pending+len(g.records), reqs+g.unanswered()
		}
	drain:
		for {
			select {
			case g, ok := <-in:
				if !ok {
					break drain
				}
				more(g)
			default:
				break drain
			}
		}
		// Group-commit wait: appends already handed to the writer and not in
		// this batch yet are built within moments; wait for them, at most
		// half an fsync, so that this fsync covers them too. An append not yet
		// made is not waited for: a lone appender, or appends arriving at a
		// steady rate, never wait for the next one.
		if j.wal.sync && pending > 0 && j.queued.Load() > reqs {
			timer := time.NewTimer(lastSync / 2)
		wait:
			for j.queued.Load() > reqs {
				select {
				case g, ok := <-in:
					if !ok {
						break wait
					}
					more(g)
				case <-timer.C:
					break wait
				}
			}
			timer.Stop()
		}
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
		for _, g := range b.groups {
			j.queued.Add(-g.unanswered())
			g.logged = true
		}
		j.release(b, b.err)
		out <- b
		lastSync = b.syncDur
	}
}

// log writes the batch's groups to the WAL and closes the segment when it
// is full: checkpointLoop then makes Badger durable up to the end of the
// batch once it is applied. A batch with an Update gets that checkpoint
// too (no change logged before an Update may be replayed after it).
func (j *Journal) log(b *logBatch) error {
	var logged []*group
	for _, g := range b.groups {
		if g.err == nil && len(g.changes) > 0 {
			logged = append(logged, g)
		}
	}
	if len(logged) > 0 {
		if err := j.wal.write(logged); err != nil {
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
		err := b.err
		if err == nil {
			err = failed
		}
		if err == nil {
			if err = j.apply(b.groups); err != nil {
				err = fmt.Errorf("%w: apply to Badger: %v", ErrFailed, err)
				failed = err
				j.failed.Store(&err)
				j.opts.Logger.Error("journal commit to Badger failed; refusing appends until reopened", "err", err)
			}
		}
		if failed != nil {
			j.applied.fail(failed) // released batches may be missing from Badger
		} else {
			for _, g := range b.groups {
				if g.flush && g.err == nil {
					j.index.flushApplied()
				}
			}
			j.applied.advance(b.seq, b.last()) // a batch not logged holds nothing to read
		}
		var updates []*group
		for _, g := range b.groups {
			switch {
			case g.barrier != nil:
				close(g.barrier)
			case g.update == nil:
			case err != nil:
				g.answer(0, writeResult{err: err})
			case g.err != nil || !j.wal.sync:
				g.answer(0, writeResult{err: g.err})
			default: // durable at the checkpoint
				updates = append(updates, g)
			}
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
	appends, events, bytes := 0, 0, int64(0)
	for _, g := range b.groups {
		if g.barrier != nil || g.update != nil {
			continue
		}
		if g.err == nil {
			g.err = err
		}
		if g.err != nil {
			g.failAll(fmt.Errorf("journal: commit: %w", g.err))
			continue
		}
		j.bytes.Store(g.bytes)
		if g.del != nil {
			j.floor.Store(g.del.upTo)
			g.answer(0, writeResult{})
			continue
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
		events += len(g.records)
		bytes += g.addBytes
	}
	if j.opts.Observer != nil && events > 0 {
		j.opts.Observer.Committed(appends, events, bytes, b.syncDur)
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

// apply commits the groups' changes to Badger in order, in as few
// transactions as Badger's limits allow. A group is never split: with async
// durability Badger's own log is all there is.
func (j *Journal) apply(groups []*group) error {
	var txn *badger.Txn
	cost, entries := 0, 0
	commit := func() error {
		if txn == nil {
			return nil
		}
		err := txn.Commit()
		txn, cost, entries = nil, 0, 0
		return err
	}
	for _, g := range groups {
		switch {
		case g.err != nil || g.barrier != nil:
		case g.update != nil:
			if err := commit(); err != nil {
				return err
			}
			g.err = j.runUpdate(g.update)
		case len(g.changes) > 0:
			if txn != nil && (cost+g.cost > j.groupCost || entries+g.entries > j.groupEntries) {
				if err := commit(); err != nil {
					return err
				}
			}
			if txn == nil {
				txn = j.db.NewTransaction(true)
			}
			if err := g.changes.stage(txn); err != nil {
				txn.Discard()
				return err
			}
			cost, entries = cost+g.cost, entries+g.entries
		}
	}
	return commit()
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

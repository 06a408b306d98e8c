package journal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/streamd/streamd/internal/badgerdir"
	"github.com/streamd/streamd/internal/badgerlog"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Appended is where one appended event landed.
type Appended struct {
	Offset uint64
	SeqNr  uint64
	// Duplicate: a replicated event whose origin seqNr this journal already
	// holds; it was not written (Offset and SeqNr are 0).
	Duplicate bool
}

// Journal is a durable, append-only event log in one Badger directory.
// All methods are safe for concurrent use.
type Journal struct {
	opts Options
	dir  string
	db   *badger.DB
	id   []byte

	// Writes go through one writer goroutine: it owns nextOffset, lastSeq,
	// the stored byte count and every Badger write.
	writes     chan writeReq
	writerDone chan struct{}
	// groupCost and groupEntries bound one group commit (see txnCost).
	groupCost, groupEntries int

	mu       sync.RWMutex // guards closed against new appends
	closed   bool
	inflight sync.WaitGroup
	// queued counts requests handed to the writer and not yet answered.
	queued atomic.Int64

	failed atomic.Pointer[error]

	// Visible to readers: everything in [floor, durable] may be read.
	floor   atomic.Uint64
	durable atomic.Uint64
	bytes   atomic.Int64
	// released counts the batches published to readers and answered;
	// applied, those committed to Badger. With a WAL a batch is released
	// once it is logged, before it is applied: a read of Badger first waits
	// for the batches released before it (View).
	released atomic.Uint64
	applied  progress

	ring *ring
	// wal logs every group before it is applied to Badger (sync
	// durability; nil with async: see wal.go).
	wal *wal

	typesMu sync.RWMutex
	types   map[string]bool // entity types ever appended

	retentionMu   sync.Mutex // one retention run at a time
	stopRetention chan struct{}
	retentionDone chan struct{}
	closeOnce     sync.Once
	closeErr      error
}

// writeReq is an append (events set), a retention deletion (del set) or an
// Update (update set).
type writeReq struct {
	events []*streamdv1.Event
	writes []Write // committed with the events (AppendWith)
	size   int     // encoded events
	// cost and entries bound what the append adds to a Badger transaction.
	cost, entries int
	del           *deletion
	update        func(*badger.Txn) error
	done          chan writeResult
}

type writeResult struct {
	appended []Appended
	err      error
}

// Open opens or creates the journal in dir.
func Open(dir string, opts Options) (*Journal, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("journal: create %s: %w", dir, err)
	}
	if err := checkTables(dir); err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", dir, err)
	}
	if err := badgerdir.RemoveEmptyLogs(dir); err != nil {
		return nil, fmt.Errorf("journal: open %s: %w", dir, err)
	}
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(false). // durable through the WAL and checkpoints (wal.go)
		WithDetectConflicts(false).
		WithNumMemtables(3).
		WithMemTableSize(opts.MemTableSize).
		WithBlockCacheSize(opts.BlockCacheSize).
		WithCompression(opts.Compression.badger()).
		WithNumLevelZeroTables(opts.levelZeroTables()).
		WithNumLevelZeroTablesStall(3 * opts.levelZeroTables()).
		WithNumCompactors(2).
		WithChecksumVerificationMode(options.OnBlockRead).
		WithLogger(badgerlog.Logger{L: opts.Logger})
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("journal: open Badger in %s: %w", dir, err)
	}
	nextSegment, err := recoverWAL(db, dir, opts.Logger)
	var log *wal
	if err == nil && opts.Durability == DurabilitySync {
		log, err = openWAL(dir, nextSegment, opts)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: open %s: %w", dir, err)
	}
	j := &Journal{
		opts: opts,
		dir:  dir,
		db:   db,
		wal:  log,
		// Badger refuses transactions beyond these; keep a margin for
		// the per-group keys and the estimate.
		groupCost:     min(maxGroupBytes, int(db.MaxBatchSize()*4/5)),
		groupEntries:  int(db.MaxBatchCount() * 4 / 5),
		writes:        make(chan writeReq, 1024),
		writerDone:    make(chan struct{}),
		ring:          newRing(opts.RingSize),
		stopRetention: make(chan struct{}),
		retentionDone: make(chan struct{}),
	}
	w, err := j.load()
	if err == nil {
		err = j.checkIdentity(dir)
	}
	if err != nil {
		if log != nil {
			log.close()
		}
		db.Close()
		return nil, err
	}
	j.ring.reset(j.durable.Load() + 1)
	go j.writeLoop(w)
	go j.retentionLoop()
	return j, nil
}

// load reads or creates the metadata and returns the writer's state.
func (j *Journal) load() (*writer, error) {
	w := &writer{j: j, lastSeq: make(map[string]uint64)}
	err := j.db.Update(func(txn *badger.Txn) error {
		id, err := getValue(txn, keyID)
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			if hasAny(txn, prefixEvent) {
				return fmt.Errorf("%w: events present but no journal id", ErrCorrupt)
			}
			id = make([]byte, 16)
			if _, err := rand.Read(id); err != nil {
				return err
			}
			if err := txn.Set(keyID, id); err != nil {
				return err
			}
			if err := txn.Set(keyVersion, u64(formatVersion)); err != nil {
				return err
			}
			if err := txn.Set(keyFloor, u64(1)); err != nil {
				return err
			}
		case err != nil:
			return err
		case len(id) != 16:
			return fmt.Errorf("%w: journal id has %d bytes", ErrCorrupt, len(id))
		}
		j.id = id
		if v, err := getValue(txn, keyVersion); err != nil || readU64(v) != formatVersion {
			return fmt.Errorf("%w: format version %d, this build reads %d", ErrCorrupt, readU64(v), formatVersion)
		}
		floor, err := getValue(txn, keyFloor)
		if err != nil {
			return fmt.Errorf("%w: retention floor: %v", ErrCorrupt, err)
		}
		j.floor.Store(readU64(floor))
		if b, err := getValue(txn, keyBytes); err == nil {
			j.bytes.Store(int64(readU64(b)))
		}
		last := j.floor.Load() - 1
		if k, ok := lastKey(txn, prefixEvent); ok {
			last = max(last, lastOffsetOfBlockKey(k))
		}
		j.types = map[string]bool{}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixType, PrefetchValues: false})
		for it.Rewind(); it.Valid(); it.Next() {
			j.types[string(it.Item().Key()[len(prefixType):])] = true
		}
		it.Close()
		j.durable.Store(last)
		j.applied.offset.Store(last)
		w.nextOffset = last + 1
		if last >= j.floor.Load() {
			e, err := getEvent(txn, last)
			if err != nil {
				return err
			}
			w.lastTime = e.TimestampUnixNano
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("journal: load metadata: %w", err)
	}
	w.bytes, w.floor = j.bytes.Load(), j.floor.Load()
	w.cacheComplete = j.durable.Load() == 0
	// Make the recovered state durable before serving it: what Badger
	// recovered from its memtable logs may not be on disk yet.
	if err := syncBadger(j.db, j.dir); err != nil {
		return nil, fmt.Errorf("journal: sync at open: %w", err)
	}
	return w, nil
}

// ID is the journal's random 128-bit identity, created with the journal.
func (j *Journal) ID() []byte { return bytes.Clone(j.id) }

// Region is Options.Region: the origin of the events written here.
func (j *Journal) Region() string { return j.opts.Region }

// Durability is the journal's durability mode.
func (j *Journal) Durability() Durability { return j.opts.Durability }

// Limits are the journal's limits, defaults filled in.
func (j *Journal) Limits() Limits { return j.opts.Limits }

// DB is the journal's Badger DB, for a store whose records commit with
// appends (AppendWith): offsets.Wrap(j) keeps a replication's position
// beside the events it copied. Such records use keys beginning with the
// byte 0x00 and never touch the journal's own. Read it with View, which
// waits for the writes already answered (a direct read may miss the latest
// ones); write it only with AppendWith or Update, which the journal makes
// durable (a write made directly is not logged, and a recovery may undo
// it). Do not use it after Close.
func (j *Journal) DB() *badger.DB { return j.db }

// Info describes the journal now.
type Info struct {
	JournalID   []byte
	FirstOffset uint64 // the retention floor: first offset that may be read
	LastOffset  uint64 // last committed offset; FirstOffset-1 when empty
	Events      uint64
	Bytes       int64
}

// Info returns the journal's bounds and size.
func (j *Journal) Info() Info {
	first, last := j.floor.Load(), j.durable.Load()
	return Info{
		JournalID:   j.ID(),
		FirstOffset: first,
		LastOffset:  last,
		Events:      last + 1 - first,
		Bytes:       j.bytes.Load(),
	}
}

// LastOffset is the last committed (and, with sync durability, fsync'd)
// offset, 0 for a journal that never had an event.
func (j *Journal) LastOffset() uint64 { return j.durable.Load() }

// Append validates and durably appends events, and returns their offsets and
// seqNrs in order. The journal takes ownership of the events: it sets their
// offset, seq_nr, slice and timestamp and hands them to live readers, so the
// caller must not modify them afterwards.
//
// An event with seq_nr != 0 is an expectation: the append fails with a
// *SeqNrConflictError, writing nothing, unless it is the entity's next seqNr.
// Concurrent appends are committed together: one fdatasync of the WAL, one
// Badger transaction. ctx bounds only the wait to be queued: once queued,
// Append waits for the commit, so its result is always the truth.
func (j *Journal) Append(ctx context.Context, events ...*streamdv1.Event) ([]Appended, error) {
	return j.AppendWith(ctx, nil, events...)
}

// Write is a record that AppendWith commits in the same Badger transaction
// as its events. Its key must begin with the byte 0x00: the journal's own
// keys never do.
type Write struct {
	Key, Value []byte
	// Delete removes Key instead of setting it (Value must be empty).
	Delete bool
}

// AppendWith appends events as Append does and commits writes in the same
// transaction: all of them or nothing, made durable by the same fsync. A
// replication keeps its position in the source stream this way
// (offsets.Store.PositionWrites over DB()), so that copied events and the
// position that covers them are never stored one without the other. The
// writes commit also when every event is a Duplicate, and with no events
// at all. An append refused (a seqNr conflict, an origin gap) writes none
// of them.
func (j *Journal) AppendWith(ctx context.Context, writes []Write, events ...*streamdv1.Event) ([]Appended, error) {
	p, err := j.Submit(ctx, writes, events...)
	if err != nil {
		return nil, err
	}
	return p.Wait()
}

// Pending is an append handed to the journal's writer by Submit.
type Pending struct{ done chan writeResult }

// Wait blocks until the append is committed (and, with sync durability,
// fsync'd) or refused, and returns what AppendWith would have. Call it once.
func (p *Pending) Wait() ([]Appended, error) {
	res := <-p.done
	return res.appended, res.err
}

// Submit checks and queues an append as AppendWith does, without waiting
// for its commit: a caller with many appends in flight (a publish stream)
// keeps them in order without a goroutine each. Appends are committed in
// the order Submit queued them. ctx bounds only the wait to be queued.
func (j *Journal) Submit(ctx context.Context, writes []Write, events ...*streamdv1.Event) (*Pending, error) {
	var size int
	if len(events) > 0 || len(writes) == 0 {
		var err error
		if size, err = j.opts.Limits.validate(events); err != nil {
			return nil, err
		}
	}
	req := writeReq{events: events, writes: writes, size: size}
	req.cost, req.entries = txnCost(events, size)
	for i, w := range writes {
		switch {
		case len(w.Key) == 0 || w.Key[0] != 0:
			return nil, invalid("write %d: key %q does not begin with the byte 0x00 (the journal's own keys are not writable)", i, w.Key)
		case len(w.Key) > maxWriteKey:
			return nil, invalid("write %d: key of %d bytes exceeds %d", i, len(w.Key), maxWriteKey)
		case w.Delete && len(w.Value) > 0:
			return nil, invalid("write %d: a delete with a value", i)
		}
		req.cost += entryCost(w.Key, w.Value)
		req.entries++
	}
	if req.cost > j.groupCost || req.entries > j.groupEntries {
		return nil, invalid("%d events (about %d bytes and %d entries in Badger) exceed one transaction with MemTableSize %d: split the append or raise MemTableSize",
			len(events), req.cost, req.entries, j.opts.MemTableSize)
	}
	return j.submit(ctx, req)
}

// txnCost is an upper bound of what an append of events (size bytes
// encoded) adds to a Badger transaction: its blocks, and an index entry
// and perhaps an origin entry per event, each key with Badger's per-entry
// overhead.
func txnCost(events []*streamdv1.Event, size int) (cost, entries int) {
	cost = size
	for _, e := range events {
		cost += 2*(len(e.EntityType)+len(e.EntityId)) + len(e.Origin) + 128
	}
	return cost, 2*len(events) + size/maxBlockBytes + 4
}

// entryCost bounds what one key and value add to a Badger transaction,
// with Badger's per-entry overhead.
func entryCost(key, value []byte) int { return len(key) + len(value) + 64 }

// maxWriteKey bounds the key of a Write (Badger's limit is 65000 bytes).
const maxWriteKey = 65000

// submit queues req for the writer. Close waits for submits under way;
// the writer answers every request queued before it stops.
func (j *Journal) submit(ctx context.Context, req writeReq) (*Pending, error) {
	j.mu.RLock()
	if j.closed {
		j.mu.RUnlock()
		return nil, ErrClosed
	}
	j.inflight.Add(1)
	j.mu.RUnlock()
	defer j.inflight.Done()
	if f := j.failed.Load(); f != nil {
		return nil, *f
	}
	req.done = make(chan writeResult, 1)
	j.queued.Add(1)
	select {
	case j.writes <- req:
	case <-ctx.Done():
		j.queued.Add(-1)
		return nil, ctx.Err()
	}
	return &Pending{done: req.done}, nil
}

// Close stops accepting appends, waits for queued appends to commit, and
// closes Badger. It is idempotent.
func (j *Journal) Close() error {
	j.closeOnce.Do(func() {
		j.mu.Lock()
		j.closed = true
		j.mu.Unlock()
		close(j.stopRetention)
		<-j.retentionDone
		j.inflight.Wait()
		close(j.writes)
		<-j.writerDone
		j.ring.close()
		if j.wal != nil {
			j.closeErr = j.closeWAL()
		}
		j.closeErr = errors.Join(j.closeErr, j.db.Close())
		if j.closeErr == nil && j.failed.Load() == nil {
			// Only a clean close vouches for the last offset.
			j.closeErr = writeIdentity(j.dir, identity{id: j.id, last: j.durable.Load()})
		}
	})
	return j.closeErr
}

// closeWAL ends the WAL at Close: every group is applied, so once Badger
// is durable no segment is needed. A failed journal keeps them, to be
// replayed by the next Open.
func (j *Journal) closeWAL() error {
	defer j.wal.close()
	if j.failed.Load() != nil {
		return nil
	}
	if err := syncBadger(j.db, j.dir); err != nil {
		return fmt.Errorf("journal: close: %w", err)
	}
	return removeSegments(j.wal.dir, j.wal.id)
}

// Update runs fn in a write transaction of the journal's Badger DB and
// commits it in order with the appends, for records kept beside the events
// (an offsets.Store over the journal). With sync durability it returns once
// the transaction is durable, and a recovery never replays an older append's
// writes over it. fn's keys must begin with the byte 0x00 (the journal's
// own keys never do); fn runs in the journal's commit goroutine and must
// not call the journal. An error from fn discards the transaction and is
// returned unchanged.
func (j *Journal) Update(fn func(txn *badger.Txn) error) error {
	p, err := j.submit(context.Background(), writeReq{update: fn})
	if err != nil {
		return err
	}
	_, err = p.Wait()
	return err
}

func (w *writer) knownType(t string) bool {
	w.j.typesMu.RLock()
	defer w.j.typesMu.RUnlock()
	return w.j.types[t]
}

// EntityTypes returns the entity types the journal holds, sorted.
func (j *Journal) EntityTypes() []string {
	j.typesMu.RLock()
	defer j.typesMu.RUnlock()
	types := make([]string, 0, len(j.types))
	for t := range j.types {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}

// undoSeq restores the seqNr (and origin seqNr) assignment of one event of
// an append that conflicted.
type undoSeq struct {
	ek        string
	prev      uint64
	hadPrev   bool
	event     *streamdv1.Event
	origSeq   uint64
	duplicate bool // a replicated event already applied: not written

	ok          string // origin cache key; "" when the event has no origin
	originPrev  uint64
	originHad   bool
	origOrigSeq uint64
}

// commit assigns offsets and seqNrs and builds a group's changes to Badger,
// taking them as committed: a group that fails later fails the journal. An
// append whose seqNr expectation fails, or whose replicated events leave a
// gap in their origin's sequence, is answered at once, alone; the others
// commit together.
func (w *writer) commit(g *group) error {
	j := w.j
	ts := max(j.opts.Now().UnixNano(), w.lastTime)

	// Last seqNr per entity, and last origin seqNr per (origin, entity)
	// under originKey, after this group.
	groupSeq := make(map[string]uint64)
	g.results = make([][]Appended, len(g.reqs))
	g.bytes = w.bytes // unchanged unless events commit
	offset := w.nextOffset
	size := 0
	for _, r := range g.reqs {
		size += r.size
		g.cost, g.entries = g.cost+r.cost, g.entries+r.entries
	}
	blocks := blockWriter{start: -1, buf: make([]byte, 0, size+size/16+blockHeader)}
	// Index keys and values come from one slab per group; the changes
	// refer to them until they are applied.
	slab := make([]byte, 0, size/2+64)
	var undo []undoSeq
	// Last seqNrs of entities not in the cache are read outside the write
	// transaction, whose iterators would sort every pending write.
	var rtxn *badger.Txn
	defer func() {
		if rtxn != nil {
			rtxn.Discard()
		}
	}()
	last := func(key string, read func(*badger.Txn, string) (uint64, error)) (uint64, bool, error) {
		if v, ok := groupSeq[key]; ok {
			return v, true, nil
		}
		if rtxn == nil && !w.cacheComplete {
			rtxn = j.db.NewTransaction(false)
		}
		v, err := read(rtxn, key)
		return v, false, err
	}
	for i := range g.reqs {
		events := g.reqs[i].events
		undo = undo[:0]
		var conflict error
		for _, e := range events {
			if e.Origin == "" {
				e.Origin = j.opts.Region
			}
			ek := EntityKey(e.EntityType, e.EntityId)
			u := undoSeq{ek: ek, event: e, origSeq: e.SeqNr, origOrigSeq: e.OriginSeqNr}
			if e.Origin != "" {
				u.ok = originKey(e.Origin, ek)
				prev, had, err := last(u.ok, w.lastOriginSeqNr)
				if err != nil {
					return err
				}
				u.originPrev, u.originHad = prev, had
				switch {
				case e.OriginSeqNr == 0: // written here: the origin's next
					e.OriginSeqNr = prev + 1
				case e.OriginSeqNr <= prev:
					u.duplicate = true
				case e.OriginSeqNr > prev+1:
					conflict = &OriginGapError{Origin: e.Origin, EntityType: e.EntityType, EntityID: e.EntityId, Next: prev + 1, Got: e.OriginSeqNr}
				}
				if conflict != nil {
					break
				}
				if !u.duplicate {
					groupSeq[u.ok] = e.OriginSeqNr
				}
			}
			if !u.duplicate {
				prev, had, err := last(ek, w.lastSeqNr)
				if err != nil {
					return err
				}
				if e.SeqNr != 0 && e.SeqNr != prev+1 {
					conflict = &SeqNrConflictError{EntityType: e.EntityType, EntityID: e.EntityId, Expected: e.SeqNr, Next: prev + 1}
				}
				u.prev, u.hadPrev = prev, had
				groupSeq[ek] = prev + 1
				e.SeqNr = prev + 1
			}
			undo = append(undo, u)
			if conflict != nil {
				break
			}
		}
		if conflict != nil {
			for k := len(undo) - 1; k >= 0; k-- {
				u := undo[k]
				if !u.duplicate {
					restore(groupSeq, u.ek, u.prev, u.hadPrev)
				}
				if u.ok != "" {
					restore(groupSeq, u.ok, u.originPrev, u.originHad)
				}
				u.event.SeqNr, u.event.OriginSeqNr = u.origSeq, u.origOrigSeq
			}
			g.answer(i, writeResult{err: conflict})
			continue
		}
		for _, wr := range g.reqs[i].writes {
			if wr.Delete {
				g.changes.del(wr.Key)
			} else {
				g.changes.set(wr.Key, wr.Value)
			}
		}
		app := make([]Appended, len(events))
		for k, e := range events {
			if undo[k].duplicate {
				app[k] = Appended{Duplicate: true}
				continue
			}
			if undo[k].ok != "" {
				key := len(slab)
				slab = append(slab, prefixOrigin...)
				slab = append(slab, undo[k].ok[1:]...)
				val := len(slab)
				slab = binary.BigEndian.AppendUint64(slab, e.OriginSeqNr)
				g.changes.set(slab[key:val:val], slab[val:len(slab):len(slab)])
				if e.OriginTimestampUnixNano == 0 {
					e.OriginTimestampUnixNano = ts
				}
			}
			if !w.knownType(e.EntityType) && !slices.Contains(g.newTypes, e.EntityType) {
				g.newTypes = append(g.newTypes, e.EntityType)
				g.changes.set(append(bytes.Clone(prefixType), e.EntityType...), nil)
			}
			e.Offset, e.Slice, e.TimestampUnixNano = offset, SliceOf(e.EntityId), ts
			raw, err := blocks.add(&g.changes, e)
			if err != nil {
				return err
			}
			key := len(slab)
			slab = appendIndexKey(slab, undo[k].ek, e.SeqNr)
			val := len(slab)
			slab = binary.BigEndian.AppendUint64(slab, offset)
			g.changes.set(slab[key:val:val], slab[val:len(slab):len(slab)])
			g.addBytes += int64(len(raw))
			app[k] = Appended{Offset: offset, SeqNr: e.SeqNr}
			g.records = append(g.records, Record{Offset: offset, Raw: raw, event: e})
			offset++
		}
		g.results[i] = app
	}
	if len(g.changes) == 0 {
		return nil // every append conflicted or was a duplicate
	}
	blocks.flush(&g.changes)
	g.bytes = w.bytes + g.addBytes
	g.changes.set(keyBytes, u64(uint64(g.bytes)))
	if len(w.lastSeq)+len(groupSeq) > maxCachedEntities {
		// Entities out of the cache are read from Badger: it must hold
		// every group built so far.
		w.awaitApplied()
		clear(w.lastSeq)
		w.cacheComplete = false
	}
	for ek, seq := range groupSeq {
		w.lastSeq[ek] = seq
	}
	g.last = offset - 1
	w.nextOffset, w.lastTime, w.bytes = offset, ts, g.bytes
	return nil
}

// restore sets m[key] back to prev, or deletes it when it had no entry.
func restore(m map[string]uint64, key string, prev uint64, had bool) {
	if had {
		m[key] = prev
	} else {
		delete(m, key)
	}
}

// lastOriginSeqNr is the last origin seqNr committed for an originKey (0 if
// none).
func (w *writer) lastOriginSeqNr(txn *badger.Txn, ok string) (uint64, error) {
	if s, found := w.lastSeq[ok]; found || w.cacheComplete {
		return s, nil
	}
	v, err := getValue(txn, append(bytes.Clone(prefixOrigin), ok[1:]...))
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return 0, err
	}
	return readU64(v), nil
}

// lastSeqNr is the last committed seqNr of an entity (0 if none): its highest
// index entry, or what retention kept when it deleted the entity's history.
func (w *writer) lastSeqNr(txn *badger.Txn, ek string) (uint64, error) {
	if s, ok := w.lastSeq[ek]; ok || w.cacheComplete {
		return s, nil
	}
	var last uint64
	if k, ok := lastKey(txn, indexPrefix(ek)); ok {
		last = binary.BigEndian.Uint64(k[len(k)-8:])
	}
	v, err := getValue(txn, seqKey(ek))
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return 0, err
	}
	return max(last, readU64(v)), nil
}

func getValue(txn *badger.Txn, key []byte) ([]byte, error) {
	item, err := txn.Get(key)
	if err != nil {
		return nil, err
	}
	return item.ValueCopy(nil)
}

func hasAny(txn *badger.Txn, prefix []byte) bool {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
	defer it.Close()
	it.Rewind()
	return it.Valid()
}

// lastKey returns the greatest key with the prefix.
func lastKey(txn *badger.Txn, prefix []byte) ([]byte, bool) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true})
	defer it.Close()
	seek := append(bytes.Clone(prefix), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	it.Seek(seek)
	if !it.ValidForPrefix(prefix) {
		return nil, false
	}
	return it.Item().KeyCopy(nil), true
}

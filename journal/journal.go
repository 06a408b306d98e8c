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
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

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

	ring *ring
	wal  *walSync // fsyncs Badger's memtable WALs (see walSync)

	typesMu sync.RWMutex
	types   map[string]bool // entity types ever appended

	retentionMu   sync.Mutex // one retention run at a time
	stopRetention chan struct{}
	retentionDone chan struct{}
	closeOnce     sync.Once
	closeErr      error
}

// writeReq is an append (events set) or a retention deletion (del set).
type writeReq struct {
	events []*streamdv1.Event
	writes []Write // committed with the events (AppendWith)
	size   int     // encoded events
	// cost and entries bound what the append adds to a Badger transaction.
	cost, entries int
	del           *deletion
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
	bo := badger.DefaultOptions(dir).
		WithSyncWrites(false). // we fsync once per group (walSync)
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
	wal, err := openWALSync(dir)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: open %s: %w", dir, err)
	}
	j := &Journal{
		opts: opts,
		db:   db,
		wal:  wal,
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
		wal.close()
		db.Close()
		return nil, err
	}
	j.dir = dir
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
	// Badger's commit+Sync may leave a committed but unsynced write after a
	// crash; make the recovered state durable before serving it.
	if err := j.db.Sync(); err != nil {
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

// DB is the journal's Badger DB, for a store whose records commit with
// appends (AppendWith): offsets.Wrap(j.DB()) keeps a replication's position
// beside the events it copied. Such records use keys beginning with the
// byte 0x00 and never touch the journal's own. Do not use it after Close.
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
// Concurrent appends are committed together in one Badger transaction with
// one fsync. ctx bounds only the wait to be queued: once queued, Append waits
// for the commit, so its result is always the truth.
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
		req.cost += len(w.Key) + len(w.Value) + 64
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
		j.wal.close()
		j.ring.close()
		j.closeErr = j.db.Close()
		if j.closeErr == nil && j.failed.Load() == nil {
			// Only a clean close vouches for the last offset.
			j.closeErr = writeIdentity(j.dir, identity{id: j.id, last: j.durable.Load()})
		}
	})
	return j.closeErr
}

// writer is the state owned by the writer goroutine.
type writer struct {
	j          *Journal
	nextOffset uint64
	lastTime   int64
	bytes      int64
	floor      uint64            // retention floor as of the last committed deletion
	lastSeq    map[string]uint64 // last seqNr of recently written entities
	// cacheComplete: lastSeq holds every entity the journal ever had (it was
	// empty at open and the cache was never cleared), so a miss means 0.
	cacheComplete bool
	toSync        chan *group // committed groups, in commit order
}

// group is one Badger transaction: appends committed together (or one
// retention deletion), on its way to the fsync and the acknowledgements.
type group struct {
	reqs     []writeReq
	answered []bool
	results  [][]Appended
	records  []Record // committed events, for the live ring
	addBytes int64
	bytes    int64  // stored bytes once this group is applied
	last     uint64 // last offset once this group is applied
	del      *deletion
	newTypes []string // entity types this group adds
	writes   int      // AppendWith records staged
	err      error    // the commit failed; every unanswered request gets it
	queued   *atomic.Int64
}

func (g *group) answer(i int, res writeResult) {
	g.answered[i] = true
	g.queued.Add(-1)
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

// maxGroupBytes caps one group commit; Badger's own transaction limits
// (which follow MemTableSize) may cap it lower (Journal.groupCost).
const maxGroupBytes = 8 << 20

// maxCachedEntities bounds the seqNr cache; beyond it the cache restarts.
const maxCachedEntities = 1 << 20

// writeLoop commits groups; syncLoop fsyncs and acknowledges them. The two
// overlap, so the next group is built and committed while the previous one is
// being fsync'd, and appends arriving meanwhile form ever larger groups.
func (j *Journal) writeLoop(w *writer) {
	w.toSync = make(chan *group, 64)
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		j.syncLoop(w.toSync)
	}()
	defer func() {
		close(w.toSync)
		<-syncDone
		close(j.writerDone)
	}()
	var pending *writeReq
	for {
		var first writeReq
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
		if first.del == nil {
			cost, entries := first.cost, first.entries
		drain:
			for {
				select {
				case r, ok := <-j.writes:
					if !ok {
						break drain
					}
					if r.del != nil || cost+r.cost > j.groupCost || entries+r.entries > j.groupEntries {
						pending = &r
						break drain
					}
					g.reqs = append(g.reqs, r)
					cost, entries = cost+r.cost, entries+r.entries
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
		if first.del != nil {
			g.del = first.del
			g.err = w.delete(g)
		} else if err := j.checkSpace(); err != nil {
			g.failAll(err)
			continue
		} else {
			g.err = w.commit(g)
		}
		// With sync durability, note the memtables Badger started for the
		// fsync (async: nothing to follow for; retired WALs kept open would
		// keep their disk space).
		if j.opts.Durability == DurabilitySync {
			if err := j.wal.follow(); err != nil {
				// A memtable retired unnoticed would go unsynced: what is
				// durable is unknown from here on.
				err = fmt.Errorf("%w: %v", ErrFailed, err)
				j.failed.Store(&err)
				j.opts.Logger.Error("journal cannot follow Badger's memtable WALs; refusing appends until reopened", "err", err)
			}
		}
		w.toSync <- g
	}
}

// syncLoop makes committed groups durable with one fsync for all groups
// committed so far, then publishes them to readers and answers the appends.
func (j *Journal) syncLoop(toSync <-chan *group) {
	var lastSync time.Duration
	for g := range toSync {
		// reqs: the batch's requests still to be answered.
		batch, pending, reqs := []*group{g}, len(g.records), g.unanswered()
		more := func(g *group) {
			batch, pending, reqs = append(batch, g), pending+len(g.records), reqs+g.unanswered()
		}
	drain:
		for {
			select {
			case g, ok := <-toSync:
				if !ok {
					break drain
				}
				more(g)
			default:
				break drain
			}
		}
		// Group-commit wait: appends already handed to the writer and not in
		// this batch yet are committed within moments; wait for them, at most
		// half an fsync, so that this fsync covers them too. An append not yet
		// made is not waited for: a lone appender, or appends arriving at a
		// steady rate, never wait for the next one.
		if j.opts.Durability == DurabilitySync && pending > 0 && j.queued.Load() > reqs {
			timer := time.NewTimer(lastSync / 2)
		wait:
			for j.queued.Load() > reqs {
				select {
				case g, ok := <-toSync:
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
		var syncDur time.Duration
		if j.opts.Durability == DurabilitySync && j.failed.Load() == nil {
			start := time.Now()
			if err := j.wal.sync(j.db); err != nil {
				// What is durable is unknown now: refuse everything from here on.
				err = fmt.Errorf("%w: %v", ErrFailed, err)
				j.failed.Store(&err)
				j.opts.Logger.Error("journal fsync failed; refusing appends until reopened", "err", err)
			}
			syncDur = time.Since(start)
		}
		appends, events, bytes := 0, 0, int64(0)
		for _, g := range batch {
			if g.err == nil {
				if f := j.failed.Load(); f != nil {
					g.err = *f
				}
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
					var res []Appended
					if i < len(g.results) {
						res = g.results[i]
					}
					g.answer(i, writeResult{appended: res})
					appends++
				}
			}
			events += len(g.records)
			bytes += g.addBytes
		}
		if j.opts.Observer != nil && events > 0 {
			j.opts.Observer.Committed(appends, events, bytes, syncDur)
		}
		lastSync = syncDur
	}
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

// commit assigns offsets and seqNrs and writes a group in one transaction. An
// append whose seqNr expectation fails, or whose replicated events leave a gap
// in their origin's sequence, is answered at once, alone; the others commit
// together. It returns the commit error, if any.
func (w *writer) commit(g *group) error {
	j := w.j
	ts := max(j.opts.Now().UnixNano(), w.lastTime)
	txn := j.db.NewTransaction(true)
	defer txn.Discard()

	// Last seqNr per entity, and last origin seqNr per (origin, entity)
	// under originKey, after this group.
	groupSeq := make(map[string]uint64)
	g.results = make([][]Appended, len(g.reqs))
	g.bytes = w.bytes // unchanged unless events commit
	offset := w.nextOffset
	size := 0
	for _, r := range g.reqs {
		size += r.size
	}
	blocks := blockWriter{start: -1, buf: make([]byte, 0, size+size/16+blockHeader)}
	// Index keys and values come from one slab per group; Badger holds
	// references to them until the commit.
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
			var err error
			if wr.Delete {
				err = txn.Delete(wr.Key)
			} else {
				err = txn.Set(wr.Key, wr.Value)
			}
			if err != nil {
				return err
			}
			g.writes++
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
				if err := txn.Set(slab[key:val:val], slab[val:len(slab):len(slab)]); err != nil {
					return err
				}
				if e.OriginTimestampUnixNano == 0 {
					e.OriginTimestampUnixNano = ts
				}
			}
			if !w.knownType(e.EntityType) && !slices.Contains(g.newTypes, e.EntityType) {
				g.newTypes = append(g.newTypes, e.EntityType)
				if err := txn.Set(append(bytes.Clone(prefixType), e.EntityType...), nil); err != nil {
					return err
				}
			}
			e.Offset, e.Slice, e.TimestampUnixNano = offset, SliceOf(e.EntityId), ts
			raw, err := blocks.add(txn, e)
			if err != nil {
				return err
			}
			key := len(slab)
			slab = appendIndexKey(slab, undo[k].ek, e.SeqNr)
			val := len(slab)
			slab = binary.BigEndian.AppendUint64(slab, offset)
			if err := txn.Set(slab[key:val:val], slab[val:len(slab):len(slab)]); err != nil {
				return err
			}
			g.addBytes += int64(len(raw))
			app[k] = Appended{Offset: offset, SeqNr: e.SeqNr}
			g.records = append(g.records, Record{Offset: offset, Raw: raw, event: e})
			offset++
		}
		g.results[i] = app
	}
	if len(g.records) == 0 && g.writes == 0 {
		return nil // every append conflicted or was a duplicate
	}
	if err := blocks.flush(txn); err != nil {
		return err
	}
	g.bytes = w.bytes + g.addBytes
	if err := txn.Set(keyBytes, u64(uint64(g.bytes))); err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	if len(w.lastSeq)+len(groupSeq) > maxCachedEntities {
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

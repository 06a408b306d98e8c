package journal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	// wal logs every group before it is applied to Badger, and keeps the
	// event blocks (wal.go, segstore.go).
	wal      *wal
	segments *segmentFiles // reads the blocks kept in the WAL segments
	// index holds the index entries not yet written to Badger (index.go).
	index *pendingIndex

	typesMu sync.RWMutex
	types   map[string]bool // entity types ever appended

	retentionMu    sync.Mutex // one retention run at a time
	stopBackground chan struct{}
	retentionDone  chan struct{}
	pageoutDone    chan struct{}
	closeOnce      sync.Once
	closeErr       error
}

// writeReq is an append (events set), a retention deletion (del set), an
// Update (update set) or a change of the slices written (writable set).
type writeReq struct {
	events []*streamdv1.Event
	writes []Write // committed with the events (AppendWith)
	size   int     // encoded events
	// cost and entries bound what the append adds to a Badger transaction.
	cost, entries int
	del           *deletion
	update        func(*badger.Txn) error
	writable      *writable
	done          chan writeResult
	// each: every event is an append of its own (SubmitEach), refused or
	// committed alone.
	each bool
}

type writeResult struct {
	appended []Appended
	err      error   // the whole request's
	errs     []error // per event of a request with each set; nil if none failed
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
		WithNumMemtables(2).
		WithMemTableSize(opts.MemTableSize).
		WithBlockCacheSize(opts.BlockCacheSize).
		WithCompression(opts.Compression.badger()).
		WithNumCompactors(2).
		WithChecksumVerificationMode(options.OnBlockRead).
		WithLogger(badgerlog.Logger{L: opts.Logger})
	// Tables of BaseTableSize (2 MiB) at every level instead of twice as
	// large at each level below the base: a compaction holds the tables it
	// builds in memory, several at once, so doubling sizes would make its
	// memory grow with the depth of the index's LSM, that is with the
	// journal (BENCHMARKS.md, Memory).
	bo.TableSizeMultiplier = 1
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("journal: open Badger in %s: %w", dir, err)
	}
	version, err := storedVersion(db)
	if err == nil && version > formatVersion {
		err = unreadableVersion(version)
	}
	var walState *walState
	if err == nil {
		walState, err = recoverWAL(db, dir, version != 0 && version < formatVersion, opts.Logger)
	}
	if err == nil {
		err = upgradeIndex(db, version, opts.Logger.With("dir", dir))
	}
	var log *wal
	if err == nil {
		log, err = openWAL(dir, walState, opts)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("journal: open %s: %w", dir, err)
	}
	j := &Journal{
		opts:     opts,
		dir:      dir,
		db:       db,
		wal:      log,
		segments: newSegmentFiles(filepath.Join(dir, walDirName)),
		index:    newPendingIndex(),
		// Badger refuses transactions beyond these; keep a margin for
		// the per-group keys and the estimate.
		groupCost:      min(maxGroupBytes, int(db.MaxBatchSize()*4/5)),
		groupEntries:   int(db.MaxBatchCount() * 4 / 5),
		writes:         make(chan writeReq, 1024),
		writerDone:     make(chan struct{}),
		ring:           newRing(opts.RingSize),
		stopBackground: make(chan struct{}),
		retentionDone:  make(chan struct{}),
		pageoutDone:    make(chan struct{}),
	}
	w, err := j.load()
	if err == nil {
		err = j.loadIndex()
	}
	if err == nil {
		err = j.checkIdentity(dir)
	}
	if err == nil {
		err = j.reclaim()
	}
	if err == nil {
		err = j.checkSegments()
	}
	if err != nil {
		log.close()
		j.segments.close()
		db.Close()
		return nil, err
	}
	j.ring.reset(j.durable.Load() + 1)
	go j.writeLoop(w)
	go j.retentionLoop()
	go j.pageoutLoop()
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
			if err := txn.Set(keyIndexed, u64(0)); err != nil {
				return err
			}
		case err != nil:
			return err
		case len(id) != 16:
			return fmt.Errorf("%w: journal id has %d bytes", ErrCorrupt, len(id))
		}
		j.id = id
		v, err := getValue(txn, keyVersion)
		// Versions 1 to 3 were upgraded before (upgradeIndex).
		if version := readU64(v); err != nil || version != formatVersion {
			return unreadableVersion(version)
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
			e, err := j.getEvent(txn, last)
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
// appends (AppendWith): offsets.Wrap(j) keeps a replication's offset
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
// keys never do. AppendWith copies it: the caller may reuse its buffers.
type Write struct {
	Key, Value []byte
	// Delete removes Key instead of setting it (Value must be empty).
	Delete bool
}

// AppendWith appends events as Append does and commits writes in the same
// transaction: all of them or nothing, made durable by the same fsync. A
// replication keeps its offset in the source stream this way
// (offsets.Store.OffsetWrites over DB()), so that copied events and the
// offset that covers them are never stored one without the other. The
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

// SubmitEach queues events as appends of one event each, as many Submit
// calls would, without a request per event: each is checked, committed or
// refused alone (an invalid event, a seqNr expectation that fails), and
// they commit in the order given, in as few group commits as their size
// allows. An event that cannot be queued (the journal closed or failed,
// ctx ended) is refused with the events after it. ctx bounds only the
// wait to be queued.
func (j *Journal) SubmitEach(ctx context.Context, events []*streamdv1.Event) *PendingEach {
	p := &PendingEach{errs: make([]error, len(events))}
	var part eachPart
	var req writeReq
	var refused error // once set, no later event is queued
	flush := func() {
		if len(req.events) > 0 {
			req.each = true
			pending, err := j.submit(ctx, req)
			if err != nil {
				refused = err
				for _, i := range part.at {
					p.errs[i] = err
				}
			} else {
				part.done = pending.done
				p.parts = append(p.parts, part)
			}
		}
		part, req = eachPart{}, writeReq{}
	}
	for i, e := range events {
		size, err := j.opts.Limits.validate(events[i : i+1])
		if err != nil {
			p.errs[i] = err
			continue
		}
		cost, entries := txnCost(events[i:i+1], size)
		if len(req.events) > 0 && (len(req.events) == j.opts.Limits.MaxBatchEvents || req.size+size > j.opts.Limits.MaxBatchBytes ||
			req.cost+cost > j.groupCost || req.entries+entries > j.groupEntries) {
			flush()
		}
		if refused != nil {
			p.errs[i] = refused
			continue
		}
		req.events = append(req.events, e)
		req.size, req.cost, req.entries = req.size+size, req.cost+cost, req.entries+entries
		part.at = append(part.at, i)
	}
	flush()
	return p
}

// PendingEach is what SubmitEach queued.
type PendingEach struct {
	errs  []error // per event: refused before it was queued
	parts []eachPart
}

// eachPart is one request of a SubmitEach: the positions of its events.
type eachPart struct {
	done chan writeResult
	at   []int
}

// Wait blocks until every event is committed or refused, and returns
// per event where it landed, or why it did not (nil where it committed).
// Call it once.
func (p *PendingEach) Wait() ([]Appended, []error) {
	res := make([]Appended, len(p.errs))
	for _, part := range p.parts {
		r := <-part.done
		for k, i := range part.at {
			switch {
			case r.err != nil:
				p.errs[i] = r.err
			case r.errs != nil && r.errs[k] != nil:
				p.errs[i] = r.errs[k]
			default:
				res[i] = r.appended[k]
			}
		}
	}
	return res, p.errs
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
	req := writeReq{events: events, writes: copyWrites(writes), size: size}
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

// copyWrites copies writes into one buffer: the journal applies them to
// Badger after the append is answered, when the caller may reuse its own.
func copyWrites(writes []Write) []Write {
	if len(writes) == 0 {
		return nil
	}
	n := 0
	for _, w := range writes {
		n += len(w.Key) + len(w.Value)
	}
	buf := make([]byte, 0, n)
	out := make([]Write, len(writes))
	for i, w := range writes {
		k := len(buf)
		buf = append(buf, w.Key...)
		v := len(buf)
		buf = append(buf, w.Value...)
		out[i] = Write{Key: buf[k:v:v], Value: buf[v:len(buf):len(buf)], Delete: w.Delete}
	}
	return out
}

// txnCost is an upper bound of what an append of events (size bytes
// encoded) adds to a Badger transaction: a reference per block, and per
// event perhaps an origin entry and an entity type entry, each key with
// Badger's per-entry overhead. The blocks themselves stay in the WAL, and
// the index is flushed in groups of its own.
func txnCost(events []*streamdv1.Event, size int) (cost, entries int) {
	blocks := size/maxBlockBytes + 2
	cost = blocks * (2 + 8 + refBytes + 64)
	for _, e := range events {
		cost += 2*(len(e.EntityType)+len(e.EntityId)) + len(e.Origin) + 128
	}
	return cost, 2*len(events) + blocks + 2
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
	select {
	case j.writes <- req:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &Pending{done: req.done}, nil
}

// Close stops accepting appends, waits for queued appends to commit, and
// closes Badger. It is idempotent. A journal that cannot close cleanly (it
// failed, or making Badger durable fails) says why at Error level and
// returns it; the next Open recovers from the logs it kept. Badger's close
// then may not return at all: it retries a failed flush forever.
func (j *Journal) Close() error {
	j.closeOnce.Do(func() {
		j.mu.Lock()
		j.closed = true
		j.mu.Unlock()
		close(j.stopBackground)
		<-j.retentionDone
		<-j.pageoutDone
		j.inflight.Wait()
		close(j.writes)
		<-j.writerDone
		j.ring.close()
		j.closeErr = j.closeWAL()
		j.segments.close()
		if f := j.failed.Load(); f != nil {
			j.closeErr = errors.Join(*f, j.closeErr)
		}
		if j.closeErr != nil {
			// Said before Badger's close, which retries a failed flush
			// forever (a removed directory, a failing disk).
			j.opts.Logger.Error("journal: cannot close cleanly; the next open recovers from the logs kept on disk", "dir", j.dir, "err", j.closeErr)
		}
		j.closeErr = errors.Join(j.closeErr, j.db.Close())
		if j.closeErr == nil {
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
	// Badger's files are found by name: a directory renamed or removed
	// under the journal would make the sync below vouch for nothing.
	if err := syncDir(j.dir); err != nil {
		return fmt.Errorf("journal: close: %w", err)
	}
	if err := syncBadger(j.db, j.dir); err != nil {
		return fmt.Errorf("journal: close: %w", err)
	}
	if err := j.wal.end(); err != nil {
		return fmt.Errorf("journal: close: %w", err)
	}
	// The segment's zero fill beyond what was written is not kept.
	if err := j.wal.f.Truncate(j.wal.size); err != nil {
		return fmt.Errorf("journal: close: %w", err)
	}
	return j.reclaim()
}

// Update runs fn in a write transaction of the journal's Badger DB and
// commits it in order with the appends, for records kept beside the events
// (an offsets.Store over the journal). With sync durability it returns once
// the transaction is durable, and a recovery never replays an older append's
// writes over it. fn's keys must begin with the byte 0x00 (the journal's
// own keys never do): a transaction that writes another key is refused
// (ErrInvalidEvent) and nothing of it is committed. fn runs in the
// journal's commit goroutine and must not call the journal. An error from
// fn discards the transaction and is returned unchanged.
func (j *Journal) Update(fn func(txn *badger.Txn) error) error {
	p, err := j.submit(context.Background(), writeReq{update: fn})
	if err != nil {
		return err
	}
	_, err = p.Wait()
	return err
}

// writable is the slices a journal writes (SetWritable); nil: all.
type writable struct{ slice func(uint32) bool }

// SetWritable limits the events written here (appends without an origin
// seqNr: not copies from another journal) to the slices for which slice
// returns true; an append of an event of another slice fails with
// *NotWritableError. A nil slice lifts the limit (the default). It takes
// effect in the writer's order: once SetWritable returns, every append
// queued before it is durable (logged) and every later one is checked.
// slice is called on the writer's goroutine and must not block. The pods
// of a group sharing one region's entities write only the slices they
// hold (cmd/streamd).
func (j *Journal) SetWritable(ctx context.Context, slice func(uint32) bool) error {
	p, err := j.submit(ctx, writeReq{writable: &writable{slice: slice}})
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

// undoSeq is what assigning one event's seqNrs changed: enough to take it
// back when its append conflicts, and the keys stage writes it under.
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

// seqAssigner gives the events of one group their seqNrs and origin seqNrs,
// append by append, and takes back those of an append that conflicts.
type seqAssigner struct {
	w *writer
	// last is the last seqNr per entity, and the last origin seqNr per
	// (origin, entity) under originKey, after the appends assigned so far.
	last map[string]uint64
	// rtxn reads the last seqNrs of entities not in the cache, outside the
	// write transaction, whose iterators would sort every pending write;
	// made again after a flush of the index was applied (rtxnFlushes).
	rtxn        *badger.Txn
	rtxnFlushes uint64
	// undo holds what the last assign changed, one entry per event it
	// took (duplicates included).
	undo []undoSeq
}

func (w *writer) newSeqAssigner() *seqAssigner {
	return &seqAssigner{w: w, last: make(map[string]uint64)}
}

// close discards the read transaction.
func (s *seqAssigner) close() {
	if s.rtxn != nil {
		s.rtxn.Discard()
	}
}

// assign gives each event of one append its seqNr and, when it has an
// origin, its origin seqNr, and records in s.undo what it changed. An
// append that conflicts (a seqNr expectation that fails, a gap in its
// origin's sequence) is undone entirely and its conflict returned; err is a
// failure to read the journal.
func (s *seqAssigner) assign(events []*streamdv1.Event) (conflict, err error) {
	s.undo = s.undo[:0]
	for _, e := range events {
		if conflict, err = s.assignEvent(e); conflict != nil || err != nil {
			break
		}
	}
	if conflict != nil {
		s.rollback()
	}
	return conflict, err
}

// assignEvent assigns one event; it appends to s.undo once it changed
// something, so a conflict before that leaves nothing to undo.
func (s *seqAssigner) assignEvent(e *streamdv1.Event) (conflict, err error) {
	if e.Origin == "" {
		e.Origin = s.w.j.opts.Region
	}
	if e.OriginSeqNr == 0 && s.w.writable != nil {
		if sl := SliceOf(e.EntityId); !s.w.writable(sl) {
			return &NotWritableError{EntityType: e.EntityType, EntityID: e.EntityId, Slice: sl}, nil
		}
	}
	ek := EntityKey(e.EntityType, e.EntityId)
	u := undoSeq{ek: ek, event: e, origSeq: e.SeqNr, origOrigSeq: e.OriginSeqNr}
	if e.Origin != "" {
		u.ok = originKey(e.Origin, ek)
		prev, had, err := s.lastOf(u.ok, s.w.lastOriginSeqNr)
		if err != nil {
			return nil, err
		}
		u.originPrev, u.originHad = prev, had
		switch {
		case e.OriginSeqNr == 0: // written here: the origin's next
			e.OriginSeqNr = prev + 1
		case e.OriginSeqNr <= prev:
			u.duplicate = true
		case e.OriginSeqNr > prev+1:
			return &OriginGapError{Origin: e.Origin, EntityType: e.EntityType, EntityID: e.EntityId, Next: prev + 1, Got: e.OriginSeqNr}, nil
		}
		if !u.duplicate {
			s.last[u.ok] = e.OriginSeqNr
		}
	}
	if !u.duplicate {
		prev, had, err := s.lastOf(ek, s.w.lastSeqNr)
		if err != nil {
			return nil, err
		}
		if e.SeqNr != 0 && e.SeqNr != prev+1 {
			conflict = &SeqNrConflictError{EntityType: e.EntityType, EntityID: e.EntityId, Expected: e.SeqNr, Next: prev + 1}
		}
		u.prev, u.hadPrev = prev, had
		s.last[ek] = prev + 1
		e.SeqNr = prev + 1
	}
	s.undo = append(s.undo, u)
	return conflict, nil
}

// lastOf is the last seqNr under key: as this group left it (had), or as
// committed, read by read.
func (s *seqAssigner) lastOf(key string, read func(*seqAssigner, string) (uint64, error)) (v uint64, had bool, err error) {
	if v, ok := s.last[key]; ok {
		return v, true, nil
	}
	v, err = read(s, key)
	return v, false, err
}

// txn is a read transaction of Badger that holds every index run no longer
// in the pending index when it is called.
func (s *seqAssigner) txn() *badger.Txn {
	flushes := s.w.j.index.applied.Load()
	if s.rtxn == nil || s.rtxnFlushes != flushes {
		if s.rtxn != nil {
			s.rtxn.Discard()
		}
		s.rtxn, s.rtxnFlushes = s.w.j.db.NewTransaction(false), flushes
	}
	return s.rtxn
}

// rollback takes back what the last assign changed, newest first.
func (s *seqAssigner) rollback() {
	for k := len(s.undo) - 1; k >= 0; k-- {
		u := s.undo[k]
		if !u.duplicate {
			restore(s.last, u.ek, u.prev, u.hadPrev)
		}
		if u.ok != "" {
			restore(s.last, u.ok, u.originPrev, u.originHad)
		}
		u.event.SeqNr, u.event.OriginSeqNr = u.origSeq, u.origOrigSeq
	}
}

// restore sets m[key] back to prev, or deletes it when it had no entry.
func restore(m map[string]uint64, key string, prev uint64, had bool) {
	if had {
		m[key] = prev
	} else {
		delete(m, key)
	}
}

// groupBuild is what commit builds a group's changes with.
type groupBuild struct {
	blocks blockWriter
	// slab holds the group's origin keys and values; the changes refer to
	// it until they are applied.
	slab   []byte
	index  []indexEntry
	offset uint64 // of the next event
	ts     int64  // the group's timestamp
}

// commit assigns offsets and seqNrs and builds a group's changes to Badger,
// taking them as committed: a group that fails later fails the journal. An
// append whose seqNr expectation fails, or whose replicated events leave a
// gap in their origin's sequence, is answered at once, alone; the others
// commit together.
func (w *writer) commit(g *group) error {
	g.results = make([][]Appended, len(g.reqs))
	g.bytes = w.bytes // unchanged unless events commit
	size := 0
	for _, r := range g.reqs {
		size += r.size
		g.cost, g.entries = g.cost+r.cost, g.entries+r.entries
	}
	b := groupBuild{
		blocks: blockWriter{start: -1, buf: make([]byte, 0, size+size/16+blockHeader), encoded: make([]byte, 0, size+size/16)},
		index:  make([]indexEntry, 0, len(g.reqs)),
		offset: w.nextOffset,
		ts:     max(w.j.opts.Now().UnixNano(), w.lastTime),
	}
	seqs := w.newSeqAssigner()
	defer seqs.close()
	for i := range g.reqs {
		if g.reqs[i].each {
			if err := w.commitEach(g, &b, seqs, i); err != nil {
				return err
			}
			continue
		}
		conflict, err := seqs.assign(g.reqs[i].events)
		if err != nil {
			return err
		}
		if conflict != nil {
			g.answer(i, writeResult{err: conflict})
			continue
		}
		if g.results[i], err = w.stage(g, &b, &g.reqs[i], seqs.undo); err != nil {
			return err
		}
	}
	if len(g.changes) == 0 && len(b.index) == 0 {
		return nil // every append conflicted or was a duplicate
	}
	b.blocks.flush(&g.changes)
	g.bytes = w.bytes + g.addBytes
	g.changes.set(keyBytes, u64(uint64(g.bytes)))
	w.cacheSeqNrs(seqs.last)
	w.j.index.add(b.index)
	g.last = b.offset - 1
	w.nextOffset, w.lastTime, w.bytes = b.offset, b.ts, g.bytes
	return nil
}

// commitEach stages request i of g, whose events are appends of their
// own: a conflict refuses only its event.
func (w *writer) commitEach(g *group, b *groupBuild, seqs *seqAssigner, i int) error {
	r := &g.reqs[i]
	res := make([]Appended, len(r.events))
	for k := range r.events {
		conflict, err := seqs.assign(r.events[k : k+1])
		if err != nil {
			return err
		}
		if conflict != nil {
			if g.errs == nil {
				g.errs = make([][]error, len(g.reqs))
			}
			if g.errs[i] == nil {
				g.errs[i] = make([]error, len(r.events))
			}
			g.errs[i][k] = conflict
			continue
		}
		one := writeReq{events: r.events[k : k+1]}
		app, err := w.stage(g, b, &one, seqs.undo)
		if err != nil {
			return err
		}
		res[k] = app[0]
	}
	g.results[i] = res
	return nil
}

// stage adds one append, its seqNrs assigned (marks: one per event), to the
// group's changes and records, and returns where its events land.
func (w *writer) stage(g *group, b *groupBuild, r *writeReq, marks []undoSeq) ([]Appended, error) {
	for _, wr := range r.writes {
		if wr.Delete {
			g.changes.del(wr.Key)
		} else {
			g.changes.set(wr.Key, wr.Value)
		}
	}
	app := make([]Appended, len(r.events))
	for k, e := range r.events {
		if marks[k].duplicate {
			app[k] = Appended{Duplicate: true}
			continue
		}
		if marks[k].ok != "" {
			key := len(b.slab)
			b.slab = append(b.slab, prefixOrigin...)
			b.slab = append(b.slab, marks[k].ok[1:]...)
			val := len(b.slab)
			b.slab = binary.BigEndian.AppendUint64(b.slab, e.OriginSeqNr)
			g.changes.set(b.slab[key:val:val], b.slab[val:len(b.slab):len(b.slab)])
			if e.OriginTimestampUnixNano == 0 {
				e.OriginTimestampUnixNano = b.ts
			}
		}
		if !w.knownType(e.EntityType) && !slices.Contains(g.newTypes, e.EntityType) {
			g.newTypes = append(g.newTypes, e.EntityType)
			g.changes.set(append(bytes.Clone(prefixType), e.EntityType...), nil)
		}
		e.Offset, e.Slice, e.TimestampUnixNano = b.offset, SliceOf(e.EntityId), b.ts
		raw, err := b.blocks.add(&g.changes, e)
		if err != nil {
			return nil, err
		}
		b.index = append(b.index, indexEntry{ek: marks[k].ek, seqNr: e.SeqNr, off: b.offset})
		g.addBytes += int64(len(raw))
		app[k] = Appended{Offset: b.offset, SeqNr: e.SeqNr}
		g.records = append(g.records, Record{Offset: b.offset, Raw: raw, event: e})
		b.offset++
	}
	return app, nil
}

// cacheSeqNrs takes a group's last seqNrs into the writer's cache.
func (w *writer) cacheSeqNrs(last map[string]uint64) {
	if len(w.lastSeq)+len(last) > maxCachedEntities {
		// Entities out of the cache are read from Badger: it must hold
		// every group built so far.
		w.awaitApplied()
		clear(w.lastSeq)
		w.cacheComplete = false
	}
	for ek, seq := range last {
		w.lastSeq[ek] = seq
	}
}

// lastOriginSeqNr is the last origin seqNr committed for an originKey (0 if
// none).
func (w *writer) lastOriginSeqNr(s *seqAssigner, ok string) (uint64, error) {
	if s, found := w.lastSeq[ok]; found || w.cacheComplete {
		return s, nil
	}
	v, err := getValue(s.txn(), append(bytes.Clone(prefixOrigin), ok[1:]...))
	if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return 0, err
	}
	return readU64(v), nil
}

// lastSeqNr is the last committed seqNr of an entity (0 if none): its last
// pending index entry, its last run in Badger, or what retention kept when
// it deleted the entity's history.
func (w *writer) lastSeqNr(s *seqAssigner, ek string) (uint64, error) {
	if s, ok := w.lastSeq[ek]; ok || w.cacheComplete {
		return s, nil
	}
	// The pending index before Badger: a run leaves it only once Badger
	// holds it, and s.txn() sees what was flushed before it is called.
	if last, _, ok := w.j.index.latest(ek); ok {
		return last, nil
	}
	txn := s.txn()
	var last uint64
	first, offs, ok, err := lastRun(txn, ek)
	if err != nil {
		return 0, err
	}
	if ok {
		last = first + uint64(len(offs)) - 1
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

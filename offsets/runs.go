package offsets

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"sync"

	"github.com/dgraph-io/badger/v4"
	"github.com/klauspost/compress/s2"
)

// Applied seqNrs saved in runs.
//
// An at-least-once Save covers about SaveEvery events. Over a few thousand
// busy entities each save names most of them again, and one key per entity
// per save made the store's Badger writes most of a consumer's cost in a
// catch-up. So Save writes the seqNr of an entity it saved since the last
// fold into a run, one value for the save, in the transaction of its
// offset; a fold, once foldEntities entities or foldEntries run entries
// wait, writes each such entity's highest seqNr to its key, once. An entity
// not saved since the last fold is written to its key at once: over many
// entities, each seen once between folds, runs would only add writes.
// AppliedSeqNr reads the key and what waits in runs, so nothing else of
// the store sees the difference.
//
// The Store that saved the runs writes their keys, one fold at a time,
// each from a later snapshot, and never writes an entity to its key while
// a run holds it: it writes blind. Where another writer may have written a
// key since, the fold reads it and only raises it: at open (the runs on
// disk may be another Store's, over the same DB), and for a consumer and
// journal whose seqNrs SaveTxn or OffsetWrites also wrote (runs.others).
// A fold deletes the runs it folded after their seqNrs are written, so a
// crash in between folds them again at the next open.
const (
	foldEntities = 1 << 16
	foldEntries  = 1 << 18
	// foldChunk is how many keys one fold transaction writes or deletes.
	foldChunk = 1000
	// maxRunBytes bounds a run's value, so that it stays in the LSM tree
	// (Badger's value threshold is 1 MiB); a larger Save writes several.
	maxRunBytes = 256 << 10
)

// runs is what a Store saved since its last fold.
type runs struct {
	mu     sync.Mutex
	store  [8]byte // makes run keys unique among Stores over one DB
	next   uint64  // number of the next run key
	marked bool    // the store's format is runsFormat
	// saved holds the entities in runs since the last fold, by applied key;
	// folding, those of the fold in progress, until it ends. direct holds
	// the hashes of the applied keys written since the last fold.
	saved, folding map[string]*savedSeqNr
	direct         map[uint64]struct{}
	seed           maphash.Seed
	runs           []run // the runs, in the order they were written
	entries        int   // entries in those runs
	// others holds the applied key prefixes (consumer and journal) that
	// SaveTxn or OffsetWrites wrote.
	others map[string]bool

	foldMu sync.Mutex // one fold at a time
}

// savedSeqNr is an entity's highest seqNr in runs since the last fold.
type savedSeqNr struct {
	seqNr uint64
}

// run is a run key and its number of entries (the runs of one Save count
// theirs on the first).
type run struct {
	key     []byte
	entries int
}

func newRuns() *runs {
	r := &runs{saved: map[string]*savedSeqNr{}, direct: map[uint64]struct{}{}, others: map[string]bool{}, seed: maphash.MakeSeed()}
	_, _ = rand.Read(r.store[:]) // never fails (crypto/rand)
	return r
}

// keyedSeqNr is an entity's highest seqNr in a batch, with its applied key
// and the key's hash.
type keyedSeqNr struct {
	key  []byte
	hash uint64
	Applied
}

// byEntity returns applied once per entity, each with its highest seqNr
// and its applied key; the keys share one buffer.
func (r *runs) byEntity(consumer string, journalID []byte, applied []Applied) []keyedSeqNr {
	prefix := consumerJournalPrefix(kindApplied, consumer, journalID)
	n := 0
	for _, a := range applied {
		n += len(prefix) + 2*binary.MaxVarintLen32 + len(a.EntityType) + len(a.EntityID)
	}
	buf := make([]byte, 0, n) // never grown: the keys stay where they are
	out := make([]keyedSeqNr, 0, len(applied))
	index := make(map[uint64]int, len(applied)) // by hash of the key
	for _, a := range applied {
		start := len(buf)
		buf = appendString(appendString(append(buf, prefix...), a.EntityType), a.EntityID)
		key := buf[start:]
		h := maphash.Bytes(r.seed, key)
		i, seen := index[h]
		dup := seen && bytes.Equal(out[i].key, key)
		for j := 0; seen && !dup && j < len(out); j++ { // two entities, one hash
			i, dup = j, bytes.Equal(out[j].key, key)
		}
		switch {
		case dup:
			out[i].SeqNr = max(out[i].SeqNr, a.SeqNr)
			continue
		case !seen:
			index[h] = len(out)
		}
		out = append(out, keyedSeqNr{key, h, a})
	}
	return out
}

// plannedSeqNr is an entity's seqNr in a Save: to its key, or in a run.
type plannedSeqNr struct {
	keyedSeqNr
	inRun bool
}

// plan returns applied by entity (byEntity) and says which go into a run:
// those saved since the last fold.
func (r *runs) plan(consumer string, journalID []byte, applied []Applied) []plannedSeqNr {
	entities := r.byEntity(consumer, journalID, applied)
	plan := make([]plannedSeqNr, len(entities))
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, e := range entities {
		// A hash collision with another entity only puts this one into a
		// run: no harm.
		_, inRun := r.direct[e.hash]
		inRun = inRun || r.saved[string(e.key)] != nil || r.folding[string(e.key)] != nil
		plan[i] = plannedSeqNr{e, inRun}
	}
	return plan
}

// key returns the key of a new run of consumer and journal.
func (r *runs) key(consumer string, journalID []byte) []byte {
	r.mu.Lock()
	r.next++
	n := r.next
	r.mu.Unlock()
	b := consumerJournalPrefix(kindRun, consumer, journalID)
	b = append(b, r.store[:]...)
	return binary.BigEndian.AppendUint64(b, n)
}

// isMarked reports whether the store's format is runsFormat.
func (r *runs) isMarked() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.marked
}

// add records a committed Save: its plan and its run keys, and whether it
// marked the store's format. It reports whether a fold is due.
func (r *runs) add(plan []plannedSeqNr, keys [][]byte, marked bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.marked = r.marked || marked
	n := 0
	for _, p := range plan {
		if !p.inRun {
			r.direct[p.hash] = struct{}{}
			continue
		}
		n++
		switch old := r.saved[string(p.key)]; {
		case old == nil:
			r.saved[string(p.key)] = &savedSeqNr{p.SeqNr}
		case p.SeqNr > old.seqNr:
			old.seqNr = p.SeqNr
		}
	}
	for i, k := range keys {
		if i > 0 {
			n = 0
		}
		r.runs = append(r.runs, run{k, n})
	}
	if len(keys) > 0 {
		r.entries += r.runs[len(r.runs)-len(keys)].entries
	}
	return len(r.saved)+len(r.direct) >= foldEntities || r.entries >= foldEntries
}

// written notes that consumer's seqNrs of journal are written outside runs.
func (r *runs) written(consumer string, journalID []byte) {
	p := consumerJournalPrefix(kindApplied, consumer, journalID)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.others[string(p)] {
		r.others[string(p)] = true
	}
}

// readFirst returns whether a fold must read an applied key before raising
// it: true if another writer may have written it. It holds the consumers
// and journals noted when it was made.
func (r *runs) readFirst() func(key string) bool {
	r.mu.Lock()
	others := make(map[string]bool, len(r.others))
	for k := range r.others {
		others[k] = true
	}
	r.mu.Unlock()
	return func(key string) bool {
		if len(others) == 0 {
			return false
		}
		_, rest, ok := readString([]byte(key[3:]))
		return !ok || len(rest) < JournalIDLen || others[key[:len(key)-len(rest)+JournalIDLen]]
	}
}

// get returns the highest seqNr of applied key saved since the last fold
// (0 if none).
func (r *runs) get(key []byte) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var seqNr uint64
	if v := r.saved[string(key)]; v != nil {
		seqNr = v.seqNr
	}
	if v := r.folding[string(key)]; v != nil {
		seqNr = max(seqNr, v.seqNr)
	}
	return seqNr
}

// startFold hands what was saved to a fold and starts afresh: the fold
// writes the seqNrs in runs and deletes the runs.
func (r *runs) startFold() (map[string]*savedSeqNr, []run) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.folding, r.saved = r.saved, map[string]*savedSeqNr{}
	clear(r.direct)
	folded := r.runs
	r.runs, r.entries = nil, 0
	return r.folding, folded
}

// endFold forgets the fold's seqNrs once they are in their keys; if the
// fold failed (err), they and its runs wait again.
func (r *runs) endFold(folded []run, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		for k, v := range r.folding {
			if now := r.saved[k]; now == nil {
				r.saved[k] = v
			} else {
				now.seqNr = max(now.seqNr, v.seqNr)
			}
		}
		r.runs = append(folded, r.runs...)
		for _, x := range folded {
			r.entries += x.entries
		}
	}
	r.folding = nil
}

// fold writes the seqNrs waiting in runs to their keys, then deletes the
// runs. At open it reads every key first (readAll).
func (s *Store) fold(readAll bool) error {
	s.runs.foldMu.Lock()
	defer s.runs.foldMu.Unlock()
	seqNrs, folded := s.runs.startFold()
	err := s.writeApplied(seqNrs, readAll)
	for rest := folded; err == nil && len(rest) > 0; {
		chunk := rest[:min(len(rest), foldChunk)]
		err = s.update(func(txn *badger.Txn) error {
			for _, x := range chunk {
				if err := txn.Delete(x.key); err != nil {
					return fmt.Errorf("offsets: stage delete of a folded run: %w", err)
				}
			}
			return nil
		})
		rest = rest[len(chunk):]
	}
	s.runs.endFold(folded, err)
	return err
}

// foldNow folds, as a call of its own (ClearApplied).
func (s *Store) foldNow() error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	return s.fold(false)
}

// writeApplied writes each seqNr to its applied key, in
// transactions of foldChunk keys; a key that readAll or runs.readFirst says
// another writer may have written is read first and only raised.
func (s *Store) writeApplied(seqNrs map[string]*savedSeqNr, readAll bool) error {
	keys := make([]string, 0, len(seqNrs))
	for k := range seqNrs {
		keys = append(keys, k)
	}
	readFirst := s.runs.readFirst()
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), foldChunk)]
		err := s.update(func(txn *badger.Txn) error {
			for _, k := range chunk {
				key := []byte(k)
				var stored uint64
				if readAll || readFirst(k) {
					var err error
					if stored, err = getSeqNr(txn, key); err != nil {
						return err
					}
				}
				if seq := seqNrs[k].seqNr; seq > stored {
					if err := txn.Set(key, encodeSeqNr(seq)); err != nil {
						return fmt.Errorf("offsets: stage applied seqNr %d: %w", seq, err)
					}
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		keys = keys[len(chunk):]
	}
	return nil
}

// loadRuns reads the runs on disk (a crash before their fold, or another
// Store's) into s.runs and folds them.
func (s *Store) loadRuns() error {
	prefix := keyPrefix(kindRun, 0)
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true})
		defer it.Close()
		for it.Seek(prefix); it.Valid(); it.Next() {
			item := it.Item()
			key := item.KeyCopy(nil)
			consumer, journalID, err := decodeRunKey(key)
			if err != nil {
				return err
			}
			err = item.Value(func(v []byte) error {
				applied, err := decodeRun(v)
				if err != nil {
					return corruptf("run %x: %v", key, err)
				}
				plan := make([]plannedSeqNr, len(applied))
				for i, a := range applied {
					plan[i] = plannedSeqNr{keyedSeqNr{key: appliedKey(consumer, journalID, a.EntityType, a.EntityID), Applied: a}, true}
				}
				s.runs.add(plan, [][]byte{key}, false)
				return nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.fold(true)
}

// encodeRuns returns the values of the runs of applied, each of at most
// maxRunBytes of entries unless one entry is larger. A run value:
// compressedRun, then the entries compressed with S2; an entry is an
// entity's type, id and seqNr (uvarint). Ids of one type share much (a
// run of the benchmark's device-1234 ids is a third of its plain size).
func encodeRuns(applied []Applied) [][]byte {
	var runs [][]byte
	var b []byte // the entries of the run being built
	end := func() {
		v := make([]byte, 1+s2.MaxEncodedLen(len(b)))
		v[0] = compressedRun
		runs = append(runs, v[:1+len(s2.Encode(v[1:], b))])
		b = b[:0]
	}
	for _, a := range applied {
		n := 2*binary.MaxVarintLen32 + len(a.EntityType) + len(a.EntityID) + binary.MaxVarintLen64
		if len(b) > 0 && len(b)+n > maxRunBytes {
			end()
		}
		b = appendString(b, a.EntityType)
		b = appendString(b, a.EntityID)
		b = binary.AppendUvarint(b, a.SeqNr)
	}
	if len(b) > 0 {
		end()
	}
	return runs
}

// maxRunEntryBytes bounds one entry of a run: a type and an id within
// Badger's key limit, their lengths and a seqNr.
const maxRunEntryBytes = maxKeyLen + 3*binary.MaxVarintLen64

func decodeRun(v []byte) ([]Applied, error) {
	var entries []byte
	switch {
	case len(v) > 0 && v[0] == formatVersion:
		entries = v[1:]
	case len(v) > 0 && v[0] == compressedRun:
		n, err := s2.DecodedLen(v[1:])
		if err != nil {
			return nil, fmt.Errorf("compressed entries: %w", err)
		}
		if n > maxRunBytes+maxRunEntryBytes {
			return nil, fmt.Errorf("compressed entries of %d bytes, more than a run holds (%d)", n, maxRunBytes+maxRunEntryBytes)
		}
		if entries, err = s2.Decode(nil, v[1:]); err != nil {
			return nil, fmt.Errorf("compressed entries: %w", err)
		}
	default:
		return nil, fmt.Errorf("unknown version")
	}
	var applied []Applied
	for rest := entries; len(rest) > 0; {
		var a Applied
		var ok bool
		if a.EntityType, rest, ok = readString(rest); ok {
			a.EntityID, rest, ok = readString(rest)
		}
		var w int
		if ok {
			a.SeqNr, w = binary.Uvarint(rest)
		}
		if !ok || w <= 0 || a.EntityID == "" || a.SeqNr == 0 {
			return nil, fmt.Errorf("entry %d is truncated or invalid", len(applied))
		}
		rest = rest[w:]
		applied = append(applied, a)
	}
	return applied, nil
}

func decodeRunKey(key []byte) (consumer string, journalID []byte, err error) {
	consumer, rest, ok := readString(key[3:])
	if !ok || len(rest) != JournalIDLen+16 {
		return "", nil, corruptf("run key %x: wrong length", key)
	}
	return consumer, rest[:JournalIDLen], nil
}

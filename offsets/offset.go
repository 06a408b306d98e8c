package offsets

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Key identifies a stored offset: a consumer, the journal the offsets
// belong to, and the slices the consumer instance owns.
type Key struct {
	Consumer  string
	JournalID []byte // JournalIDLen bytes
	Slices    SliceRange
}

// Validate reports the first field of k that is unusable.
func (k Key) Validate() error {
	if err := validateConsumer(k.Consumer); err != nil {
		return err
	}
	if err := validateJournalID(k.JournalID); err != nil {
		return err
	}
	return k.Slices.Validate()
}

// String is "consumer/journal-id-hex/first-last".
func (k Key) String() string {
	return k.Consumer + "/" + hex.EncodeToString(k.JournalID) + "/" + k.Slices.String()
}

func validateConsumer(c string) error {
	switch {
	case c == "":
		return invalidf("consumer name is empty")
	case len(c) > MaxNameLen:
		return invalidf("consumer name is %d bytes, above %d", len(c), MaxNameLen)
	}
	return nil
}

func validateJournalID(id []byte) error {
	if len(id) != JournalIDLen {
		return invalidf("journal id is %d bytes, want %d", len(id), JournalIDLen)
	}
	return nil
}

// Offset is the stored offset of a Key: either the last offset processed, or
// a start request an operator left for the consumer's next connection.
type Offset struct {
	// Offset is the last offset processed (0 = nothing yet, start at the
	// beginning); meaningful when Start is START_POLICY_UNSPECIFIED.
	Offset uint64
	// Start is START_POLICY_UNSPECIFIED when Offset is where to resume, and
	// EARLIEST, LATEST or AT_TIME for a pending operator reset, which the
	// consumer sends as its start policy and then replaces with an offset.
	Start streamdv1.StartPolicy
	// StartTime goes with START_POLICY_AT_TIME.
	StartTime time.Time
	// UpdatedAt is when the offset was written.
	UpdatedAt time.Time
}

// Pending reports whether p is an operator reset not yet resolved by the
// consumer.
func (p Offset) Pending() bool {
	return p.Start != streamdv1.StartPolicy_START_POLICY_UNSPECIFIED
}

// Proto returns the wire position to resume from in the journal journalID,
// or nil when p is a pending reset (send p.Start and p.StartTime instead).
func (p Offset) Proto(journalID []byte) *streamdv1.Position {
	if p.Pending() {
		return nil
	}
	return &streamdv1.Position{JournalId: journalID, Offset: p.Offset}
}

// String describes p for logs and the CLI.
func (p Offset) String() string {
	switch p.Start {
	case streamdv1.StartPolicy_START_POLICY_UNSPECIFIED:
		return fmt.Sprintf("offset %d", p.Offset)
	case streamdv1.StartPolicy_START_POLICY_AT_TIME:
		return "reset to " + p.StartTime.Format(time.RFC3339Nano)
	case streamdv1.StartPolicy_START_POLICY_EARLIEST:
		return "reset to earliest"
	case streamdv1.StartPolicy_START_POLICY_LATEST:
		return "reset to latest"
	}
	return "reset to " + p.Start.String()
}

// Entry is a stored offset with its key.
type Entry struct {
	Key
	Offset
}

// Applied is the seqNr of an entity's event that the consumer has applied.
type Applied struct {
	EntityType string
	EntityID   string
	SeqNr      uint64
}

func validateApplied(consumer string, applied []Applied) error {
	for i, a := range applied {
		switch {
		case a.EntityID == "":
			return invalidf("applied[%d]: entity id is empty", i)
		case a.SeqNr == 0:
			return invalidf("applied[%d] (%s/%s): seqNr is 0 (seqNrs start at 1)", i, a.EntityType, a.EntityID)
		case appliedKeyLen(consumer, a.EntityType, a.EntityID) > maxKeyLen:
			return invalidf("applied[%d]: entity type and id are too long (%d bytes)", i, len(a.EntityType)+len(a.EntityID))
		}
	}
	return nil
}

// SaveTxn stages in txn the offset of k (offset = the last offset
// processed) and the applied seqNrs, so that they commit atomically with the
// caller's own writes in txn — exactly-once. Nothing is durable until the
// caller commits txn (Update does, durably); if txn is discarded nothing is
// stored. The seqNrs are written as Save writes them; an exactly-once
// consumer reads them for dedupe with AppliedSeqNr(txn, …), which makes the
// commit conflict if a concurrent transaction changed them.
//
// On an error the caller must discard txn: part of the batch may be staged.
// No iterator of txn may be open during the call.
func (s *Store) SaveTxn(txn *badger.Txn, k Key, offset uint64, applied []Applied) error {
	if txn == nil {
		return invalidf("txn is nil")
	}
	if err := k.Validate(); err != nil {
		return err
	}
	if err := validateApplied(k.Consumer, applied); err != nil {
		return err
	}
	if s.isClosed() {
		return ErrClosed
	}
	return s.saveTxn(txn, k, offset, applied)
}

func (s *Store) saveTxn(txn stage, k Key, offset uint64, applied []Applied) error {
	if err := s.saveOffset(txn, k, offset); err != nil {
		return err
	}
	if len(applied) > 0 {
		s.runs.written(k.Consumer, k.JournalID)
	}
	// An entity named twice in the batch keeps its highest seqNr.
	for _, e := range s.runs.byEntity(k.Consumer, k.JournalID, applied) {
		if err := txn.Set(e.key, encodeSeqNr(e.SeqNr)); err != nil {
			return fmt.Errorf("offsets: stage applied seqNr %d: %w", e.SeqNr, err)
		}
	}
	return nil
}

// saveOffset stages offset as k's, unless k's stored offset is higher.
func (s *Store) saveOffset(txn stage, k Key, offset uint64) error {
	now := time.Now()
	return s.writeOffset(txn, k, func(floor uint64, hasFloor bool) Offset {
		return Offset{Offset: max(offset, floor), UpdatedAt: now}
	})
}

// Write is a record of a stored offset, as OffsetWrites returns it.
type Write struct {
	Key, Value []byte
	// Delete removes Key instead of setting it.
	Delete bool
}

// OffsetWrites returns the records that SaveTxn would stage for k, offset
// and applied, for a consumer that commits them itself together with its
// events: a replication hands them to journal.AppendWith, whose Write they
// convert to, over a Store made by Wrap on the journal's DB. They are
// computed from the stored offsets now, so they are right as long as no
// other writer changes k's offsets before they commit — the consumer
// running k is its only writer.
func (s *Store) OffsetWrites(k Key, offset uint64, applied []Applied) ([]Write, error) {
	if err := k.Validate(); err != nil {
		return nil, err
	}
	if err := validateApplied(k.Consumer, applied); err != nil {
		return nil, err
	}
	var writes []Write
	err := s.view(func(txn *badger.Txn) error {
		r := &recorder{Txn: txn}
		err := s.saveTxn(r, k, offset, applied)
		writes = r.writes
		return err
	})
	if err != nil {
		return nil, err
	}
	return writes, nil
}

// stage is what writing an offset needs of a transaction: a *badger.Txn,
// or a recorder.
type stage interface {
	Get(key []byte) (*badger.Item, error)
	NewIterator(opt badger.IteratorOptions) *badger.Iterator
	Set(key, value []byte) error
	Delete(key []byte) error
}

// recorder reads through a read-only transaction and records the writes
// instead of staging them. Offset writes never read what they wrote.
type recorder struct {
	*badger.Txn
	writes []Write
}

func (r *recorder) Set(key, value []byte) error {
	r.writes = append(r.writes, Write{Key: key, Value: value})
	return nil
}

func (r *recorder) Delete(key []byte) error {
	r.writes = append(r.writes, Write{Key: key, Delete: true})
	return nil
}

// Save stores the offset of k and the applied seqNrs in one durable
// transaction — the at-least-once save after a batch was handled.
//
// Save never lowers the stored offset of k (an older offset arriving late is
// ignored; only Set moves an offset back). It replaces a pending reset with
// offset: the consumer has resolved it. A Save of a range no entry has
// exactly takes over those slices from the overlapping entries (see
// StartFor) and starts no lower than they would.
//
// The applied seqNrs of entities saved since the last fold are saved as one
// run, the others to their keys (runs.go): AppliedSeqNr returns them at
// once, and a fold, once enough runs wait, writes each entity's highest to
// its key. Save runs that fold when it is due, so a Save now and then
// takes longer: it writes up to 65,536 seqNrs.
func (s *Store) Save(k Key, offset uint64, applied []Applied) error {
	if err := k.Validate(); err != nil {
		return err
	}
	if err := validateApplied(k.Consumer, applied); err != nil {
		return err
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	plan := s.runs.plan(k.Consumer, k.JournalID, applied)
	inRun := make([]Applied, 0, len(plan))
	for _, p := range plan {
		if p.inRun {
			inRun = append(inRun, p.Applied)
		}
	}
	values := encodeRuns(inRun)
	keys := make([][]byte, len(values))
	for i := range values {
		keys[i] = s.runs.key(k.Consumer, k.JournalID)
	}
	mark := len(keys) > 0 && !s.runs.isMarked()
	err := s.update(func(txn *badger.Txn) error {
		if err := s.saveOffset(txn, k, offset); err != nil {
			return err
		}
		if mark {
			if err := txn.Set(metaFormatKey, []byte{runsFormat}); err != nil {
				return fmt.Errorf("offsets: stage the format version: %w", err)
			}
		}
		for _, p := range plan {
			if !p.inRun {
				if err := txn.Set(p.key, encodeSeqNr(p.SeqNr)); err != nil {
					return fmt.Errorf("offsets: stage applied seqNr %d: %w", p.SeqNr, err)
				}
			}
		}
		for i, v := range values {
			if err := txn.Set(keys[i], v); err != nil {
				return fmt.Errorf("offsets: stage %d applied seqNrs: %w", len(inRun), err)
			}
		}
		return nil
	})
	if err != nil || len(plan) == 0 {
		return err
	}
	if s.runs.add(plan, keys, mark) {
		return s.fold(false)
	}
	return nil
}

// Set stores offset as the stored offset of k, exactly: an operator's move, which
// may go backwards. It replaces a pending reset.
func (s *Store) Set(k Key, offset uint64) error {
	if err := k.Validate(); err != nil {
		return err
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	now := time.Now()
	return s.update(func(txn *badger.Txn) error {
		return s.writeOffset(txn, k, func(uint64, bool) Offset {
			return Offset{Offset: offset, UpdatedAt: now}
		})
	})
}

// Reset leaves an operator's start request for k: START_POLICY_EARLIEST,
// START_POLICY_LATEST, or START_POLICY_AT_TIME with t (t must be zero for the
// others). The consumer sends it as its start policy when it next connects
// and then saves real offsets over it; a consumer still running would save
// over it sooner, so reset a stopped consumer.
//
// Reset keeps the applied seqNrs: an exactly-once consumer replaying from
// earliest drops every event it already applied, which is what exactly-once
// means. To have them delivered again, also call ClearApplied.
func (s *Store) Reset(k Key, policy streamdv1.StartPolicy, t time.Time) error {
	if err := k.Validate(); err != nil {
		return err
	}
	switch policy {
	case streamdv1.StartPolicy_START_POLICY_EARLIEST, streamdv1.StartPolicy_START_POLICY_LATEST:
		if !t.IsZero() {
			return invalidf("start time %s given with %s (only START_POLICY_AT_TIME takes a time)", t.Format(time.RFC3339Nano), policy)
		}
	case streamdv1.StartPolicy_START_POLICY_AT_TIME:
		if t.IsZero() {
			return invalidf("start time is zero with START_POLICY_AT_TIME")
		}
		if !timeInRange(t) {
			return invalidf("start time %s is outside the years 1678..2262", t.Format(time.RFC3339Nano))
		}
	default:
		return invalidf("start policy %s is not a reset (EARLIEST, LATEST or AT_TIME)", policy)
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	now := time.Now()
	return s.update(func(txn *badger.Txn) error {
		return s.writeOffset(txn, k, func(uint64, bool) Offset {
			return Offset{Start: policy, StartTime: t, UpdatedAt: now}
		})
	})
}

// Delete removes the offset stored exactly for k; ErrNotFound if there is
// none. Applied seqNrs are kept (see ClearApplied).
func (s *Store) Delete(k Key) error {
	if err := k.Validate(); err != nil {
		return err
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	key := offsetKey(k)
	return s.update(func(txn *badger.Txn) error {
		if _, err := txn.Get(key); err != nil {
			if errors.Is(err, badger.ErrKeyNotFound) {
				return fmt.Errorf("%w: no offset for %s", ErrNotFound, k)
			}
			return fmt.Errorf("offsets: read %s: %w", k, err)
		}
		return txn.Delete(key)
	})
}

// writeOffset writes the offset of k that next computes. floor is the
// offset k starts from today (the exact entry's, or the lowest of the entries
// overlapping k); hasFloor is false when there is no entry or one of them is
// a pending reset.
//
// Invariant: the entries of one (consumer, journal id) never overlap. When k
// has no exact entry, the overlapping entries are cut: their slices inside k
// are taken over by k, the parts outside k keep their offset. So every
// slice has at most one offset and a stale range never holds a later
// StartFor back. Concurrent writers stay serialisable through Badger's
// conflict detection: all writers read the entries they replace, and writers
// that create an entry also read and write the guard key of (consumer,
// journal id), so two of them cannot both insert overlapping ranges.
func (s *Store) writeOffset(txn stage, k Key, next func(floor uint64, hasFloor bool) Offset) error {
	key := offsetKey(k)
	old, found, err := getOffset(txn, key)
	if err != nil {
		return err
	}
	if found {
		if old.Pending() {
			return setOffset(txn, key, next(0, false))
		}
		return setOffset(txn, key, next(old.Offset, true))
	}

	guard := guardKey(k.Consumer, k.JournalID)
	if _, err := txn.Get(guard); err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("offsets: read guard of %s: %w", k, err)
	}
	if err := txn.Set(guard, []byte{formatVersion}); err != nil {
		return fmt.Errorf("offsets: stage guard of %s: %w", k, err)
	}
	overlapping, err := scanOverlapping(txn, k)
	if err != nil {
		return err
	}
	var floor uint64
	hasFloor := len(overlapping) > 0
	for i, e := range overlapping {
		if e.Pending() {
			hasFloor = false
		}
		if i == 0 || e.Offset.Offset < floor {
			floor = e.Offset.Offset
		}
	}
	for _, e := range overlapping {
		if err := txn.Delete(e.rawKey); err != nil {
			return fmt.Errorf("offsets: stage cut of %s: %w", e.Key, err)
		}
		rest := e.Key
		if e.Slices.First < k.Slices.First {
			rest.Slices = SliceRange{First: e.Slices.First, Last: k.Slices.First - 1}
			if err := txn.Set(offsetKey(rest), e.rawValue); err != nil {
				return fmt.Errorf("offsets: stage cut of %s: %w", e.Key, err)
			}
		}
		if e.Slices.Last > k.Slices.Last {
			rest.Slices = SliceRange{First: k.Slices.Last + 1, Last: e.Slices.Last}
			if err := txn.Set(offsetKey(rest), e.rawValue); err != nil {
				return fmt.Errorf("offsets: stage cut of %s: %w", e.Key, err)
			}
		}
	}
	if !hasFloor {
		floor = 0
	}
	return setOffset(txn, key, next(floor, hasFloor))
}

func setOffset(txn stage, key []byte, p Offset) error {
	if err := txn.Set(key, encodeOffset(p)); err != nil {
		return fmt.Errorf("offsets: stage offset: %w", err)
	}
	return nil
}

func getOffset(txn stage, key []byte) (Offset, bool, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return Offset{}, false, nil
	}
	if err != nil {
		return Offset{}, false, fmt.Errorf("offsets: read offset: %w", err)
	}
	var p Offset
	err = item.Value(func(v []byte) error {
		p, err = decodeOffset(v)
		return err
	})
	return p, err == nil, err
}

type rawEntry struct {
	Entry
	rawKey, rawValue []byte
}

// scanOverlapping returns the entries of (k.Consumer, k.JournalID) whose
// slices overlap k.Slices, in slice order.
func scanOverlapping(txn stage, k Key) ([]rawEntry, error) {
	prefix := consumerJournalPrefix(kindOffset, k.Consumer, k.JournalID)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: false})
	defer it.Close()
	var out []rawEntry
	for it.Seek(prefix); it.Valid(); it.Next() {
		item := it.Item()
		ek, err := decodeOffsetKey(item.Key())
		if err != nil {
			return nil, err
		}
		if ek.Slices.First > k.Slices.Last {
			break // keys sort by first slice
		}
		if !ek.Slices.Overlaps(k.Slices) {
			continue
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return nil, fmt.Errorf("offsets: read %s: %w", ek, err)
		}
		p, err := decodeOffset(v)
		if err != nil {
			return nil, err
		}
		out = append(out, rawEntry{Entry: Entry{Key: ek, Offset: p}, rawKey: item.KeyCopy(nil), rawValue: v})
	}
	return out, nil
}

// Get returns the offset stored exactly for k.
func (s *Store) Get(k Key) (Offset, bool, error) {
	if err := k.Validate(); err != nil {
		return Offset{}, false, err
	}
	var (
		p     Offset
		found bool
	)
	err := s.view(func(txn *badger.Txn) error {
		var err error
		p, found, err = getOffset(txn, offsetKey(k))
		return err
	})
	return p, found, err
}

// Resolution is where a consumer instance owning k.Slices starts, and why.
type Resolution struct {
	// Offset is the start; meaningful when Found.
	Offset Offset
	// Found: some stored entry covers at least one slice of the range.
	Found bool
	// Exact: the entry of exactly this range was found.
	Exact bool
	// Sources are the entries the offset was merged from.
	Sources []Entry
	// Uncovered are the parts of the range no stored entry covers (after a
	// re-split onto slices that had never been consumed). The consumer's own
	// start policy applies to them; if it starts earlier than Offset (for
	// instance EARLIEST), the consumer should start there instead.
	Uncovered []SliceRange
}

// StartFor returns where a consumer instance owning k.Slices should start:
// the entry stored exactly for k if there is one; else the merge of the
// entries of the same consumer and journal id whose slices overlap k.Slices;
// else not found.
//
// The merge loses nothing: it is the earliest of the overlapping starts, and
// the duplicates this delivers to slices that were further on are dropped by
// seqNr. Among offsets that is the lowest; a pending EARLIEST wins over
// everything; an offset or a time wins over a pending LATEST; two pending
// times give the earlier. An offset and a pending time cannot be compared
// and give ErrConflictingOffsets. This is what makes re-splitting the
// slices over more or fewer instances safe.
func (s *Store) StartFor(k Key) (Offset, bool, error) {
	r, err := s.Resolve(k)
	return r.Offset, r.Found, err
}

// Resolve is StartFor with its sources and the slices no entry covers.
func (s *Store) Resolve(k Key) (Resolution, error) {
	if err := k.Validate(); err != nil {
		return Resolution{}, err
	}
	var r Resolution
	err := s.view(func(txn *badger.Txn) error {
		p, found, err := getOffset(txn, offsetKey(k))
		if err != nil {
			return err
		}
		if found {
			r = Resolution{Offset: p, Found: true, Exact: true, Sources: []Entry{{Key: k, Offset: p}}}
			return nil
		}
		overlapping, err := scanOverlapping(txn, k)
		if err != nil {
			return err
		}
		next := k.Slices.First
		for _, e := range overlapping {
			r.Sources = append(r.Sources, e.Entry)
			if e.Slices.First > next {
				r.Uncovered = append(r.Uncovered, SliceRange{First: next, Last: e.Slices.First - 1})
			}
			next = e.Slices.Last + 1
		}
		if next <= k.Slices.Last {
			r.Uncovered = append(r.Uncovered, SliceRange{First: next, Last: k.Slices.Last})
		}
		if len(r.Sources) == 0 {
			r.Uncovered = nil
			return nil
		}
		r.Found = true
		r.Offset, err = merge(k, r.Sources)
		return err
	})
	if err != nil {
		return Resolution{}, err
	}
	return r, nil
}

func merge(k Key, entries []Entry) (Offset, error) {
	var earliest, offset, atTime, latest *Entry
	for i := range entries {
		e := &entries[i]
		switch e.Start {
		case streamdv1.StartPolicy_START_POLICY_EARLIEST:
			if earliest == nil {
				earliest = e
			}
		case streamdv1.StartPolicy_START_POLICY_LATEST:
			if latest == nil {
				latest = e
			}
		case streamdv1.StartPolicy_START_POLICY_AT_TIME:
			if atTime == nil || e.StartTime.Before(atTime.StartTime) {
				atTime = e
			}
		default:
			if offset == nil || e.Offset.Offset < offset.Offset.Offset {
				offset = e
			}
		}
	}
	switch {
	case earliest != nil:
		return earliest.Offset, nil
	case offset != nil && atTime != nil:
		return Offset{}, fmt.Errorf("%w: %s overlaps %s (%s) and %s (%s); Set or Reset the offset of %s",
			ErrConflictingOffsets, k, offset.Key, offset.Offset, atTime.Key, atTime.Offset, k)
	case offset != nil:
		return offset.Offset, nil
	case atTime != nil:
		return atTime.Offset, nil
	default:
		return latest.Offset, nil
	}
}

// List returns the stored offsets of consumer ("" = of every consumer),
// sorted by consumer, journal id and slice range.
func (s *Store) List(consumer string) ([]Entry, error) {
	prefix := keyPrefix(kindOffset, 0)
	if consumer != "" {
		if err := validateConsumer(consumer); err != nil {
			return nil, err
		}
		prefix = consumerJournalPrefix(kindOffset, consumer, nil)
	}
	var out []Entry
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Seek(prefix); it.Valid(); it.Next() {
			item := it.Item()
			k, err := decodeOffsetKey(item.Key())
			if err != nil {
				return err
			}
			var p Offset
			if err := item.Value(func(v []byte) error {
				p, err = decodeOffset(v)
				return err
			}); err != nil {
				return err
			}
			out = append(out, Entry{Key: k, Offset: p})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Key, out[j].Key
		if c := strings.Compare(a.Consumer, b.Consumer); c != 0 {
			return c < 0
		}
		if c := bytes.Compare(a.JournalID, b.JournalID); c != 0 {
			return c < 0
		}
		return a.Slices.First < b.Slices.First
	})
	return out, nil
}

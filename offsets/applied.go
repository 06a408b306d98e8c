package offsets

import (
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// AppliedSeqNr returns the highest seqNr of the entity (entityType, entityID)
// from journal journalID that consumer has applied, or 0 if none. It is one
// point read. With a txn it reads inside it (an exactly-once handler sees its
// own staged writes, and a concurrent change makes the commit conflict);
// with a nil txn it reads the committed state.
//
// SeqNrs are kept per entity, not per slice range: an entity lives in
// exactly one slice, so the value stays right when the slices are re-split.
func (s *Store) AppliedSeqNr(txn *badger.Txn, consumer string, journalID []byte, entityType, entityID string) (uint64, error) {
	if err := validateConsumer(consumer); err != nil {
		return 0, err
	}
	if err := validateJournalID(journalID); err != nil {
		return 0, err
	}
	if entityID == "" {
		return 0, invalidf("entity id is empty")
	}
	key := appliedKey(consumer, journalID, entityType, entityID)
	seqNr, err := s.readSeqNr(txn, key)
	if err != nil {
		return 0, err
	}
	return max(seqNr, s.runs.get(key)), nil
}

// OriginApplied is the last origin seqNr of an entity's events first written
// in region Origin that a consumer applied, whichever journal delivered
// them: the journals of a region whose pods share a replication each hold
// their own copy of a source event, with the same origin and origin seqNr.
type OriginApplied struct {
	Origin, EntityType, EntityID string
	SeqNr                        uint64
}

// OriginSeqNr returns the highest origin seqNr of (origin, entityType,
// entityID) that consumer applied (SetOriginSeqNrs), or 0 if none. Read
// in txn, a concurrent change makes txn's commit conflict; with a nil txn
// it reads the committed state.
func (s *Store) OriginSeqNr(txn *badger.Txn, consumer, origin, entityType, entityID string) (uint64, error) {
	key, err := checkedOriginKey(consumer, OriginApplied{origin, entityType, entityID, 1})
	if err != nil {
		return 0, err
	}
	return s.readSeqNr(txn, key)
}

// SetOriginSeqNrs stages in txn the origin seqNrs consumer applied, beside
// the offset SaveTxn stages, so that they commit with the effects.
func (s *Store) SetOriginSeqNrs(txn *badger.Txn, consumer string, applied []OriginApplied) error {
	keys := make([][]byte, len(applied))
	for i, a := range applied {
		var err error
		if keys[i], err = checkedOriginKey(consumer, a); err != nil {
			return err
		}
	}
	if s.isClosed() {
		return ErrClosed
	}
	for i, a := range applied {
		if err := txn.Set(keys[i], encodeSeqNr(a.SeqNr)); err != nil {
			return fmt.Errorf("offsets: stage origin seqNr %d: %w", a.SeqNr, err)
		}
	}
	return nil
}

// checkedOriginKey returns the key of a's origin seqNr, or why a is
// unusable.
func checkedOriginKey(consumer string, a OriginApplied) ([]byte, error) {
	if err := validateConsumer(consumer); err != nil {
		return nil, err
	}
	switch {
	case a.Origin == "":
		return nil, invalidf("origin is empty")
	case a.EntityID == "":
		return nil, invalidf("entity id is empty")
	case a.SeqNr == 0:
		return nil, invalidf("origin seqNr of %s/%s is 0 (seqNrs start at 1)", a.EntityType, a.EntityID)
	}
	key := originKey(consumer, a.Origin, a.EntityType, a.EntityID)
	if len(key) > maxKeyLen {
		return nil, invalidf("origin, entity type and id are too long (%d bytes)", len(a.Origin)+len(a.EntityType)+len(a.EntityID))
	}
	return key, nil
}

// readSeqNr reads the seqNr at key in txn, or, with a nil txn, in the
// committed state.
func (s *Store) readSeqNr(txn *badger.Txn, key []byte) (uint64, error) {
	if txn != nil {
		if s.isClosed() {
			return 0, ErrClosed
		}
		return getSeqNr(txn, key)
	}
	var seqNr uint64
	err := s.view(func(txn *badger.Txn) error {
		var err error
		seqNr, err = getSeqNr(txn, key)
		return err
	})
	return seqNr, err
}

func getSeqNr(txn *badger.Txn, key []byte) (uint64, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("offsets: read applied seqNr: %w", err)
	}
	var seqNr uint64
	err = item.Value(func(v []byte) error {
		seqNr, err = decodeSeqNr(v)
		return err
	})
	return seqNr, err
}

// clearChunk is how many seqNrs one ClearApplied transaction deletes.
const clearChunk = 1000

// ClearApplied forgets every applied seqNr of consumer for journal journalID,
// so that events replayed after a Reset are delivered again instead of being
// dropped as duplicates. It returns how many entities it forgot. It deletes
// in chunks of transactions, not atomically: run it while the consumer is
// stopped. A consumer that dedupes on origin seqNrs also needs
// ClearOriginSeqNrs for replayed copies to be applied again.
func (s *Store) ClearApplied(consumer string, journalID []byte) (int, error) {
	if err := validateConsumer(consumer); err != nil {
		return 0, err
	}
	if err := validateJournalID(journalID); err != nil {
		return 0, err
	}
	if err := s.foldNow(); err != nil {
		return 0, err
	}
	return s.clear(consumerJournalPrefix(kindApplied, consumer, journalID))
}

// ClearOriginSeqNrs forgets every origin seqNr consumer applied, from every
// journal, like ClearApplied; run it while the consumer is stopped.
func (s *Store) ClearOriginSeqNrs(consumer string) (int, error) {
	if err := validateConsumer(consumer); err != nil {
		return 0, err
	}
	return s.clear(consumerKey(kindOrigin, consumer))
}

// clear deletes the keys under prefix, in chunks of transactions, and
// returns how many.
func (s *Store) clear(prefix []byte) (int, error) {
	if !s.enter() {
		return 0, ErrClosed
	}
	defer s.leave()
	total := 0
	for {
		n := 0
		err := s.update(func(txn *badger.Txn) error {
			n = 0
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
			var keys [][]byte
			for it.Seek(prefix); it.Valid() && len(keys) < clearChunk; it.Next() {
				keys = append(keys, it.Item().KeyCopy(nil))
			}
			it.Close()
			for _, k := range keys {
				if err := txn.Delete(k); err != nil {
					return fmt.Errorf("offsets: stage delete of applied seqNr: %w", err)
				}
			}
			n = len(keys)
			return nil
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < clearChunk {
			return total, nil
		}
	}
}

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
// stopped.
func (s *Store) ClearApplied(consumer string, journalID []byte) (int, error) {
	if err := validateConsumer(consumer); err != nil {
		return 0, err
	}
	if err := validateJournalID(journalID); err != nil {
		return 0, err
	}
	if !s.enter() {
		return 0, ErrClosed
	}
	defer s.leave()
	prefix := consumerJournalPrefix(kindApplied, consumer, journalID)
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

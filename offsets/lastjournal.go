package offsets

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/dgraph-io/badger/v4"
)

// LastJournalID returns the journal id that consumer last saw at the
// producer address addr (SaveLastJournalID), or nil if none was stored.
// The consumer compares it with the journal a producer serves when it
// reconnects, to notice a journal that was replaced.
func (s *Store) LastJournalID(consumer, addr string) ([]byte, error) {
	if err := checkLastJournal(consumer, addr); err != nil {
		return nil, err
	}
	var jid []byte
	err := s.view(func(txn *badger.Txn) error {
		for _, key := range [][]byte{lastJournalKey(consumer, addr), legacyLastJournalKey(consumer, addr)} {
			item, err := txn.Get(key)
			if errors.Is(err, badger.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return fmt.Errorf("offsets: read the last journal id of %q at %s: %w", consumer, addr, err)
			}
			return item.Value(func(v []byte) error {
				if len(v) != 1+JournalIDLen || v[0] != formatVersion {
					return corruptf("last journal id of %q at %s: %d bytes, version %x (want %d bytes, version %d)",
						consumer, addr, len(v), v[:min(len(v), 1)], 1+JournalIDLen, formatVersion)
				}
				jid = append([]byte(nil), v[1:]...)
				return nil
			})
		}
		return nil
	})
	return jid, err
}

// SaveLastJournalID stores journalID as the journal consumer last saw at
// the producer address addr.
func (s *Store) SaveLastJournalID(consumer, addr string, journalID []byte) error {
	if err := checkLastJournal(consumer, addr); err != nil {
		return err
	}
	if err := validateJournalID(journalID); err != nil {
		return err
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	v := append([]byte{formatVersion}, journalID...)
	return s.update(func(txn *badger.Txn) error {
		return txn.Set(lastJournalKey(consumer, addr), v)
	})
}

func checkLastJournal(consumer, addr string) error {
	if err := validateConsumer(consumer); err != nil {
		return err
	}
	switch {
	case addr == "":
		return invalidf("producer address is empty")
	case len(addr) > MaxNameLen:
		return invalidf("producer address is %d bytes, above %d", len(addr), MaxNameLen)
	}
	return nil
}

// lastJournalKey is 0x00 'o' 'j' <consumer> <addr>.
func lastJournalKey(consumer, addr string) []byte {
	return consumerKey(kindLastJournal, consumer, addr)
}

// legacyLastJournalKey is where the consumer package wrote the record
// itself, outside the store's keys: "consumer/journal/" <decimal
// len(consumer)> ':' <consumer> '/' <addr>. It is read when the store holds
// no lastJournalKey, so that stores written so keep working.
func legacyLastJournalKey(consumer, addr string) []byte {
	b := []byte("consumer/journal/")
	b = strconv.AppendInt(b, int64(len(consumer)), 10)
	b = append(b, ':')
	b = append(b, consumer...)
	b = append(b, '/')
	return append(b, addr...)
}

package offsets

import (
	"errors"
	"fmt"
	"sort"

	"github.com/dgraph-io/badger/v4"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// FilterEntry is the stored filter of a consumer on one stream.
type FilterEntry struct {
	Consumer string
	Stream   string
	Criteria []*streamdv1.FilterCriterion
}

func validateStream(stream string) error {
	if len(stream) > MaxNameLen {
		return invalidf("stream name is %d bytes, above %d", len(stream), MaxNameLen)
	}
	return nil
}

// Filters returns the filter criteria stored for consumer on stream ("" is
// the producer's default stream). ErrNotFound means none were ever stored,
// which is different from an empty list (everything the stream offers).
// The store keeps criteria as given; expiry and matching are the filters
// package's business.
func (s *Store) Filters(consumer, stream string) ([]*streamdv1.FilterCriterion, error) {
	if err := validateConsumer(consumer); err != nil {
		return nil, err
	}
	if err := validateStream(stream); err != nil {
		return nil, err
	}
	var criteria []*streamdv1.FilterCriterion
	err := s.view(func(txn *badger.Txn) error {
		item, err := txn.Get(filtersKey(consumer, stream))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("%w: no filters for consumer %q on stream %q", ErrNotFound, consumer, stream)
		}
		if err != nil {
			return fmt.Errorf("offsets: read filters: %w", err)
		}
		return item.Value(func(v []byte) error {
			criteria, err = decodeFilters(v)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return criteria, nil
}

// SetFilters replaces the filter criteria of consumer on stream, durably, so
// that the filter survives a restart of every process. An empty list is
// stored as such (the consumer filters nothing out). The criteria are copied.
func (s *Store) SetFilters(consumer, stream string, criteria []*streamdv1.FilterCriterion) error {
	if err := validateConsumer(consumer); err != nil {
		return err
	}
	if err := validateStream(stream); err != nil {
		return err
	}
	for i, c := range criteria {
		if c == nil {
			return invalidf("criteria[%d] is nil", i)
		}
	}
	v, err := encodeFilters(criteria)
	if err != nil {
		return fmt.Errorf("offsets: encode filters: %w", err)
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	return s.update(func(txn *badger.Txn) error {
		return txn.Set(filtersKey(consumer, stream), v)
	})
}

// DeleteFilters removes the filter criteria of consumer on stream;
// ErrNotFound if there are none.
func (s *Store) DeleteFilters(consumer, stream string) error {
	if err := validateConsumer(consumer); err != nil {
		return err
	}
	if err := validateStream(stream); err != nil {
		return err
	}
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	key := filtersKey(consumer, stream)
	return s.update(func(txn *badger.Txn) error {
		if _, err := txn.Get(key); err != nil {
			if errors.Is(err, badger.ErrKeyNotFound) {
				return fmt.Errorf("%w: no filters for consumer %q on stream %q", ErrNotFound, consumer, stream)
			}
			return fmt.Errorf("offsets: read filters: %w", err)
		}
		return txn.Delete(key)
	})
}

// ListFilters returns every stored filter, sorted by consumer and stream.
func (s *Store) ListFilters() ([]FilterEntry, error) {
	prefix := keyPrefix(kindFilters, 0)
	var out []FilterEntry
	err := s.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, PrefetchValues: true, PrefetchSize: 100})
		defer it.Close()
		for it.Seek(prefix); it.Valid(); it.Next() {
			item := it.Item()
			consumer, stream, err := decodeFiltersKey(item.Key())
			if err != nil {
				return err
			}
			var criteria []*streamdv1.FilterCriterion
			if err := item.Value(func(v []byte) error {
				criteria, err = decodeFilters(v)
				return err
			}); err != nil {
				return err
			}
			out = append(out, FilterEntry{Consumer: consumer, Stream: stream, Criteria: criteria})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Consumer != out[j].Consumer {
			return out[i].Consumer < out[j].Consumer
		}
		return out[i].Stream < out[j].Stream
	})
	return out, nil
}

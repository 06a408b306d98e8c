package offsets

import (
	"bytes"
	"fmt"
	"time"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Selector picks the stored offsets of one consumer. A nil JournalID or
// Slices matches any.
type Selector struct {
	Consumer  string
	JournalID []byte
	Slices    *SliceRange
}

func (sel Selector) matches(k Key) bool {
	return k.Consumer == sel.Consumer &&
		(sel.JournalID == nil || bytes.Equal(k.JournalID, sel.JournalID)) &&
		(sel.Slices == nil || k.Slices == *sel.Slices)
}

// Change is one offset Move changed, or would change on a dry run.
type Change struct {
	Key Key
	// From is the stored offset; meaningful when Found.
	From  Offset
	Found bool
	To    Offset
}

// Move sets every stored offset sel matches to `to`: an offset when
// to.Start is START_POLICY_UNSPECIFIED (Set), otherwise a pending reset
// (Reset). When nothing matches and sel names a journal, it creates that
// offset (all slices unless sel.Slices). Without execute nothing is
// written: the changes are what Move would do. A running consumer saves its
// own offset over a moved one, so stop it first.
func (s *Store) Move(sel Selector, to Offset, execute bool) ([]Change, error) {
	if sel.Consumer == "" {
		return nil, fmt.Errorf("offsets: move: %w: consumer name is empty", ErrInvalid)
	}
	entries, err := s.List(sel.Consumer)
	if err != nil {
		return nil, err
	}
	var changes []Change
	for _, e := range entries {
		if sel.matches(e.Key) {
			changes = append(changes, Change{Key: e.Key, From: e.Offset, Found: true, To: to})
		}
	}
	if len(changes) == 0 {
		if sel.JournalID == nil {
			return nil, fmt.Errorf("%w: no stored offset matches consumer %q: name a journal id to create one", ErrNotFound, sel.Consumer)
		}
		k := Key{Consumer: sel.Consumer, JournalID: sel.JournalID, Slices: AllSlices}
		if sel.Slices != nil {
			k.Slices = *sel.Slices
		}
		changes = append(changes, Change{Key: k, To: to})
	}
	for _, c := range changes {
		if err := c.Key.Validate(); err != nil {
			return nil, err
		}
	}
	if !execute {
		return changes, nil
	}
	for _, c := range changes {
		if to.Start == streamdv1.StartPolicy_START_POLICY_UNSPECIFIED {
			err = s.Set(c.Key, to.Offset)
		} else {
			err = s.Reset(c.Key, to.Start, to.StartTime)
		}
		if err != nil {
			return nil, err
		}
	}
	return changes, nil
}

// ResolveSelected is Resolve for the key sel names: sel.JournalID, or the
// one journal the consumer has offsets in, and sel.Slices or all slices.
func (s *Store) ResolveSelected(sel Selector) (Key, Resolution, error) {
	k := Key{Consumer: sel.Consumer, JournalID: sel.JournalID, Slices: AllSlices}
	if sel.Slices != nil {
		k.Slices = *sel.Slices
	}
	if k.JournalID == nil {
		entries, err := s.List(k.Consumer)
		if err != nil {
			return k, Resolution{}, err
		}
		for _, e := range entries {
			if k.JournalID != nil && !bytes.Equal(k.JournalID, e.JournalID) {
				return k, Resolution{}, fmt.Errorf("%w: consumer %q has offsets in several journals: name one", ErrInvalid, k.Consumer)
			}
			k.JournalID = e.JournalID
		}
		if k.JournalID == nil {
			return k, Resolution{}, fmt.Errorf("%w: no stored offset for consumer %q", ErrNotFound, k.Consumer)
		}
	}
	r, err := s.Resolve(k)
	return k, r, err
}

// Proto converts e to its wire form (admin API).
func (e Entry) Proto() *streamdv1.StoredOffset {
	p := &streamdv1.StoredOffset{
		Consumer:    e.Consumer,
		JournalId:   e.JournalID,
		Slices:      e.Slices.Proto(),
		Offset:      e.Offset.Offset,
		StartPolicy: e.Start,
	}
	if !e.StartTime.IsZero() {
		p.StartTimeUnixNano = e.StartTime.UnixNano()
	}
	if !e.UpdatedAt.IsZero() {
		p.UpdatedAtUnixNano = e.UpdatedAt.UnixNano()
	}
	return p
}

// EntryFromProto converts and validates a StoredOffset of the admin API.
func EntryFromProto(p *streamdv1.StoredOffset) (Entry, error) {
	slices, err := SliceRangeFromProto(p.GetSlices())
	if err != nil {
		return Entry{}, err
	}
	e := Entry{
		Key:    Key{Consumer: p.GetConsumer(), JournalID: p.GetJournalId(), Slices: slices},
		Offset: Offset{Offset: p.GetOffset(), Start: p.GetStartPolicy()},
	}
	if t := p.GetStartTimeUnixNano(); t != 0 {
		e.StartTime = time.Unix(0, t)
	}
	if t := p.GetUpdatedAtUnixNano(); t != 0 {
		e.UpdatedAt = time.Unix(0, t)
	}
	return e, e.Key.Validate()
}

package crdt

import (
	"maps"
	"slices"
)

// ORSet is an add-wins observed-remove set of strings. Each add carries a
// fresh tag; an element is in the set while it has a tag that no remove of it
// has named. The zero value is an empty set.
type ORSet struct {
	live map[string]tagSet // tags of each element present, never empty
	// removed holds the tags each remove named, so that a remove delivered
	// before the add it observed still removes that add.
	removed map[string]tagSet
}

type tagSet = map[Dot]struct{}

// ElementAdd is the op that adds Element with a tag no other add has.
type ElementAdd struct {
	Element string `json:"element"`
	Tag     Dot    `json:"tag"`
}

// ElementRemove is the op that removes Element: the tags of it that the
// removing region had observed, and only those.
type ElementRemove struct {
	Element string `json:"element"`
	Tags    []Dot  `json:"tags"`
}

// Contains reports whether element is in the set.
func (s *ORSet) Contains(element string) bool { return len(s.live[element]) > 0 }

// Elements returns the elements, sorted.
func (s *ORSet) Elements() []string { return slices.Sorted(maps.Keys(s.live)) }

// Len is the number of elements.
func (s *ORSet) Len() int { return len(s.live) }

// AddOp returns the op that adds element with tag, which must be unique to
// this add (see Dot). It does not change s.
func (s *ORSet) AddOp(element string, tag Dot) ElementAdd {
	return ElementAdd{Element: element, Tag: tag}
}

// RemoveOp returns the op that removes element as s has observed it: adds
// that s has not seen, made concurrently elsewhere, survive it. It does not
// change s.
func (s *ORSet) RemoveOp(element string) ElementRemove {
	tags := slices.SortedFunc(maps.Keys(s.live[element]), compareDots)
	return ElementRemove{Element: element, Tags: tags}
}

// ApplyAdd receives an add; a tag already removed stays removed.
func (s *ORSet) ApplyAdd(op ElementAdd) {
	if _, gone := s.removed[op.Element][op.Tag]; gone {
		return
	}
	s.live = addTag(s.live, op.Element, op.Tag)
}

// ApplyRemove receives a remove: the tags it names are removed for good.
func (s *ORSet) ApplyRemove(op ElementRemove) {
	for _, tag := range op.Tags {
		s.removed = addTag(s.removed, op.Element, tag)
		if t := s.live[op.Element]; t != nil {
			delete(t, tag)
			if len(t) == 0 {
				delete(s.live, op.Element)
			}
		}
	}
}

func addTag(m map[string]tagSet, element string, tag Dot) map[string]tagSet {
	if m == nil {
		m = make(map[string]tagSet)
	}
	t := m[element]
	if t == nil {
		t = make(tagSet)
		m[element] = t
	}
	t[tag] = struct{}{}
	return m
}

// Merge receives another replica's adds and removes.
func (s *ORSet) Merge(o *ORSet) {
	for element, tags := range o.removed {
		s.ApplyRemove(ElementRemove{Element: element, Tags: slices.Collect(maps.Keys(tags))})
	}
	for element, tags := range o.live {
		for tag := range tags {
			s.ApplyAdd(ElementAdd{Element: element, Tag: tag})
		}
	}
}

// Equal reports whether both sets hold the same live tags and tombstones.
func (s *ORSet) Equal(o *ORSet) bool {
	return maps.EqualFunc(s.live, o.live, maps.Equal[tagSet]) &&
		maps.EqualFunc(s.removed, o.removed, maps.Equal[tagSet])
}

// Clone returns an independent copy.
func (s *ORSet) Clone() *ORSet {
	return &ORSet{live: cloneTags(s.live), removed: cloneTags(s.removed)}
}

func cloneTags(m map[string]tagSet) map[string]tagSet {
	if m == nil {
		return nil
	}
	c := make(map[string]tagSet, len(m))
	for element, tags := range m {
		c[element] = maps.Clone(tags)
	}
	return c
}

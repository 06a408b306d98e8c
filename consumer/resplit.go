package consumer

import (
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// mine reports whether e is in this follower's slices and not applied
// before a re-split (at or below the offset of its slice's piece). A
// replayed event is not dropped by offset with NoDedupe: the handler drops
// what it holds itself, and a replay answers a gap that the offset of its
// piece passed (a replication holds back an entity's events after a gap
// but moves its offset).
func (f *follower) mine(e *streamdv1.Event, replay bool) bool {
	if !f.slices.Contains(e.GetSlice()) {
		return false
	}
	if replay && f.c.opts.NoDedupe {
		return true
	}
	for _, p := range f.parts {
		if p.Slices.Contains(e.GetSlice()) {
			return e.GetOffset() > p.Offset.Offset
		}
	}
	return true
}

// streamSlices splits r into n contiguous ranges (Options.Streams) whose
// sizes differ by at most one slice; n is at most r.Len().
func streamSlices(r offsets.SliceRange, n int) []offsets.SliceRange {
	out := make([]offsets.SliceRange, n)
	size := r.Len()
	for k := range n {
		out[k] = offsets.SliceRange{First: r.First + uint32(k*size/n), Last: r.First + uint32((k+1)*size/n) - 1}
	}
	return out
}

// pieces splits own, after a re-split, into the stored entries that cover
// it (clipped to own) and the parts none covers (offset 0).
func pieces(own offsets.SliceRange, r offsets.Resolution) []offsets.Entry {
	var out []offsets.Entry
	for _, e := range r.Sources {
		e.Slices = offsets.SliceRange{First: max(e.Slices.First, own.First), Last: min(e.Slices.Last, own.Last)}
		out = append(out, e)
	}
	for _, u := range r.Uncovered {
		out = append(out, offsets.Entry{Key: offsets.Key{Slices: u}})
	}
	return out
}

// savedKeys are the keys under which the offset pos is saved: the
// follower's own range, or its pieces while pos is below one of them (the
// store keeps the higher of pos and a piece's offset). Once pos passes
// them all, the own range is saved (the store merges the pieces into it)
// and the pieces are forgotten.
func (f *follower) savedKeys(pos uint64) []offsets.Key {
	var keys []offsets.Key
	for _, p := range f.parts {
		if p.Offset.Offset > pos {
			keys = make([]offsets.Key, len(f.parts))
			for i, p := range f.parts {
				keys[i] = f.key(f.journalID)
				keys[i].Slices = p.Slices
			}
			return keys
		}
	}
	return []offsets.Key{f.key(f.journalID)}
}

// saved notes that the offset was saved under keys.
func (f *follower) saved(keys []offsets.Key) {
	if len(keys) == 1 && keys[0].Slices == f.slices {
		f.parts = nil
	}
}

// startKeys are the keys under which a stream started from a policy stores
// its start off: the own range, or, after a re-split, the pieces no entry
// covered (the others keep their offsets, which are above off).
func (f *follower) startKeys(jid []byte, off uint64) []offsets.Key {
	if f.parts == nil {
		return []offsets.Key{f.key(jid)}
	}
	var keys []offsets.Key
	for i, p := range f.parts {
		if p.Offset.Offset == 0 {
			k := f.key(jid)
			k.Slices = p.Slices
			keys = append(keys, k)
			f.parts[i].Offset.Offset = off
		}
	}
	return keys
}

package group

import (
	"fmt"
	"sort"
	"strings"

	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
)

// MaxMembers is the most members that own slices; the others (the last in
// identity order) stand by. With more than 512 members the first would own
// the single slice 0, which offsets.SliceRange cannot tell from "all".
const MaxMembers = journal.Slices / 2

// None is the empty slice range (Len 0): what a member owns before it has
// taken anything.
var None = offsets.SliceRange{First: 1, Last: 0}

// Assign returns the slice range of the member at index k of n members
// sorted by identity: [k*1024/n, (k+1)*1024/n - 1], or None for k at or
// past MaxMembers. The n ranges are contiguous, disjoint and cover 0..1023.
func Assign(k, n int) offsets.SliceRange {
	if k < 0 || k >= n || k >= MaxMembers {
		return None
	}
	n = min(n, MaxMembers)
	return offsets.SliceRange{First: uint32(k * journal.Slices / n), Last: uint32((k+1)*journal.Slices/n - 1)}
}

func isNone(r offsets.SliceRange) bool { return r.Len() == 0 }

// intersect is a ∩ b (None if they do not overlap).
func intersect(a, b offsets.SliceRange) offsets.SliceRange {
	if isNone(a) || isNone(b) || !a.Overlaps(b) {
		return None
	}
	return offsets.SliceRange{First: max(a.First, b.First), Last: min(a.Last, b.Last)}
}

// subtract is a \ b: up to two ranges.
func subtract(a, b offsets.SliceRange) []offsets.SliceRange {
	if isNone(a) {
		return nil
	}
	if isNone(b) || !a.Overlaps(b) {
		return []offsets.SliceRange{a}
	}
	var out []offsets.SliceRange
	if a.First < b.First {
		out = append(out, offsets.SliceRange{First: a.First, Last: b.First - 1})
	}
	if a.Last > b.Last {
		out = append(out, offsets.SliceRange{First: b.Last + 1, Last: a.Last})
	}
	return out
}

// within reports whether a ⊆ b.
func within(a, b offsets.SliceRange) bool {
	return isNone(a) || !isNone(b) && b.First <= a.First && a.Last <= b.Last
}

// formatRange is "first-last", or "" for None.
func formatRange(r offsets.SliceRange) string {
	if isNone(r) {
		return ""
	}
	return r.String()
}

// parseRange reads formatRange.
func parseRange(s string) (offsets.SliceRange, error) {
	if s == "" {
		return None, nil
	}
	r, err := offsets.ParseSliceRange(s)
	if err != nil {
		return None, fmt.Errorf("group: %w", err)
	}
	return r, nil
}

// formatRanges is "first-last,first-last,...".
func formatRanges(rs []offsets.SliceRange) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// parseRanges reads formatRanges: at least one range, sorted and
// disjoint; adjacent ones are merged.
func parseRanges(v string) ([]offsets.SliceRange, error) {
	var out []offsets.SliceRange
	for _, part := range strings.Split(v, ",") {
		r, err := offsets.ParseSliceRange(part)
		if err != nil {
			return nil, err
		}
		if n := len(out); n > 0 && out[n-1].Last >= r.First {
			return nil, fmt.Errorf("range %q overlaps or precedes %s", part, out[n-1])
		}
		out = append(out, r)
	}
	return mergeRanges(out), nil
}

// mergeRanges sorts rs and merges the ranges that overlap or touch.
func mergeRanges(rs []offsets.SliceRange) []offsets.SliceRange {
	sort.Slice(rs, func(i, j int) bool { return rs[i].First < rs[j].First })
	var out []offsets.SliceRange
	for _, r := range rs {
		if isNone(r) {
			continue
		}
		if n := len(out); n > 0 && r.First <= out[n-1].Last+1 {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

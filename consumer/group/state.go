package group

import (
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// The keys of the group's ConfigMap "<group>-positions".
const (
	ownerKeyPrefix   = "owner."   // owner.<identity>: "<first-last> <lease uid>"
	journalKeyPrefix = "journal." // journal.<journal id hex>: "<first-last>=<offset>,..."
	holdsKeyPrefix   = "holds."   // holds.<identity>: "<first-last>,...", sorted, disjoint
)

// owner is a member's claim on slices, made by the incarnation whose lease
// has uid: it is void once that lease is gone.
type owner struct {
	slices offsets.SliceRange
	uid    types.UID
}

// fragment is a handed-off stored offset: every event of slices at or
// below offset.Offset was applied, none after it (or a pending reset).
type fragment struct {
	slices offsets.SliceRange
	offset offsets.Offset
}

// state is the decoded ConfigMap: who owns which slices, the offsets per
// producer journal, and (Options.Holds) whose journal holds which slices'
// history. They change in one compare-and-swap, so a release writes its
// offsets and gives its slices up atomically, a member writes offsets only
// for slices it still owns, and holds only slices it owns.
type state struct {
	owners  map[string]owner                // by identity
	offsets map[string][]fragment           // by journal id in hex, sorted, disjoint
	holds   map[string][]offsets.SliceRange // by identity, sorted, disjoint, merged; none across identities overlap
}

func decodeState(cm *corev1.ConfigMap) (*state, error) {
	s := &state{owners: map[string]owner{}, offsets: map[string][]fragment{}, holds: map[string][]offsets.SliceRange{}}
	if cm == nil {
		return s, nil
	}
	for k, v := range cm.Data {
		switch {
		case strings.HasPrefix(k, ownerKeyPrefix):
			rs, uid, ok := strings.Cut(v, " ")
			r, err := parseRange(rs)
			if !ok || err != nil || isNone(r) || uid == "" {
				return nil, fmt.Errorf("group: ConfigMap %s: %s is %q, want \"first-last uid\"", cm.Name, k, v)
			}
			s.owners[strings.TrimPrefix(k, ownerKeyPrefix)] = owner{slices: r, uid: types.UID(uid)}
		case strings.HasPrefix(k, journalKeyPrefix):
			jid := strings.TrimPrefix(k, journalKeyPrefix)
			if b, err := hex.DecodeString(jid); err != nil || len(b) != offsets.JournalIDLen {
				return nil, fmt.Errorf("group: ConfigMap %s: key %s does not name a journal id (%d hex bytes)", cm.Name, k, offsets.JournalIDLen)
			}
			frags, err := decodeFragments(v)
			if err != nil {
				return nil, fmt.Errorf("group: ConfigMap %s: %s: %w", cm.Name, k, err)
			}
			s.offsets[jid] = frags
		case strings.HasPrefix(k, holdsKeyPrefix):
			rs, err := parseRanges(v)
			if err != nil {
				return nil, fmt.Errorf("group: ConfigMap %s: %s is %q: %w (want sorted, disjoint ranges \"first-last,...\")", cm.Name, k, v, err)
			}
			s.holds[strings.TrimPrefix(k, holdsKeyPrefix)] = rs
		}
	}
	if err := s.checkHolds(); err != nil {
		return nil, fmt.Errorf("group: ConfigMap %s: %w", cm.Name, err)
	}
	return s, nil
}

// checkHolds fails if two members hold one slice.
func (s *state) checkHolds() error {
	type held struct {
		id string
		r  offsets.SliceRange
	}
	var all []held
	for id, rs := range s.holds {
		for _, r := range rs {
			all = append(all, held{id, r})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].r.First != all[j].r.First {
			return all[i].r.First < all[j].r.First
		}
		return all[i].id < all[j].id
	})
	for i := 1; i < len(all); i++ {
		if a, b := all[i-1], all[i]; a.r.Overlaps(b.r) {
			return fmt.Errorf("%s%s (%s) and %s%s (%s) overlap: a slice is held by one member at most (an operator deletes the key of the member that does not hold it)", holdsKeyPrefix, a.id, a.r, holdsKeyPrefix, b.id, b.r)
		}
	}
	return nil
}

// hold makes id the holder of r, and no other member; it reports whether
// that changed anything.
func (s *state) hold(id string, r offsets.SliceRange) bool {
	changed := false
	for other, rs := range s.holds {
		if other == id {
			continue
		}
		var rest []offsets.SliceRange
		for _, h := range rs {
			rest = append(rest, subtract(h, r)...)
		}
		if slices.Equal(rest, rs) {
			continue
		}
		changed = true
		if len(rest) == 0 {
			delete(s.holds, other)
		} else {
			s.holds[other] = rest
		}
	}
	mine := mergeRanges(append(slices.Clone(s.holds[id]), r))
	if !slices.Equal(mine, s.holds[id]) {
		changed = true
		s.holds[id] = mine
	}
	return changed
}

// encode writes s into data (keys of the group's own prefixes only).
func (s *state) encode(data map[string]string) map[string]string {
	if data == nil {
		data = map[string]string{}
	}
	for k := range data {
		if strings.HasPrefix(k, ownerKeyPrefix) || strings.HasPrefix(k, journalKeyPrefix) || strings.HasPrefix(k, holdsKeyPrefix) {
			delete(data, k)
		}
	}
	for id, o := range s.owners {
		data[ownerKeyPrefix+id] = o.slices.String() + " " + string(o.uid)
	}
	for jid, frags := range s.offsets {
		parts := make([]string, len(frags))
		for i, f := range frags {
			parts[i] = f.slices.String() + "=" + formatOffset(f.offset)
		}
		data[journalKeyPrefix+jid] = strings.Join(parts, ",")
	}
	for id, rs := range s.holds {
		if len(rs) > 0 {
			data[holdsKeyPrefix+id] = formatRanges(rs)
		}
	}
	return data
}

func decodeFragments(v string) ([]fragment, error) {
	var out []fragment
	for _, part := range strings.Split(v, ",") {
		rs, ps, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("fragment %q: want first-last=offset", part)
		}
		r, err := offsets.ParseSliceRange(rs)
		if err != nil {
			return nil, fmt.Errorf("fragment %q: %w", part, err)
		}
		p, err := parseOffset(ps)
		if err != nil {
			return nil, fmt.Errorf("fragment %q: %w", part, err)
		}
		if n := len(out); n > 0 && out[n-1].slices.Last >= r.First {
			return nil, fmt.Errorf("fragment %q overlaps or precedes %s", part, out[n-1].slices)
		}
		out = append(out, fragment{slices: r, offset: p})
	}
	return out, nil
}

// formatOffset is an offset in decimal, or a pending operator reset:
// "earliest", "latest", "at:<RFC3339Nano>".
func formatOffset(p offsets.Offset) string {
	switch p.Start {
	case streamdv1.StartPolicy_START_POLICY_EARLIEST:
		return "earliest"
	case streamdv1.StartPolicy_START_POLICY_LATEST:
		return "latest"
	case streamdv1.StartPolicy_START_POLICY_AT_TIME:
		return "at:" + p.StartTime.UTC().Format(time.RFC3339Nano)
	}
	return strconv.FormatUint(p.Offset, 10)
}

func parseOffset(s string) (offsets.Offset, error) {
	switch {
	case s == "earliest":
		return offsets.Offset{Start: streamdv1.StartPolicy_START_POLICY_EARLIEST}, nil
	case s == "latest":
		return offsets.Offset{Start: streamdv1.StartPolicy_START_POLICY_LATEST}, nil
	case strings.HasPrefix(s, "at:"):
		t, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(s, "at:"))
		if err != nil {
			return offsets.Offset{}, fmt.Errorf("offset %q: %w", s, err)
		}
		return offsets.Offset{Start: streamdv1.StartPolicy_START_POLICY_AT_TIME, StartTime: t}, nil
	}
	off, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return offsets.Offset{}, fmt.Errorf("offset %q: want an offset, earliest, latest or at:<time>", s)
	}
	return offsets.Offset{Offset: off}, nil
}

// put writes f for journal jid: the fragments it overlaps keep only their
// slices outside f.
func (s *state) put(jid string, f fragment) {
	var out []fragment
	for _, old := range s.offsets[jid] {
		for _, rest := range subtract(old.slices, f.slices) {
			out = append(out, fragment{slices: rest, offset: old.offset})
		}
	}
	out = append(out, f)
	sort.Slice(out, func(i, j int) bool { return out[i].slices.First < out[j].slices.First })
	s.offsets[jid] = out
}

// within returns the fragments of every journal overlapping r, clipped to
// r, by journal id.
func (s *state) within(r offsets.SliceRange) map[string][]fragment {
	out := map[string][]fragment{}
	for jid, frags := range s.offsets {
		for _, f := range frags {
			if c := intersect(f.slices, r); !isNone(c) {
				out[jid] = append(out[jid], fragment{slices: c, offset: f.offset})
			}
		}
	}
	return out
}

// exportOffsets puts the offsets of consumer stored in store for the
// slices r into s: what a member hands off (or publishes while it runs).
func exportOffsets(s *state, store *offsets.Store, consumer string, r offsets.SliceRange) error {
	entries, err := store.List(consumer)
	if err != nil {
		return fmt.Errorf("group: read the offsets to hand off: %w", err)
	}
	for _, e := range entries {
		if c := intersect(e.Slices, r); !isNone(c) {
			s.put(hex.EncodeToString(e.JournalID), fragment{slices: c, offset: e.Offset})
		}
	}
	return nil
}

// importOffsets stores the handed-off fragments as the offsets of
// consumer, each exactly under its own slice range (Set, or Reset for a
// pending reset), so that a consumer over a larger range starts from the
// lowest and skips, per fragment, what was applied before.
func importOffsets(store *offsets.Store, consumer string, byJournal map[string][]fragment) error {
	for jid, frags := range byJournal {
		id, err := hex.DecodeString(jid)
		if err != nil {
			return fmt.Errorf("group: journal id %q: %w", jid, err)
		}
		for _, f := range frags {
			k := offsets.Key{Consumer: consumer, JournalID: id, Slices: f.slices}
			if f.offset.Pending() {
				err = store.Reset(k, f.offset.Start, f.offset.StartTime)
			} else {
				err = store.Set(k, f.offset.Offset)
			}
			if err != nil {
				return fmt.Errorf("group: import the offset of %s: %w", k, err)
			}
		}
	}
	return nil
}

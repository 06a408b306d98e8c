package offsets

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"google.golang.org/protobuf/proto"
)

const (
	unspecified = streamdv1.StartPolicy_START_POLICY_UNSPECIFIED
	earliest    = streamdv1.StartPolicy_START_POLICY_EARLIEST
	latest      = streamdv1.StartPolicy_START_POLICY_LATEST
	atTime      = streamdv1.StartPolicy_START_POLICY_AT_TIME
)

func TestSaveGetRoundTrip(t *testing.T) {
	s := openStore(t, t.TempDir())
	tests := []struct {
		name   string
		key    Key
		offset uint64
	}{
		{"nothing processed yet", key(t, "billing", 1, "0-1023"), 0},
		{"all slices", key(t, "billing", 2, "0-1023"), 500},
		{"one slice", key(t, "billing", 4, "7"), 1},
		{"max offset", key(t, "audit", 1, "512-1023"), ^uint64(0)},
		{"long name", Key{Consumer: strings.Repeat("c", MaxNameLen), JournalID: jid(9), Slices: AllSlices}, 42},
		{"name with separators", Key{Consumer: "a/b\x00c", JournalID: jid(9), Slices: AllSlices}, 43},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now()
			mustSave(t, s, tt.key, tt.offset)
			p := mustGet(t, s, tt.key)
			if p.Offset != tt.offset || p.Start != unspecified || p.Pending() || !p.StartTime.IsZero() {
				t.Errorf("Get = %+v, want offset %d", p, tt.offset)
			}
			if p.UpdatedAt.Before(before.Add(-time.Second)) || p.UpdatedAt.After(time.Now().Add(time.Second)) {
				t.Errorf("UpdatedAt = %v, not around now", p.UpdatedAt)
			}
			if pp := p.Proto(tt.key.JournalID); pp.GetOffset() != tt.offset || string(pp.GetJournalId()) != string(tt.key.JournalID) {
				t.Errorf("Proto = %v", pp)
			}
		})
	}
	// Neighbours of a stored key are distinct keys.
	for _, k := range []Key{key(t, "billing", 3, "0-1023"), key(t, "billin", 1, "0-1023"), key(t, "billing", 1, "0-1022")} {
		if p, found, err := s.Get(k); err != nil || found {
			t.Errorf("Get(%s) = %v, %v, %v; want not found", k, p, found, err)
		}
	}
}

func TestSaveTxnIsAtomicWithCallersWrites(t *testing.T) {
	s := openStore(t, t.TempDir())
	k := key(t, "projection", 1, "0-1023")
	applied := []Applied{{"order", "o-1", 3}, {"order", "o-2", 1}}

	// Committed with the caller's own write.
	err := s.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte("state/o-1"), []byte("3 events")); err != nil {
			return err
		}
		return s.SaveTxn(txn, k, 10, applied)
	})
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if p := mustGet(t, s, k); p.Offset != 10 {
		t.Errorf("offset = %d, want 10", p.Offset)
	}
	if n := mustApplied(t, s, "projection", 1, "order", "o-1"); n != 3 {
		t.Errorf("applied o-1 = %d, want 3", n)
	}
	err = s.DB().View(func(txn *badger.Txn) error {
		_, err := txn.Get([]byte("state/o-1"))
		return err
	})
	if err != nil {
		t.Errorf("caller's write: %v", err)
	}

	before := dump(t, s.DB())
	more := []Applied{{"order", "o-1", 4}, {"order", "o-3", 1}}

	// A handler error after SaveTxn discards everything.
	handlerErr := errors.New("handler failed")
	err = s.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte("state/o-1"), []byte("4 events")); err != nil {
			return err
		}
		if err := s.SaveTxn(txn, k, 20, more); err != nil {
			return err
		}
		return handlerErr
	})
	if err != handlerErr {
		t.Fatalf("Update = %v, want the handler's error unchanged", err)
	}
	if after := dump(t, s.DB()); !maps.Equal(before, after) {
		t.Errorf("failed Update changed the DB:\nbefore %v\nafter  %v", before, after)
	}

	// A caller's own transaction that is discarded leaves nothing.
	txn := s.DB().NewTransaction(true)
	if err := s.SaveTxn(txn, k, 30, more); err != nil {
		t.Fatalf("SaveTxn: %v", err)
	}
	// Inside the transaction the staged values are visible.
	if n, err := s.AppliedSeqNr(txn, "projection", jid(1), "order", "o-1"); err != nil || n != 4 {
		t.Errorf("AppliedSeqNr in txn = %d, %v; want 4", n, err)
	}
	txn.Discard()
	if after := dump(t, s.DB()); !maps.Equal(before, after) {
		t.Errorf("discarded txn changed the DB")
	}
	if n := mustApplied(t, s, "projection", 1, "order", "o-1"); n != 3 {
		t.Errorf("applied o-1 = %d after discard, want 3", n)
	}
}

func TestSaveNeverLowersSetDoes(t *testing.T) {
	type step struct {
		op     string // "save" or "set"
		offset uint64
		want   uint64
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"save forward", []step{{"save", 5, 5}, {"save", 9, 9}, {"save", 9, 9}}},
		{"save backward ignored", []step{{"save", 9, 9}, {"save", 5, 9}, {"save", 0, 9}}},
		{"set backward", []step{{"save", 9, 9}, {"set", 2, 2}, {"save", 3, 3}}},
		{"set forward", []step{{"save", 9, 9}, {"set", 100, 100}, {"save", 50, 100}}},
		{"set to zero", []step{{"save", 9, 9}, {"set", 0, 0}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			k := key(t, fmt.Sprintf("c%d", i), 1, "0-1023")
			for _, st := range tt.steps {
				var err error
				if st.op == "save" {
					err = s.Save(k, st.offset, nil)
				} else {
					err = s.Set(k, st.offset)
				}
				if err != nil {
					t.Fatalf("%s(%d): %v", st.op, st.offset, err)
				}
				if p := mustGet(t, s, k); p.Offset != st.want || p.Pending() {
					t.Fatalf("after %s(%d): %v, want offset %d", st.op, st.offset, p, st.want)
				}
			}
		})
	}
}

func TestAppliedSeqNrs(t *testing.T) {
	s := openStore(t, t.TempDir())
	k := key(t, "c", 1, "0-1023")
	mustSave(t, s, k, 1, Applied{"order", "a", 5}, Applied{"order", "b", 2}, Applied{"order", "d", 4}, Applied{"order", "e", 6}, Applied{"order", "e", 2})
	// The highest seqNr of an entity wins, in one batch and across saves.
	mustSave(t, s, k, 2, Applied{"order", "a", 6}, Applied{"order", "b", 7}, Applied{"order", "b", 4}, Applied{"order", "d", 3})
	for _, tt := range []struct {
		entityType, entityID string
		want                 uint64
	}{{"order", "a", 6}, {"order", "b", 7}, {"order", "d", 4}, {"order", "e", 6}, {"order", "c", 0}, {"invoice", "a", 0}} {
		if got := mustApplied(t, s, "c", 1, tt.entityType, tt.entityID); got != tt.want {
			t.Errorf("applied %s/%s = %d, want %d", tt.entityType, tt.entityID, got, tt.want)
		}
	}
	if got := mustApplied(t, s, "c", 2, "order", "a"); got != 0 {
		t.Errorf("other journal: applied = %d, want 0", got)
	}
	if got := mustApplied(t, s, "d", 1, "order", "a"); got != 0 {
		t.Errorf("other consumer: applied = %d, want 0", got)
	}
}

func TestResetThenSave(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 123, time.UTC)
	tests := []struct {
		policy streamdv1.StartPolicy
		t      time.Time
	}{{earliest, time.Time{}}, {latest, time.Time{}}, {atTime, at}, {atTime, time.Unix(0, 0)}}
	for _, tt := range tests {
		t.Run(tt.policy.String(), func(t *testing.T) {
			s := openStore(t, t.TempDir())
			k := key(t, "c", 1, "0-1023")
			mustSave(t, s, k, 700, Applied{"order", "a", 9})
			if err := s.Reset(k, tt.policy, tt.t); err != nil {
				t.Fatalf("Reset: %v", err)
			}
			p := mustGet(t, s, k)
			if !p.Pending() || p.Start != tt.policy || !p.StartTime.Equal(tt.t) || p.Proto(k.JournalID) != nil {
				t.Fatalf("after Reset: %+v", p)
			}
			if sp, found, err := s.StartFor(k); err != nil || !found || sp.Start != tt.policy {
				t.Fatalf("StartFor after Reset = %v, %v, %v", sp, found, err)
			}
			// Reset keeps the applied seqNrs.
			if n := mustApplied(t, s, "c", 1, "order", "a"); n != 9 {
				t.Errorf("applied after Reset = %d, want 9", n)
			}
			// The consumer resolved the reset to offset 3 and saves: it replaces the
			// pending reset even though 3 < 700.
			mustSave(t, s, k, 3)
			if p := mustGet(t, s, k); p.Pending() || p.Offset != 3 {
				t.Fatalf("after Save: %v, want offset 3", p)
			}
		})
	}
}

func TestClearApplied(t *testing.T) {
	s := openStore(t, t.TempDir())
	k := key(t, "c", 1, "0-1023")
	var applied []Applied
	const n = clearChunk*2 + 17
	for i := range n {
		applied = append(applied, Applied{"order", fmt.Sprint(i), 1})
		if len(applied) == 500 || i == n-1 {
			mustSave(t, s, k, uint64(i), applied...)
			applied = nil
		}
	}
	mustSave(t, s, key(t, "c", 2, "0-1023"), 1, Applied{"order", "0", 5})
	mustSave(t, s, key(t, "c2", 1, "0-1023"), 1, Applied{"order", "0", 6})

	cleared, err := s.ClearApplied("c", jid(1))
	if err != nil || cleared != n {
		t.Fatalf("ClearApplied = %d, %v; want %d", cleared, err, n)
	}
	for _, id := range []string{"0", "1000", fmt.Sprint(n - 1)} {
		if got := mustApplied(t, s, "c", 1, "order", id); got != 0 {
			t.Errorf("applied %s after clear = %d", id, got)
		}
	}
	if got := mustApplied(t, s, "c", 2, "order", "0"); got != 5 {
		t.Errorf("other journal cleared: %d", got)
	}
	if got := mustApplied(t, s, "c2", 1, "order", "0"); got != 6 {
		t.Errorf("other consumer cleared: %d", got)
	}
	if p := mustGet(t, s, k); p.Offset != n-1 {
		t.Errorf("offset changed by ClearApplied: %v", p)
	}
}

// entry is a compact description of a stored offset for table tests:
// "0-511@300", "0-1023:EARLIEST", "0-255:AT_TIME".
func describe(e Entry) string {
	switch e.Start {
	case unspecified:
		return fmt.Sprintf("%s@%d", e.Slices, e.Offset.Offset)
	case atTime:
		return fmt.Sprintf("%s:%d", e.Slices, e.StartTime.Unix())
	default:
		return fmt.Sprintf("%s:%s", e.Slices, strings.TrimPrefix(e.Start.String(), "START_POLICY_"))
	}
}

func TestStartForResplit(t *testing.T) {
	type op struct {
		kind   string // "save", "set", "reset"
		slices string
		offset uint64
		policy streamdv1.StartPolicy
		t      int64 // unix seconds with AT_TIME
	}
	save := func(slices string, offset uint64) op { return op{kind: "save", slices: slices, offset: offset} }
	reset := func(slices string, p streamdv1.StartPolicy, t int64) op {
		return op{kind: "reset", slices: slices, policy: p, t: t}
	}
	type query struct {
		slices    string
		want      string // describe() of the start, "" = not found
		exact     bool
		uncovered string
		err       error
	}
	tests := []struct {
		name    string
		ops     []op
		queries []query
		stored  string // the entries afterwards
	}{
		{
			name:    "1 to 4 instances",
			ops:     []op{save("0-1023", 500)},
			queries: []query{{slices: "0-255", want: "0-255@500"}, {slices: "0-1023", want: "0-1023@500", exact: true}},
			stored:  "0-1023@500",
		},
		{
			name: "2 to 1 instance",
			ops:  []op{save("0-511", 300), save("512-1023", 700)},
			queries: []query{
				{slices: "0-1023", want: "0-1023@300"},
				{slices: "600-700", want: "600-700@700"},
				{slices: "500-520", want: "500-520@300"},
				{slices: "512-1023", want: "512-1023@700", exact: true},
			},
			stored: "0-511@300 512-1023@700",
		},
		{
			name: "first save after a split takes its slices over",
			ops:  []op{save("0-1023", 500), save("256-511", 600)},
			queries: []query{
				{slices: "0-255", want: "0-255@500", exact: true},
				{slices: "256-511", want: "256-511@600", exact: true},
				{slices: "0-1023", want: "0-1023@500"},
			},
			stored: "0-255@500 256-511@600 512-1023@500",
		},
		{
			name: "split then back to one instance: no stale entry holds it back",
			ops: []op{save("0-1023", 500), save("0-511", 900), save("512-1023", 800),
				save("0-1023", 1), save("0-1023", 1000)},
			queries: []query{{slices: "0-1023", want: "0-1023@1000", exact: true}, {slices: "3", want: "3-3@1000"}},
			stored:  "0-1023@1000",
		},
		{
			name:    "first save after a split never starts lower than the entries it replaces",
			ops:     []op{save("0-511", 300), save("512-1023", 700), save("0-1023", 100)},
			queries: []query{{slices: "0-1023", want: "0-1023@300", exact: true}},
			stored:  "0-1023@300",
		},
		{
			name:    "set of a new range may go back",
			ops:     []op{save("0-511", 300), save("512-1023", 700), {kind: "set", slices: "0-1023", offset: 100}},
			queries: []query{{slices: "0-1023", want: "0-1023@100", exact: true}},
			stored:  "0-1023@100",
		},
		{
			name:    "partly covered",
			ops:     []op{save("100-199", 5), save("300-399", 9)},
			queries: []query{{slices: "0-1023", want: "0-1023@5", uncovered: "0-99 200-299 400-1023"}, {slices: "200-299"}},
			stored:  "100-199@5 300-399@9",
		},
		{
			name:    "nothing stored",
			queries: []query{{slices: "0-1023"}},
		},
		{
			name:    "reset of the whole range after a split",
			ops:     []op{save("0-511", 300), save("512-1023", 700), reset("0-1023", earliest, 0), save("0-255", 10)},
			queries: []query{{slices: "256-1023", want: "256-1023:EARLIEST", exact: true}, {slices: "0-1023", want: "0-1023:EARLIEST"}},
			stored:  "0-255@10 256-1023:EARLIEST",
		},
		{
			name:    "save replaces an overlapped pending reset",
			ops:     []op{reset("0-1023", earliest, 0), save("0-511", 10)},
			queries: []query{{slices: "0-511", want: "0-511@10", exact: true}},
			stored:  "0-511@10 512-1023:EARLIEST",
		},
		{
			name:    "earliest wins",
			ops:     []op{save("0-511", 300), reset("512-1023", earliest, 0)},
			queries: []query{{slices: "0-1023", want: "0-1023:EARLIEST"}},
			stored:  "0-511@300 512-1023:EARLIEST",
		},
		{
			name:    "offset wins over latest",
			ops:     []op{save("0-511", 300), reset("512-1023", latest, 0)},
			queries: []query{{slices: "0-1023", want: "0-1023@300"}},
		},
		{
			name:    "earlier time wins",
			ops:     []op{reset("0-511", atTime, 2000), reset("512-1023", atTime, 1000)},
			queries: []query{{slices: "0-1023", want: "0-1023:1000"}},
		},
		{
			name:    "time wins over latest",
			ops:     []op{reset("0-511", latest, 0), reset("512-1023", atTime, 1000)},
			queries: []query{{slices: "0-1023", want: "0-1023:1000"}},
		},
		{
			name:    "offset and time conflict",
			ops:     []op{save("0-511", 300), reset("512-1023", atTime, 1000)},
			queries: []query{{slices: "0-1023", err: ErrConflictingOffsets}, {slices: "0-511", want: "0-511@300", exact: true}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			for _, o := range tt.ops {
				k := key(t, "c", 1, o.slices)
				var err error
				switch o.kind {
				case "save":
					err = s.Save(k, o.offset, nil)
				case "set":
					err = s.Set(k, o.offset)
				case "reset":
					var at time.Time
					if o.policy == atTime {
						at = time.Unix(o.t, 0)
					}
					err = s.Reset(k, o.policy, at)
				}
				if err != nil {
					t.Fatalf("%s %s: %v", o.kind, o.slices, err)
				}
			}
			for _, q := range tt.queries {
				k := key(t, "c", 1, q.slices)
				r, err := s.Resolve(k)
				if q.err != nil {
					if !errors.Is(err, q.err) {
						t.Errorf("Resolve(%s) = %v, %v; want %v", q.slices, r, err, q.err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Resolve(%s): %v", q.slices, err)
				}
				got := ""
				if r.Found {
					got = describe(Entry{Key: k, Offset: r.Offset})
				}
				var uncovered []string
				for _, u := range r.Uncovered {
					uncovered = append(uncovered, u.String())
				}
				if got != q.want || r.Exact != q.exact || strings.Join(uncovered, " ") != q.uncovered {
					t.Errorf("Resolve(%s) = %q exact %v uncovered %v; want %q exact %v uncovered %q",
						q.slices, got, r.Exact, uncovered, q.want, q.exact, q.uncovered)
				}
				p, found, err := s.StartFor(k)
				if err != nil || found != r.Found || p != r.Offset {
					t.Errorf("StartFor(%s) = %v, %v, %v; Resolve said %v", q.slices, p, found, err, r.Offset)
				}
				// Another consumer and another journal see nothing of it.
				for _, other := range []Key{key(t, "d", 1, q.slices), key(t, "c", 2, q.slices)} {
					if _, found, err := s.StartFor(other); found || err != nil {
						t.Errorf("StartFor(%s) found %v, %v", other, found, err)
					}
				}
			}
			if tt.stored != "" {
				entries, err := s.List("c")
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, e := range entries {
					got = append(got, describe(e))
				}
				if strings.Join(got, " ") != tt.stored {
					t.Errorf("stored %q, want %q", strings.Join(got, " "), tt.stored)
				}
			}
		})
	}
}

func TestAppliedSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	k := key(t, "c", 1, "0-255")
	mustSave(t, s, k, 77, Applied{"order", "a", 3}, Applied{"", "no-type", 1})
	if err := s.Reset(key(t, "c", 1, "256-511"), atTime, time.Unix(1700000000, 5)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	if n := mustApplied(t, s, "c", 1, "order", "a"); n != 3 {
		t.Errorf("applied after reopen = %d, want 3", n)
	}
	if n := mustApplied(t, s, "c", 1, "", "no-type"); n != 1 {
		t.Errorf("applied (empty type) after reopen = %d, want 1", n)
	}
	if p := mustGet(t, s, k); p.Offset != 77 {
		t.Errorf("offset after reopen = %v", p)
	}
	if p := mustGet(t, s, key(t, "c", 1, "256-511")); p.Start != atTime || !p.StartTime.Equal(time.Unix(1700000000, 5)) {
		t.Errorf("reset after reopen = %v", p)
	}
}

func TestFiltersRoundTripAndReopen(t *testing.T) {
	dir := t.TempDir()
	criteria := []*streamdv1.FilterCriterion{
		{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE, Value: "order"},
		{Action: streamdv1.FilterAction_FILTER_ACTION_EXCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_TOPIC, Value: "cars/+/debug/#", ExpiresAtUnixNano: 1_800_000_000_000_000_000},
		{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_ID, Value: "o-1", ReplayFromSeqNr: 1},
	}
	s, err := Open(dir, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		consumer, stream string
		criteria         []*streamdv1.FilterCriterion
	}{
		{"billing", "", criteria},
		{"billing", "public-orders", criteria[:1]},
		{"audit", "", []*streamdv1.FilterCriterion{}}, // stored empty: everything
	}
	for _, tt := range tests {
		if err := s.SetFilters(tt.consumer, tt.stream, tt.criteria); err != nil {
			t.Fatalf("SetFilters(%s, %s): %v", tt.consumer, tt.stream, err)
		}
	}
	if _, err := s.Filters("billing", "other"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Filters of an unknown stream = %v, want ErrNotFound", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	for _, tt := range tests {
		got, err := s.Filters(tt.consumer, tt.stream)
		if err != nil {
			t.Fatalf("Filters(%s, %s): %v", tt.consumer, tt.stream, err)
		}
		if got == nil || len(got) != len(tt.criteria) {
			t.Fatalf("Filters(%s, %s) = %v, want %v", tt.consumer, tt.stream, got, tt.criteria)
		}
		for i := range got {
			if !proto.Equal(got[i], tt.criteria[i]) {
				t.Errorf("Filters(%s, %s)[%d] = %v, want %v", tt.consumer, tt.stream, i, got[i], tt.criteria[i])
			}
		}
	}
	all, err := s.ListFilters()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range all {
		names = append(names, fmt.Sprintf("%s/%s:%d", f.Consumer, f.Stream, len(f.Criteria)))
	}
	if got := strings.Join(names, " "); got != "audit/:0 billing/:3 billing/public-orders:1" {
		t.Errorf("ListFilters = %s", got)
	}
	// Replace, then delete.
	if err := s.SetFilters("billing", "", criteria[2:]); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Filters("billing", ""); err != nil || len(got) != 1 || got[0].GetValue() != "o-1" {
		t.Errorf("after replace: %v, %v", got, err)
	}
	if err := s.DeleteFilters("billing", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Filters("billing", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("after delete: %v", err)
	}
	if err := s.DeleteFilters("billing", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

func TestListByConsumer(t *testing.T) {
	s := openStore(t, t.TempDir())
	// "a" is a prefix of "ab": the length prefix keeps them apart.
	mustSave(t, s, key(t, "ab", 1, "0-1023"), 1)
	mustSave(t, s, key(t, "a", 2, "512-1023"), 2)
	mustSave(t, s, key(t, "a", 2, "0-511"), 3)
	mustSave(t, s, key(t, "a", 1, "0-1023"), 4)
	mustSave(t, s, key(t, "b", 1, "0-1023"), 5)
	tests := []struct {
		consumer string
		want     string
	}{
		{"a", "a/1/0-1023@4 a/2/0-511@3 a/2/512-1023@2"},
		{"ab", "ab/1/0-1023@1"},
		{"b", "b/1/0-1023@5"},
		{"nobody", ""},
		{"", "a/1/0-1023@4 a/2/0-511@3 a/2/512-1023@2 ab/1/0-1023@1 b/1/0-1023@5"},
	}
	for _, tt := range tests {
		entries, err := s.List(tt.consumer)
		if err != nil {
			t.Fatalf("List(%q): %v", tt.consumer, err)
		}
		var got []string
		for _, e := range entries {
			got = append(got, fmt.Sprintf("%s/%d/%s", e.Consumer, e.JournalID[0], describe(e)))
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("List(%q) = %q, want %q", tt.consumer, strings.Join(got, " "), tt.want)
		}
	}
}

func TestDelete(t *testing.T) {
	s := openStore(t, t.TempDir())
	k := key(t, "c", 1, "0-511")
	mustSave(t, s, k, 5)
	if err := s.Delete(key(t, "c", 1, "0-255")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Delete of a range not stored exactly = %v, want ErrNotFound", err)
	}
	if err := s.Delete(k); err != nil {
		t.Fatal(err)
	}
	if _, found, _ := s.Get(k); found {
		t.Error("found after Delete")
	}
	if err := s.Delete(k); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
}

func TestConcurrentSaves(t *testing.T) {
	const goroutines, saves = 8, 25
	s := openStore(t, t.TempDir())
	shared := key(t, "shared", 1, "0-1023")
	exactlyOnce := key(t, "exactly-once", 1, "0-1023")
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*saves*3)
	for g := range goroutines {
		wg.Go(func() {
			own := key(t, fmt.Sprintf("own-%d", g), 1, "0-1023")
			for i := range saves {
				offset := uint64(i*goroutines + g + 1)
				applied := []Applied{{"order", fmt.Sprintf("g%d", g), uint64(i + 1)}}
				if err := s.Save(shared, offset, applied); err != nil {
					errs <- err
				}
				if err := s.Save(own, uint64(i+1), applied); err != nil {
					errs <- err
				}
				// The exactly-once pattern: check the seqNr in the transaction,
				// apply and save only what is new. The conflict check keeps the
				// highest seqNr whatever the interleaving.
				err := s.Update(func(txn *badger.Txn) error {
					cur, err := s.AppliedSeqNr(txn, exactlyOnce.Consumer, exactlyOnce.JournalID, "order", "hot")
					if err != nil || offset <= cur {
						return err
					}
					return s.SaveTxn(txn, exactlyOnce, offset, []Applied{{"order", "hot", offset}})
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Save: %v", err)
	}
	for _, k := range []Key{shared, exactlyOnce} {
		if p := mustGet(t, s, k); p.Offset != goroutines*saves {
			t.Errorf("%s offset = %d, want %d", k.Consumer, p.Offset, goroutines*saves)
		}
	}
	if n := mustApplied(t, s, "exactly-once", 1, "order", "hot"); n != goroutines*saves {
		t.Errorf("hot seqNr = %d, want %d", n, goroutines*saves)
	}
	for g := range goroutines {
		if p := mustGet(t, s, key(t, fmt.Sprintf("own-%d", g), 1, "0-1023")); p.Offset != saves {
			t.Errorf("own-%d offset = %d, want %d", g, p.Offset, saves)
		}
		if n := mustApplied(t, s, "shared", 1, "order", fmt.Sprintf("g%d", g)); n != saves {
			t.Errorf("g%d seqNr = %d, want %d", g, n, saves)
		}
	}
}

// TestConcurrentResplit: the first saves of new ranges, racing, still leave
// non-overlapping entries that cover every slice once.
func TestConcurrentResplit(t *testing.T) {
	s := openStore(t, t.TempDir())
	mustSave(t, s, key(t, "c", 1, "0-1023"), 100)
	ranges := []string{"0-127", "128-255", "256-383", "384-511", "512-639", "640-767", "768-895", "896-1023"}
	var wg sync.WaitGroup
	errs := make(chan error, len(ranges)*3)
	for i, r := range ranges {
		wg.Go(func() {
			k := key(t, "c", 1, r)
			for j := range 3 {
				if err := s.Save(k, uint64(200+i*10+j), nil); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Save: %v", err)
	}
	entries, err := s.List("c")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, describe(e))
	}
	want := "0-127@202 128-255@212 256-383@222 384-511@232 512-639@242 640-767@252 768-895@262 896-1023@272"
	if strings.Join(got, " ") != want {
		t.Errorf("entries = %s\nwant      %s", strings.Join(got, " "), want)
	}
}

func TestBadInputWritesNothing(t *testing.T) {
	s := openStore(t, t.TempDir())
	good := key(t, "c", 1, "0-1023")
	mustSave(t, s, good, 5, Applied{"order", "a", 1})
	if err := s.SetFilters("c", "", nil); err != nil {
		t.Fatal(err)
	}
	before := dump(t, s.DB())

	noConsumer := good
	noConsumer.Consumer = ""
	longConsumer := good
	longConsumer.Consumer = strings.Repeat("x", MaxNameLen+1)
	shortID := good
	shortID.JournalID = jid(1)[:15]
	nilID := good
	nilID.JournalID = nil
	badSlices := good
	badSlices.Slices = SliceRange{5, 3}
	highSlices := good
	highSlices.Slices = SliceRange{0, 1024}
	tooLong := strings.Repeat("e", maxKeyLen)

	tests := []struct {
		name string
		call func() error
		want string
	}{
		{"save empty consumer", func() error { return s.Save(noConsumer, 9, nil) }, "consumer name is empty"},
		{"save long consumer", func() error { return s.Save(longConsumer, 9, nil) }, "consumer name is 1025 bytes"},
		{"save short journal id", func() error { return s.Save(shortID, 9, nil) }, "journal id is 15 bytes"},
		{"save nil journal id", func() error { return s.Save(nilID, 9, nil) }, "journal id is 0 bytes"},
		{"save reversed slices", func() error { return s.Save(badSlices, 9, nil) }, "slice range 5-3"},
		{"save slice 1024", func() error { return s.Save(highSlices, 9, nil) }, "last slice is above 1023"},
		{"save empty entity id", func() error {
			return s.Save(good, 9, []Applied{{"order", "b", 2}, {"order", "", 1}})
		}, "applied[1]: entity id is empty"},
		{"save seqNr 0", func() error { return s.Save(good, 9, []Applied{{"order", "b", 0}}) }, "applied[0] (order/b): seqNr is 0"},
		{"save entity id too long", func() error { return s.Save(good, 9, []Applied{{"order", tooLong, 1}}) }, "applied[0]: entity type and id are too long"},
		{"save txn nil", func() error { return s.SaveTxn(nil, good, 9, nil) }, "txn is nil"},
		{"save txn bad key", func() error {
			return s.Update(func(txn *badger.Txn) error { return s.SaveTxn(txn, shortID, 9, nil) })
		}, "journal id is 15 bytes"},
		{"set bad slices", func() error { return s.Set(badSlices, 1) }, "slice range 5-3"},
		{"reset unspecified", func() error { return s.Reset(good, unspecified, time.Time{}) }, "start policy START_POLICY_UNSPECIFIED is not a reset"},
		{"reset unknown policy", func() error { return s.Reset(good, 9, time.Time{}) }, "start policy 9 is not a reset"},
		{"reset at time without time", func() error { return s.Reset(good, atTime, time.Time{}) }, "start time is zero"},
		{"reset at time out of range", func() error { return s.Reset(good, atTime, time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)) }, "outside the years"},
		{"reset earliest with time", func() error { return s.Reset(good, earliest, time.Now()) }, "only START_POLICY_AT_TIME takes a time"},
		{"reset empty consumer", func() error { return s.Reset(noConsumer, earliest, time.Time{}) }, "consumer name is empty"},
		{"delete short journal id", func() error { return s.Delete(shortID) }, "journal id is 15 bytes"},
		{"clear applied empty consumer", func() error { _, err := s.ClearApplied("", jid(1)); return err }, "consumer name is empty"},
		{"clear applied short journal id", func() error { _, err := s.ClearApplied("c", jid(1)[:3]); return err }, "journal id is 3 bytes"},
		{"set filters empty consumer", func() error { return s.SetFilters("", "", nil) }, "consumer name is empty"},
		{"set filters nil criterion", func() error {
			return s.SetFilters("c", "", []*streamdv1.FilterCriterion{{Value: "x"}, nil})
		}, "criteria[1] is nil"},
		{"set filters long stream", func() error { return s.SetFilters("c", strings.Repeat("s", MaxNameLen+1), nil) }, "stream name is 1025 bytes"},
		{"delete filters empty consumer", func() error { return s.DeleteFilters("", "") }, "consumer name is empty"},
		// Reads refuse the same input.
		{"get empty consumer", func() error { _, _, err := s.Get(noConsumer); return err }, "consumer name is empty"},
		{"start for bad slices", func() error { _, _, err := s.StartFor(badSlices); return err }, "slice range 5-3"},
		{"applied empty entity id", func() error { _, err := s.AppliedSeqNr(nil, "c", jid(1), "order", ""); return err }, "entity id is empty"},
		{"applied short journal id", func() error { _, err := s.AppliedSeqNr(nil, "c", nil, "order", "a"); return err }, "journal id is 0 bytes"},
		{"filters empty consumer", func() error { _, err := s.Filters("", ""); return err }, "consumer name is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "offsets: ") || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v; want ErrInvalid containing %q", err, tt.want)
			}
			if after := dump(t, s.DB()); !maps.Equal(before, after) {
				t.Fatalf("refused call changed the DB:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

func TestClosed(t *testing.T) {
	s, err := Open(t.TempDir(), Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	k := key(t, "c", 1, "0-1023")
	calls := map[string]func() error{
		"Save":         func() error { return s.Save(k, 1, nil) },
		"Set":          func() error { return s.Set(k, 1) },
		"Reset":        func() error { return s.Reset(k, earliest, time.Time{}) },
		"Delete":       func() error { return s.Delete(k) },
		"Get":          func() error { _, _, err := s.Get(k); return err },
		"StartFor":     func() error { _, _, err := s.StartFor(k); return err },
		"List":         func() error { _, err := s.List(""); return err },
		"Update":       func() error { return s.Update(func(*badger.Txn) error { return nil }) },
		"AppliedSeqNr": func() error { _, err := s.AppliedSeqNr(nil, "c", jid(1), "t", "e"); return err },
		"ClearApplied": func() error { _, err := s.ClearApplied("c", jid(1)); return err },
		"Filters":      func() error { _, err := s.Filters("c", ""); return err },
		"SetFilters":   func() error { return s.SetFilters("c", "", nil) },
		"ListFilters":  func() error { _, err := s.ListFilters(); return err },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
}

func TestOpenOptions(t *testing.T) {
	tests := []struct {
		name string
		dir  string
		opts Options
		want string
	}{
		{"no dir", "", Options{}, "dir is empty"},
		{"in memory with dir", t.TempDir(), Options{InMemory: true}, "given with Options.InMemory"},
		{"unknown durability", t.TempDir(), Options{Durability: 7}, "Options.Durability 7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.dir, tt.opts)
			if err == nil {
				s.Close()
			}
			if !errors.Is(err, ErrInvalid) || !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tt.want) ||
				!strings.HasPrefix(err.Error(), "offsets: invalid options: ") {
				t.Fatalf("Open = %v, want ErrInvalidOptions containing %q", err, tt.want)
			}
		})
	}
	// In memory and async both work.
	for _, opts := range []Options{{InMemory: true, Logger: quiet}, {Durability: DurabilityAsync, Logger: quiet}} {
		dir := ""
		if !opts.InMemory {
			dir = t.TempDir()
		}
		s, err := Open(dir, opts)
		if err != nil {
			t.Fatalf("Open(%+v): %v", opts, err)
		}
		mustSave(t, s, key(t, "c", 1, "0-1023"), 3)
		if p := mustGet(t, s, key(t, "c", 1, "0-1023")); p.Offset != 3 {
			t.Errorf("%+v: offset %d", opts, p.Offset)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFormatVersionRefused(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DB().Update(func(txn *badger.Txn) error { return txn.Set(metaFormatKey, []byte{runsFormat + 1}) }); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{Logger: quiet})
	if err == nil {
		s.Close()
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "format version 04") {
		t.Fatalf("Open of a newer format = %v, want ErrCorrupt", err)
	}
}

// ownDB is a Shared over a plain Badger DB.
type ownDB struct{ db *badger.DB }

func (o ownDB) DB() *badger.DB                              { return o.db }
func (o ownDB) Update(fn func(txn *badger.Txn) error) error { return o.db.Update(fn) }
func (o ownDB) View(fn func(txn *badger.Txn) error) error   { return o.db.View(fn) }

func TestWrapSharesTheCallersDB(t *testing.T) {
	db, err := badger.Open(badger.DefaultOptions("").WithInMemory(true).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The caller's own keys, even ones that look like the store's prefixes
	// without the leading 0x00, stay out of its way.
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("op/x"), []byte("mine")) }); err != nil {
		t.Fatal(err)
	}
	s, err := Wrap(ownDB{db}, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	k := key(t, "replicator", 1, "0-1023")
	if err := s.Update(func(txn *badger.Txn) error {
		if err := txn.Set([]byte("e/1"), []byte("event")); err != nil {
			return err
		}
		return s.SaveTxn(txn, k, 1, []Applied{{"order", "a", 1}})
	}); err != nil {
		t.Fatal(err)
	}
	if entries, err := s.List(""); err != nil || len(entries) != 1 {
		t.Errorf("List = %v, %v", entries, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The DB is still open.
	if err := db.View(func(txn *badger.Txn) error { _, err := txn.Get([]byte("e/1")); return err }); err != nil {
		t.Errorf("db after store Close: %v", err)
	}
}

// TestWrapJournalReadsWhatItAnswered: over a journal, which answers an
// AppendWith once it is logged and applies it to Badger after, the store's
// reads see every offset the journal answered.
func TestWrapJournalReadsWhatItAnswered(t *testing.T) {
	j, err := journal.Open(t.TempDir(), journal.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	s, err := Wrap(j, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	k := key(t, "replicator", 1, "0-1023")
	for i := uint64(1); i <= 300; i++ {
		ws, err := s.OffsetWrites(k, i, []Applied{{"order", "a", i}})
		if err != nil {
			t.Fatal(err)
		}
		writes := make([]journal.Write, len(ws))
		for n, w := range ws {
			writes[n] = journal.Write{Key: w.Key, Value: w.Value, Delete: w.Delete}
		}
		e := &streamdv1.Event{EntityType: "order", EntityId: "a", Payload: []byte("x")}
		if _, err := j.AppendWith(context.Background(), writes, e); err != nil {
			t.Fatal(err)
		}
		if p := mustGet(t, s, k); p.Offset != i {
			t.Fatalf("offset after append %d = %d", i, p.Offset)
		}
		if seq, err := s.AppliedSeqNr(nil, "replicator", jid(1), "order", "a"); err != nil || seq != i {
			t.Fatalf("applied seqNr after append %d = %d, %v", i, seq, err)
		}
	}
}

// TestConcurrentOverlappingInserts: first saves of overlapping ranges into an
// empty (consumer, journal) race; the entries must still never overlap.
func TestConcurrentOverlappingInserts(t *testing.T) {
	s := openStore(t, t.TempDir())
	ranges := []string{"0-511", "256-767", "512-1023", "100-900"}
	for round := range 20 {
		consumer := fmt.Sprintf("c%d", round)
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make(chan error, len(ranges))
		for i, r := range ranges {
			wg.Go(func() {
				<-start
				if err := s.Save(key(t, consumer, 1, r), uint64(10+i), nil); err != nil {
					errs <- err
				}
			})
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("Save: %v", err)
		}
		entries, err := s.List(consumer)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for i, e := range entries {
			got = append(got, describe(e))
			if i > 0 && entries[i-1].Slices.Overlaps(e.Slices) {
				t.Errorf("round %d: entries overlap: %v", round, got)
			}
		}
		// Every slice of 0-1023 was saved by someone and has one offset.
		if r, err := s.Resolve(key(t, consumer, 1, "0-1023")); err != nil || len(r.Uncovered) != 0 || !r.Found {
			t.Errorf("round %d: Resolve = %+v, %v", round, r, err)
		}
	}
}

// TestOffsetWritesMatchSave: committing OffsetWrites leaves the store
// exactly as Save would, also when the save cuts overlapping ranges; and
// until they commit, nothing changes.
func TestOffsetWritesMatchSave(t *testing.T) {
	saved, written := openStore(t, t.TempDir()), openStore(t, t.TempDir())
	steps := []struct {
		key     Key
		offset  uint64
		applied []Applied
	}{
		{key(t, "c", 1, "0-1023"), 10, []Applied{{"order", "a", 3}}},
		{key(t, "c", 1, "0-1023"), 20, nil},
		{key(t, "c", 1, "256-511"), 30, []Applied{{"order", "b", 1}, {"order", "b", 2}}}, // cuts 0-1023
		{key(t, "c", 2, "0-1023"), 5, nil},
	}
	for i, st := range steps {
		mustSave(t, saved, st.key, st.offset, st.applied...)
		before, _ := written.List("")
		writes, err := written.OffsetWrites(st.key, st.offset, st.applied)
		if err != nil {
			t.Fatal(err)
		}
		if after, _ := written.List(""); fmt.Sprint(describeAll(after)) != fmt.Sprint(describeAll(before)) {
			t.Fatalf("step %d: OffsetWrites changed the store", i)
		}
		if err := written.Update(func(txn *badger.Txn) error {
			for _, w := range writes {
				if w.Delete {
					if err := txn.Delete(w.Key); err != nil {
						return err
					}
				} else if err := txn.Set(w.Key, w.Value); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want, _ := saved.List("")
		got, _ := written.List("")
		if fmt.Sprint(describeAll(want)) != fmt.Sprint(describeAll(got)) {
			t.Fatalf("step %d: written %v, saved %v", i, describeAll(got), describeAll(want))
		}
	}
	for _, id := range []string{"a", "b"} {
		w, _ := saved.AppliedSeqNr(nil, "c", jid(1), "order", id)
		g, _ := written.AppliedSeqNr(nil, "c", jid(1), "order", id)
		if w != g || w == 0 {
			t.Errorf("applied seqNr of %s: written %d, saved %d", id, g, w)
		}
	}
	if _, err := written.OffsetWrites(Key{Consumer: "", JournalID: jid(1), Slices: AllSlices}, 1, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("OffsetWrites with no consumer: %v", err)
	}
}

func describeAll(entries []Entry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = string(e.JournalID[:1]) + describe(e)
	}
	return out
}

// A memtable log left empty by a process killed as Badger created it
// (internal/badgerdir): the store opens with its offsets.
func TestOpenAfterEmptyMemtableLog(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	k := key(t, "c", 1, "0-1023")
	mustSave(t, s, k, 42)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00099.mem"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if p := mustGet(t, s, k); p.Offset != 42 {
		t.Fatalf("offset %d after reopen, want 42", p.Offset)
	}
}

// Origin seqNrs are kept per (consumer, origin, entity), whatever the
// journal; ClearOriginSeqNrs forgets one consumer's; bad input is refused
// and stores nothing.
func TestOriginSeqNrs(t *testing.T) {
	s := openStore(t, t.TempDir())
	set := func(consumer string, a ...OriginApplied) error {
		return s.Update(func(txn *badger.Txn) error { return s.SetOriginSeqNrs(txn, consumer, a) })
	}
	get := func(consumer, origin, id string) uint64 {
		t.Helper()
		n, err := s.OriginSeqNr(nil, consumer, origin, "car", id)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := set("c", OriginApplied{"eu", "car", "1", 4}, OriginApplied{"us", "car", "1", 2}); err != nil {
		t.Fatal(err)
	}
	if err := set("c2", OriginApplied{"eu", "car", "1", 9}); err != nil {
		t.Fatal(err)
	}
	if get("c", "eu", "1") != 4 || get("c", "us", "1") != 2 || get("c", "eu", "2") != 0 || get("c2", "eu", "1") != 9 {
		t.Fatalf("origin seqNrs c eu/1 %d, us/1 %d, eu/2 %d, c2 eu/1 %d", get("c", "eu", "1"), get("c", "us", "1"), get("c", "eu", "2"), get("c2", "eu", "1"))
	}
	for _, bad := range []OriginApplied{{"", "car", "1", 1}, {"eu", "car", "", 1}, {"eu", "car", "1", 0}, {"eu", "car", strings.Repeat("x", maxKeyLen), 1}} {
		if err := set("c", OriginApplied{"eu", "car", "3", 1}, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("SetOriginSeqNrs(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
	if get("c", "eu", "3") != 0 {
		t.Fatal("a refused batch stored part of itself")
	}
	if n, err := s.ClearOriginSeqNrs("c"); err != nil || n != 2 {
		t.Fatalf("ClearOriginSeqNrs = %d, %v; want 2", n, err)
	}
	if get("c", "eu", "1") != 0 || get("c2", "eu", "1") != 9 {
		t.Fatal("ClearOriginSeqNrs left c's or cleared c2's")
	}
}

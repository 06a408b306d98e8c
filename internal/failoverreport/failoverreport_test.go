package failoverreport

import (
	"slices"
	"strings"
	"testing"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// The dry run's report says when another region holds more of the failed
// region's events than the one taking over (they would be fenced), and
// never after the failover is done.
func TestNotes(t *testing.T) {
	progress := []*streamdv1.RegionProgress{
		{Region: "us", Reachable: true, AppliedOffset: 10, KnownOffset: 12},
		{Region: "ap", Reachable: true, AppliedOffset: 14, KnownOffset: 14},
		{Region: "sa", AppliedOffset: 0},
	}
	dry := Notes("eu", "us", &streamdv1.FailoverResponse{EntityTypes: []string{"order", "invoice"}, Progress: progress, AtRisk: 0}, "add --execute to fail over")
	want := []string{
		"pinned types moving from eu to us: order, invoice",
		"failover point: the last event of eu applied in us: none of its events",
		"at risk: 0 event(s) of eu's journal that no reachable region has applied",
		"ap has applied 4 more of eu's journal than us: those events reach us through ap (relayed) if you wait; failing over now fences them",
		"dry run: nothing changed; add --execute to fail over",
	}
	if !slices.Equal(dry, want) {
		t.Fatalf("dry run notes:\n%s\nwant:\n%s", strings.Join(dry, "\n"), strings.Join(want, "\n"))
	}
	done := Notes("eu", "us", &streamdv1.FailoverResponse{Progress: progress, Executed: true, Offset: 7, UnlistedTypes: true}, "add --execute to fail over")
	if done[0] != "pinned types moving from eu to us: every type not listed (default_primary eu)" ||
		done[len(done)-1] != "failed over from eu to us (record at offset 7); events eu wrote after the failover point: streamctl primary conflicts" || len(done) != 4 {
		t.Fatalf("notes after the failover: %q", done)
	}
}

// With several journals of the failed region (its pods sharing the
// entities), another region is ahead of to by what it applied beyond to's
// applied offset in each journal, whatever the sums say.
func TestNotesPerJournal(t *testing.T) {
	j := func(id string, applied uint64) *streamdv1.JournalProgress {
		return &streamdv1.JournalProgress{JournalId: []byte(id), AppliedOffset: applied, KnownOffset: applied}
	}
	progress := []*streamdv1.RegionProgress{
		{Region: "us", Reachable: true, AppliedOffset: 15, KnownOffset: 15, Journals: []*streamdv1.JournalProgress{j("a", 10), j("b", 5)}},
		{Region: "ap", Reachable: true, AppliedOffset: 14, KnownOffset: 14, Journals: []*streamdv1.JournalProgress{j("a", 7), j("b", 7)}},
	}
	notes := Notes("eu", "us", &streamdv1.FailoverResponse{Progress: progress, AtRisk: 0}, "add --execute to fail over")
	want := []string{
		"at risk: 0 event(s) of eu's journals that no reachable region has applied",
		"ap has applied 2 more of eu's journals than us: those events reach us through ap (relayed) if you wait; failing over now fences them",
	}
	if !slices.Equal(notes[2:4], want) {
		t.Fatalf("notes:\n%s\nwant, from the third:\n%s", strings.Join(notes, "\n"), strings.Join(want, "\n"))
	}
}

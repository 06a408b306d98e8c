// Package failoverreport words the report of a region's failover
// (PrimaryService.Failover) the same way wherever it is shown: streamctl
// primary failover and the console.
package failoverreport

import (
	"fmt"
	"strings"
	"time"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Notes are the lines of a failover's report after its table of regions:
// what moves, the failover point, what is at risk, a warning when another
// region has applied more of from's journal than to, and what was done. A
// dry run ends with "dry run: nothing changed; " and how to execute it.
func Notes(from, to string, resp *streamdv1.FailoverResponse, howToExecute string) []string {
	var moving []string
	if len(resp.GetEntityTypes()) > 0 {
		moving = append(moving, strings.Join(resp.GetEntityTypes(), ", "))
	}
	if resp.GetUnlistedTypes() {
		moving = append(moving, "every type not listed (default_primary "+from+")")
	}
	types := "none"
	if len(moving) > 0 {
		types = strings.Join(moving, " and ")
	}
	point := "none of its events"
	if ns := resp.GetFromAppliedUnixNano(); ns != 0 {
		point = time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
	}
	journal := from + "'s journal"
	for _, p := range resp.GetProgress() {
		if len(p.GetJournals()) > 1 {
			journal = from + "'s journals"
		}
	}
	notes := []string{
		fmt.Sprintf("pinned types moving from %s to %s: %s", from, to, types),
		fmt.Sprintf("failover point: the last event of %s applied in %s: %s", from, to, point),
		fmt.Sprintf("at risk: %d event(s) of %s that no reachable region has applied", resp.GetAtRisk(), journal),
	}
	var here *streamdv1.RegionProgress
	for _, p := range resp.GetProgress() {
		if p.GetRegion() == to {
			here = p
		}
	}
	var best uint64
	bestRegion := ""
	for _, p := range resp.GetProgress() {
		if p.GetRegion() != to && p.GetReachable() {
			if ahead := aheadOf(p, here); ahead > best {
				best, bestRegion = ahead, p.GetRegion()
			}
		}
	}
	if best > 0 && !resp.GetExecuted() {
		notes = append(notes, fmt.Sprintf("%s has applied %d more of %s than %s: those events reach %s through %s (relayed) if you wait; failing over now fences them", bestRegion, best, journal, to, to, bestRegion))
	}
	if resp.GetExecuted() {
		notes = append(notes, fmt.Sprintf("failed over from %s to %s (record at offset %d); events %s wrote after the failover point: streamctl primary conflicts", from, to, resp.GetOffset(), from))
	} else {
		notes = append(notes, "dry run: nothing changed; "+howToExecute)
	}
	return notes
}

// aheadOf is how many events of the source's journals p applied that here
// did not: per journal, p's applied offset beyond here's, summed. Progress
// without journals (an older server) counts as one journal of its sums.
func aheadOf(p, here *streamdv1.RegionProgress) uint64 {
	applied := func(rp *streamdv1.RegionProgress) map[string]uint64 {
		out := map[string]uint64{}
		for _, j := range rp.GetJournals() {
			out[string(j.GetJournalId())] = j.GetAppliedOffset()
		}
		if len(out) == 0 && rp.GetAppliedOffset() > 0 {
			out[""] = rp.GetAppliedOffset()
		}
		return out
	}
	theirs, ours := applied(p), applied(here)
	var n uint64
	for id, a := range theirs {
		if a > ours[id] {
			n += a - ours[id]
		}
	}
	return n
}

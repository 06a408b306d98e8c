package console

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// failoverRequest is the body of api/primary/failover.
type failoverRequest struct {
	From    string `json:"from"` // the region that failed
	To      string `json:"to"`   // the region taking over: this one
	Execute bool   `json:"execute"`
}

// regionProgress is one row of a failover's report (the columns of
// streamctl primary failover).
type regionProgress struct {
	Region    string `json:"region"`
	Reachable bool   `json:"reachable"`
	Applied   uint64 `json:"applied_offset"`
	Known     uint64 `json:"known_offset"`
	Error     string `json:"error,omitempty"`
}

// failover calls PrimaryService.Failover: a dry run unless execute. The
// report holds the per-region progress and the notes streamctl primary
// failover prints after its table.
func (c *Console) failover(w http.ResponseWriter, r *http.Request, _ caller) {
	var req failoverRequest
	if !decode(w, r, &req) {
		return
	}
	switch {
	case req.From == "" || req.To == "":
		httpError(w, http.StatusBadRequest, "console: failover needs from (the region that failed) and to (this region, taking over)")
		return
	case req.From == req.To:
		httpError(w, http.StatusBadRequest, fmt.Sprintf("console: failover from %q to itself: choose the region that failed", req.From))
		return
	}
	resp, err := c.primaries.Failover(r.Context(), &streamdv1.FailoverRequest{From: req.From, To: req.To, Execute: req.Execute})
	if err != nil {
		apiError(w, err)
		return
	}
	progress := []regionProgress{}
	for _, p := range resp.GetProgress() {
		progress = append(progress, regionProgress{Region: p.GetRegion(), Reachable: p.GetReachable(), Applied: p.GetAppliedOffset(), Known: p.GetKnownOffset(), Error: p.GetError()})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"from": req.From, "to": req.To, "progress": progress, "entity_types": append([]string{}, resp.GetEntityTypes()...),
		"unlisted_types": resp.GetUnlistedTypes(), "at_risk": resp.GetAtRisk(), "from_applied_unix_nano": resp.GetFromAppliedUnixNano(),
		"executed": resp.GetExecuted(), "offset": resp.GetOffset(), "notes": failoverNotes(req.From, req.To, resp),
	})
}

// failoverNotes are the lines of a failover's report after the table, as
// streamctl primary failover prints them: what moves, the failover point,
// what is at risk, a warning when another region has applied more of
// from's journal than to, and what was done.
func failoverNotes(from, to string, resp *streamdv1.FailoverResponse) []string {
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
	notes := []string{
		fmt.Sprintf("pinned types moving from %s to %s: %s", from, to, types),
		fmt.Sprintf("failover point: the last event of %s applied in %s: %s", from, to, point),
		fmt.Sprintf("at risk: %d event(s) of %s's journal that no reachable region has applied", resp.GetAtRisk(), from),
	}
	var here, best uint64
	bestRegion := ""
	for _, p := range resp.GetProgress() {
		if p.GetRegion() == to {
			here = p.GetAppliedOffset()
		} else if p.GetReachable() && p.GetAppliedOffset() > best {
			best, bestRegion = p.GetAppliedOffset(), p.GetRegion()
		}
	}
	if best > here && !resp.GetExecuted() {
		notes = append(notes, fmt.Sprintf("%s has applied %d more of %s's journal than %s: those events reach %s through %s (relayed) if you wait; failing over now fences them", bestRegion, best-here, from, to, to, bestRegion))
	}
	if resp.GetExecuted() {
		notes = append(notes, fmt.Sprintf("failed over from %s to %s (record at offset %d); events %s wrote after the failover point: streamctl primary conflicts", from, to, resp.GetOffset(), from))
	} else {
		notes = append(notes, "dry run: nothing changed; Execute fails over")
	}
	return notes
}

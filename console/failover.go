package console

import (
	"fmt"
	"net/http"

	"github.com/streamd/streamd/internal/failoverreport"
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
		"executed": resp.GetExecuted(), "offset": resp.GetOffset(), "notes": failoverreport.Notes(req.From, req.To, resp, "Execute fails over"),
	})
}

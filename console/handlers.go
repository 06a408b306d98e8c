package console

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/internal/eventjson"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// sse starts a Server-Sent Events response and returns its writer of
// events, and a context done when the client leaves or the console closes.
func (c *Console) sse(w http.ResponseWriter, r *http.Request) (func(event string, v any) error, context.Context, context.CancelFunc) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(c.ctx, cancel)
	send := func(event string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return err
		}
		return rc.Flush()
	}
	return send, ctx, func() { stop(); cancel() }
}

// live streams a snapshot at each sample.
func (c *Console) live(w http.ResponseWriter, r *http.Request, _ caller) {
	send, ctx, done := c.sse(w, r)
	defer done()
	for {
		snap, ok, changed := c.samples.current()
		if ok && send("snapshot", snap) != nil {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// criterion is a filter criterion as the pages show it.
type criterion struct {
	Text    string `json:"text"`              // filters.Format
	Expires int64  `json:"expires_unix_ms"`   // 0: never
	Error   string `json:"error,omitempty"`   // why the text does not parse
	Line    int    `json:"line,omitempty"`    // of the text that did not parse, from 1
	Expired bool   `json:"expired,omitempty"` // past its expiry: the producer ignores it
}

func shown(crit []*streamdv1.FilterCriterion) []criterion {
	out := make([]criterion, 0, len(crit))
	now := time.Now().UnixNano()
	for _, c := range crit {
		exp := c.GetExpiresAtUnixNano()
		out = append(out, criterion{Text: filters.Format(c), Expires: exp / 1e6, Expired: exp != 0 && exp <= now})
	}
	return out
}

// parseAll parses criteria in the filters syntax; the error names the line.
func parseAll(texts []string, now time.Time) ([]*streamdv1.FilterCriterion, *criterion) {
	var out []*streamdv1.FilterCriterion
	for i, t := range texts {
		if t == "" {
			continue
		}
		crit, err := filters.Parse(t, now)
		if err != nil {
			return nil, &criterion{Text: t, Line: i + 1, Error: err.Error()}
		}
		out = append(out, crit)
	}
	return out, nil
}

// parse checks criteria (?filter=, one per criterion) for the tail's filter
// box: the criteria, or the first error and its line.
func (c *Console) parse(w http.ResponseWriter, r *http.Request, _ caller) {
	crit, bad := parseAll(r.URL.Query()["filter"], time.Now())
	if bad != nil {
		writeJSON(w, http.StatusOK, map[string]any{"error": bad})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"criteria": shown(crit)})
}

// tail streams a stream's events: ?stream=, ?from= earliest, latest,
// offset (?at=N, inclusive) or time (?at=RFC 3339), ?filter= criteria.
func (c *Console) tail(w http.ResponseWriter, r *http.Request, who caller) {
	q := r.URL.Query()
	stream := q.Get("stream")
	if name := cmp.Or(stream, producer.DefaultStream); !who.grant.stream(name) {
		httpError(w, http.StatusForbidden, fmt.Sprintf("console: this token is not granted stream %q", name))
		return
	}
	crit, bad := parseAll(q["filter"], time.Now())
	if bad != nil {
		httpError(w, http.StatusBadRequest, fmt.Sprintf("console: filter line %d: %s", bad.Line, bad.Error))
		return
	}
	init := &streamdv1.Init{Stream: stream, ConsumerName: "console", Filter: crit}
	switch from, at := q.Get("from"), q.Get("at"); from {
	case "", "latest":
		init.StartPolicy = streamdv1.StartPolicy_START_POLICY_LATEST
	case "earliest":
		init.StartPolicy = streamdv1.StartPolicy_START_POLICY_EARLIEST
	case "offset":
		off, err := strconv.ParseUint(at, 10, 64)
		if err != nil || off == 0 {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("console: from offset %q: want an offset, 1 or more", at))
			return
		}
		init.Position = &streamdv1.Position{JournalId: c.opts.Info().JournalID, Offset: off - 1}
	case "time":
		t, err := time.Parse(time.RFC3339Nano, at)
		if err != nil {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("console: from time %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z", at))
			return
		}
		init.StartPolicy, init.StartTimeUnixNano = streamdv1.StartPolicy_START_POLICY_AT_TIME, t.UnixNano()
	default:
		httpError(w, http.StatusBadRequest, fmt.Sprintf("console: from %q: want earliest, latest, offset or time", from))
		return
	}
	send, ctx, done := c.sse(w, r)
	defer done()
	st, err := c.events.Subscribe(ctx)
	if err == nil {
		err = st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: init}})
	}
	for err == nil {
		var resp *streamdv1.SubscribeResponse
		if resp, err = st.Recv(); err != nil {
			break
		}
		switch m := resp.Response.(type) {
		case *streamdv1.SubscribeResponse_Hello:
			h := m.Hello
			err = send("hello", map[string]any{"journal_id": hex.EncodeToString(h.JournalId), "first_offset": h.FirstOffset,
				"last_offset": h.LastOffset, "start_offset": h.StartOffset})
		case *streamdv1.SubscribeResponse_Events:
			evs := make([]eventjson.Event, len(m.Events.Events))
			for i, e := range m.Events.Events {
				evs[i] = eventjson.Of(e)
			}
			err = send("events", evs)
		}
	}
	if ctx.Err() == nil && err != io.EOF {
		send("failure", map[string]string{"error": status.Convert(err).Message()})
	}
}

// decode reads a JSON request body into v, answering 400 if it cannot.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		httpError(w, http.StatusBadRequest, "console: bad request body: "+err.Error())
		return false
	}
	return true
}

// apiError answers with the HTTP status of a gRPC error and its message.
func apiError(w http.ResponseWriter, err error) {
	st := status.Convert(err)
	code := http.StatusBadGateway
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		code = http.StatusBadRequest
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.FailedPrecondition:
		code = http.StatusConflict
	case codes.Unavailable, codes.Canceled:
		code = http.StatusServiceUnavailable
	}
	httpError(w, code, st.Message())
}

// moveRequest is the body of api/offsets/move.
type moveRequest struct {
	Consumer string `json:"consumer"`
	To       string `json:"to"` // earliest, latest, offset or time
	Offset   uint64 `json:"offset"`
	Time     string `json:"time"` // RFC 3339
	Execute  bool   `json:"execute"`
}

// change is one stored offset moved, as the pages show it (the columns of
// streamctl offsets set).
type change struct {
	JournalID string `json:"journal_id"`
	Slices    string `json:"slices"`
	From      string `json:"from"`
	To        string `json:"to"`
}

// moveOffsets calls AdminService.MoveOffsets: a dry run unless execute.
func (c *Console) moveOffsets(w http.ResponseWriter, r *http.Request, _ caller) {
	var req moveRequest
	if !decode(w, r, &req) {
		return
	}
	mr := &streamdv1.MoveOffsetsRequest{Selector: &streamdv1.OffsetSelector{Consumer: req.Consumer}, Execute: req.Execute}
	switch req.To {
	case "earliest":
		mr.ToStartPolicy = streamdv1.StartPolicy_START_POLICY_EARLIEST
	case "latest":
		mr.ToStartPolicy = streamdv1.StartPolicy_START_POLICY_LATEST
	case "offset":
		mr.ToOffset = req.Offset
	case "time":
		t, err := time.Parse(time.RFC3339Nano, req.Time)
		if err != nil {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("console: time %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z", req.Time))
			return
		}
		mr.ToStartPolicy, mr.ToTimeUnixNano = streamdv1.StartPolicy_START_POLICY_AT_TIME, t.UnixNano()
	default:
		httpError(w, http.StatusBadRequest, fmt.Sprintf("console: to %q: want earliest, latest, offset or time", req.To))
		return
	}
	resp, err := c.admin.MoveOffsets(r.Context(), mr)
	if err != nil {
		apiError(w, err)
		return
	}
	out := []change{}
	for _, pc := range resp.GetChanges() {
		to, err := offsets.EntryFromProto(pc.GetTo())
		if err != nil {
			httpError(w, http.StatusBadGateway, "console: the admin API sent a bad offset: "+err.Error())
			return
		}
		ch := change{JournalID: hex.EncodeToString(to.Key.JournalID), Slices: to.Key.Slices.String(), From: "(none)", To: to.Offset.String()}
		if pc.GetFrom() != nil {
			if from, err := offsets.EntryFromProto(pc.GetFrom()); err == nil {
				ch.From = from.Offset.String()
			}
		}
		out = append(out, ch)
	}
	writeJSON(w, http.StatusOK, map[string]any{"changes": out, "executed": resp.GetExecuted()})
}

// filterRequest is the body of api/filters/update.
type filterRequest struct {
	Consumer string   `json:"consumer"`
	Add      []string `json:"add"`    // criteria as text; ttl= counts from now
	Remove   []string `json:"remove"` // matched by action, field and value
	Execute  bool     `json:"execute"`
}

// updateFilter shows the filter an update would leave, or with execute
// applies it through AdminService.UpdateConsumerFilter.
func (c *Console) updateFilter(w http.ResponseWriter, r *http.Request, _ caller) {
	var req filterRequest
	if !decode(w, r, &req) {
		return
	}
	now := time.Now()
	add, bad := parseAll(req.Add, now)
	if bad == nil {
		var remove []*streamdv1.FilterCriterion
		if remove, bad = parseAll(req.Remove, now); bad == nil {
			c.applyFilter(w, r, req, add, remove)
			return
		}
	}
	httpError(w, http.StatusBadRequest, bad.Error)
}

func (c *Console) applyFilter(w http.ResponseWriter, r *http.Request, req filterRequest, add, remove []*streamdv1.FilterCriterion) {
	if len(add)+len(remove) == 0 {
		httpError(w, http.StatusBadRequest, "console: nothing to add or remove")
		return
	}
	if req.Execute {
		resp, err := c.admin.UpdateConsumerFilter(r.Context(), &streamdv1.UpdateConsumerFilterRequest{Consumer: req.Consumer, Add: add, Remove: remove})
		if err != nil {
			apiError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"filter": shown(resp.GetFilter()), "executed": true})
		return
	}
	if req.Consumer == "" {
		httpError(w, http.StatusBadRequest, "console: consumer is empty")
		return
	}
	list, err := c.admin.ListConsumers(r.Context(), &streamdv1.ListConsumersRequest{Consumer: req.Consumer})
	if err != nil {
		apiError(w, err)
		return
	}
	if len(list.GetConsumers()) != 1 {
		httpError(w, http.StatusBadGateway, fmt.Sprintf("console: the admin API listed %d consumers named %q", len(list.GetConsumers()), req.Consumer))
		return
	}
	cur := list.GetConsumers()[0].GetFilter()
	if missing := filters.Missing(cur, remove); len(missing) > 0 {
		httpError(w, http.StatusNotFound, fmt.Sprintf("console: %q is not in the filter of consumer %q", filters.Format(missing[0]), req.Consumer))
		return
	}
	next := filters.Apply(cur, add, remove)
	if _, err := filters.Compile(next, filters.Limits{}); err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"filter": shown(next), "executed": false})
}

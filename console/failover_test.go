package console

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamd/streamd/journal"
)

// api/primary/failover: the report of PrimaryService.Failover with the
// notes streamctl prints (a warning when another region has applied more
// of from's journal), a clear error for a request it cannot send, and a
// refusal for a token not granted "*" or a request without the CSRF token.
func TestFailoverAction(t *testing.T) {
	grants := map[string]Grant{"admin": {All: true}, "reader": {Streams: []string{"orders"}}}
	c, err := New(Options{Conn: &fakeAdmin{}, Gatherer: prometheus.NewRegistry(), Interval: time.Hour, Region: "eu",
		Info:   func() journal.Info { return journal.Info{} },
		Tokens: func(tok string) (Grant, bool) { g, ok := grants[tok]; return g, ok }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := c.Handler()
	post := func(token, body string, csrf bool) (int, map[string]any) {
		t.Helper()
		req := httptest.NewRequest("POST", Path+"api/primary/failover", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			id, _ := c.sessions.add(token)
			req.AddCookie(&http.Cookie{Name: cookieName, Value: id})
			if csrf {
				req.Header.Set(csrfHeader, c.csrf(id))
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var resp map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
			t.Fatalf("%q: %d, not JSON: %q", body, w.Code, w.Body.String())
		}
		return w.Code, resp
	}

	code, resp := post("admin", `{"from":"us","to":"eu"}`, true)
	if code != http.StatusOK || resp["executed"] != false || resp["at_risk"] != 2.0 {
		t.Fatalf("dry run: %d %v", code, resp)
	}
	var notes []string
	for _, n := range resp["notes"].([]any) {
		notes = append(notes, n.(string))
	}
	want := []string{
		"pinned types moving from us to eu: order",
		"failover point: the last event of us applied in eu: none of its events",
		"at risk: 2 event(s) of us's journal that no reachable region has applied",
		"ap has applied 1 more of us's journal than eu: those events reach eu through ap (relayed) if you wait; failing over now fences them",
		"dry run: nothing changed; Execute fails over",
	}
	if !slices.Equal(notes, want) {
		t.Errorf("notes:\n%s\nwant:\n%s", strings.Join(notes, "\n"), strings.Join(want, "\n"))
	}
	if rows := resp["progress"].([]any); len(rows) != 2 || rows[1].(map[string]any)["applied_offset"] != 4.0 {
		t.Errorf("progress %v, want eu's and ap's", rows)
	}
	if code, resp := post("admin", `{"from":"us","to":"eu","execute":true}`, true); code != http.StatusOK || resp["executed"] != true {
		t.Errorf("execute: %d %v", code, resp)
	}

	for _, tc := range []struct {
		token, body string
		csrf        bool
		code        int
		msg         string
	}{
		{"reader", `{"from":"us","to":"eu","execute":true}`, true, http.StatusForbidden, `granted "*"`},
		{"admin", `{"from":"us","to":"eu","execute":true}`, false, http.StatusForbidden, "CSRF"},
		{"", `{"from":"us","to":"eu","execute":true}`, true, http.StatusUnauthorized, "log in"},
		{"admin", `{"from":"us"}`, true, http.StatusBadRequest, "needs from"},
		{"admin", `{"from":"eu","to":"eu"}`, true, http.StatusBadRequest, "to itself"},
		{"admin", `{"from":"us","to":"eu","force":true}`, true, http.StatusBadRequest, "unknown field"},
	} {
		code, resp := post(tc.token, tc.body, tc.csrf)
		if msg, _ := resp["error"].(string); code != tc.code || !strings.Contains(msg, tc.msg) {
			t.Errorf("token %q, %s, csrf %v: %d %q; want %d naming %q", tc.token, tc.body, tc.csrf, code, msg, tc.code, tc.msg)
		}
	}
}

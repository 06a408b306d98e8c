package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

const (
	cookieName = "streamd_console"
	csrfHeader = "X-Console-CSRF"
	sessionTTL = 12 * time.Hour
)

// sessions map a session cookie to the token given at login; the token
// never reaches the browser again.
type sessions struct {
	mu   sync.Mutex
	byID map[string]session
}

type session struct {
	token   string
	expires time.Time
}

func (s *sessions) add(token string) (string, time.Time) {
	b := make([]byte, 32)
	rand.Read(b)
	id, now := hex.EncodeToString(b), time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range s.byID {
		if now.After(v.expires) {
			delete(s.byID, k)
		}
	}
	s.byID[id] = session{token: token, expires: now.Add(sessionTTL)}
	return id, now.Add(sessionTTL)
}

func (s *sessions) token(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.byID[id]
	if !ok || time.Now().After(v.expires) {
		return "", false
	}
	return v.token, true
}

func (s *sessions) remove(id string) {
	s.mu.Lock()
	delete(s.byID, id)
	s.mu.Unlock()
}

// caller is who makes a request: its session ("" without authentication)
// and grant.
type caller struct {
	session string
	grant   Grant
}

// who returns the request's caller; ok is false for a request without a
// valid session when the console requires tokens.
func (c *Console) who(r *http.Request) (caller, bool) {
	if c.opts.Tokens == nil {
		return caller{grant: Grant{All: true}}, true
	}
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return caller{}, false
	}
	tok, ok := c.sessions.token(ck.Value)
	if !ok {
		return caller{}, false
	}
	g, ok := c.opts.Tokens(tok)
	return caller{session: ck.Value, grant: g}, ok
}

// csrf is the CSRF token of a session: only a page of the console's own
// origin can read it (from api/session) and send it back in csrfHeader.
func (c *Console) csrf(session string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte("csrf:" + session))
	return hex.EncodeToString(m.Sum(nil))
}

// read wraps a handler of a read-only view: it needs a grant of a stream.
func (c *Console) read(h func(http.ResponseWriter, *http.Request, caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, ok := c.who(r)
		switch {
		case !ok:
			httpError(w, http.StatusUnauthorized, "console: log in with a token from --auth-token-file")
		case !who.grant.reads():
			httpError(w, http.StatusForbidden, "console: this token is granted no stream; the console's views need a token granted a stream or \"*\"")
		default:
			h(w, r, who)
		}
	}
}

// act wraps a handler of an action: a CSRF-safe POST, by a token granted
// "*" when all is set.
func (c *Console) act(all bool, h func(http.ResponseWriter, *http.Request, caller)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, ok := c.who(r)
		if !ok {
			httpError(w, http.StatusUnauthorized, "console: log in with a token from --auth-token-file")
			return
		}
		if msg := c.crossSite(r, who.session); msg != "" {
			httpError(w, http.StatusForbidden, msg)
			return
		}
		if all && !who.grant.All {
			httpError(w, http.StatusForbidden, "console: actions need a token granted \"*\"")
			return
		}
		h(w, r, who)
	}
}

// crossSite says why a state-changing request may come from another site,
// or "" if it cannot: it must be JSON (a cross-origin page cannot send that
// without a preflight the console never allows), carry the session's CSRF
// token and, if the browser sent an Origin, come from the console's own.
func (c *Console) crossSite(r *http.Request, session string) string {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return "console: an action must be a JSON request (Content-Type: application/json)"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return "console: request from origin " + o + ", not the console's own"
		}
	}
	if session == "" && c.opts.Tokens != nil {
		return "" // login: no session yet, JSON and Origin checked
	}
	if !hmac.Equal([]byte(r.Header.Get(csrfHeader)), []byte(c.csrf(session))) {
		return "console: missing or wrong " + csrfHeader + " header: reload the page"
	}
	return ""
}

// loopbackHost reports whether a Host header names this machine's
// loopback: localhost or a loopback IP, with any port.
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sessionInfo is what api/session tells the page.
type sessionInfo struct {
	Auth     bool     `json:"auth"`      // tokens are required
	LoggedIn bool     `json:"logged_in"` // the request has a valid session (always, without auth)
	Act      bool     `json:"act"`       // the caller may act
	All      bool     `json:"all"`       // the caller reads every stream
	Streams  []string `json:"streams"`   // else, the streams it may read
	CSRF     string   `json:"csrf,omitempty"`
	Region   string   `json:"region"`
}

func (c *Console) session(w http.ResponseWriter, r *http.Request) {
	who, ok := c.who(r)
	info := sessionInfo{Auth: c.opts.Tokens != nil, LoggedIn: ok, Region: c.opts.Region}
	if ok {
		info.Act, info.All, info.Streams, info.CSRF = who.grant.All, who.grant.All, who.grant.Streams, c.csrf(who.session)
	}
	writeJSON(w, http.StatusOK, info)
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if c.opts.Tokens == nil {
		httpError(w, http.StatusNotFound, "console: streamd runs without --auth-token-file: there is nothing to log in to")
		return
	}
	if msg := c.crossSite(r, ""); msg != "" {
		httpError(w, http.StatusForbidden, msg)
		return
	}
	var req struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		httpError(w, http.StatusBadRequest, "console: login: want {\"token\": \"...\"}")
		return
	}
	g, ok := c.opts.Tokens(req.Token)
	if !ok {
		httpError(w, http.StatusUnauthorized, "console: unknown token: use one from --auth-token-file")
		return
	}
	if !g.reads() {
		httpError(w, http.StatusForbidden, "console: this token is granted no stream; the console needs a token granted a stream or \"*\"")
		return
	}
	id, expires := c.sessions.add(req.Token)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: Path, Expires: expires,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

func (c *Console) logout(w http.ResponseWriter, _ *http.Request, who caller) {
	c.sessions.remove(who.session)
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Path, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

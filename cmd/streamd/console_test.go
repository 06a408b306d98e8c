package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// consoleURL is the console of d, through 127.0.0.1 whatever address its
// HTTP port listens on.
func consoleURL(t *testing.T, d *daemon) string {
	t.Helper()
	_, port, err := net.SplitHostPort(d.MetricsAddr)
	if err != nil {
		t.Fatalf("metrics address %q: %v", d.MetricsAddr, err)
	}
	return "http://127.0.0.1:" + port + "/console/"
}

// httpDo sends a request and returns its status and body.
func httpDo(t *testing.T, c *http.Client, method, url, body string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// firstEvent reads the first Server-Sent Event of url, failing after 10s.
func firstEvent(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	cc := *c
	cc.Timeout = 10 * time.Second
	resp, err := cc.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "event: ") {
			return resp.StatusCode, sc.Text()
		}
	}
	t.Fatalf("%s: no event: %v", url, sc.Err())
	return 0, ""
}

// The console is on by default on a loopback HTTP port and answers only
// loopback Host names there (no DNS rebinding); on a port that is not
// loopback it is off without auth, and --console cannot turn it on.
func TestConsoleOffWhenNotLoopback(t *testing.T) {
	loop := startDaemon(t, t.TempDir())
	if code, body := httpDo(t, http.DefaultClient, "GET", consoleURL(t, loop), "", nil); code != http.StatusOK || !strings.Contains(body, "streamd console") {
		t.Fatalf("console on loopback: %d %.200s", code, body)
	}
	if code, body := httpDo(t, http.DefaultClient, "GET", consoleURL(t, loop)+"api/session", "", map[string]string{"Host": "rebound.example:80"}); code != http.StatusForbidden || !strings.Contains(body, "not a loopback name") {
		t.Fatalf("console with a foreign Host: %d %s, want 403", code, body)
	}

	open := startDaemon(t, t.TempDir(), "--metrics-listen", "0.0.0.0:0")
	if code, body := httpDo(t, http.DefaultClient, "GET", consoleURL(t, open), "", nil); code != http.StatusNotFound {
		t.Fatalf("console on 0.0.0.0 without auth: %d %.200s, want 404", code, body)
	}
	if code, _ := httpDo(t, http.DefaultClient, "GET", consoleURL(t, open)+"api/live", "", nil); code != http.StatusNotFound {
		t.Fatalf("console API on 0.0.0.0 without auth: %d, want 404", code)
	}
	if code, _ := httpDo(t, http.DefaultClient, "GET", "http://"+strings.TrimSuffix(strings.TrimPrefix(consoleURL(t, open), "http://"), "/console/")+"/metrics", "", nil); code != http.StatusOK {
		t.Fatalf("/metrics on 0.0.0.0: %d", code)
	}

	out, err := exec.Command(binary, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0", "--console").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "--console on --metrics-listen 0.0.0.0:0, which is not loopback: add --auth-token-file") {
		t.Fatalf("--console on 0.0.0.0 without auth: %v\n%s\nwant exit 2 naming --auth-token-file", err, out)
	}
}

// On a port that is not loopback, with --auth-token-file, the console is
// on and behind a login: views need a token granted a stream, actions a
// token granted "*" and a CSRF-safe request.
func TestConsoleBehindAuth(t *testing.T) {
	tokens := writeTokens(t, "admin-tok *\nreader-tok all\npublisher-tok publish\n")
	d := startDaemon(t, t.TempDir(), "--metrics-listen", "0.0.0.0:0", "--auth-token-file", tokens)
	base := consoleURL(t, d)
	origin := strings.TrimSuffix(base, "/console/")
	client := func() *http.Client {
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar}
	}
	jsonH := map[string]string{"Content-Type": "application/json"}

	anon := client()
	if code, body := httpDo(t, anon, "GET", base, "", nil); code != http.StatusOK || !strings.Contains(body, `id="login"`) {
		t.Fatalf("page: %d %.200s", code, body)
	}
	if code, body := httpDo(t, anon, "GET", base+"api/live", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("live without a session: %d %s, want 401", code, body)
	}
	if code, _ := httpDo(t, anon, "POST", base+"api/offsets/move", `{"consumer":"x","to":"earliest"}`, jsonH); code != http.StatusUnauthorized {
		t.Fatalf("action without a session: %d, want 401", code)
	}
	for _, tc := range []struct {
		body   string
		header map[string]string
		want   int
	}{
		{`{"token":"wrong"}`, jsonH, http.StatusUnauthorized},
		{`{"token":"publisher-tok"}`, jsonH, http.StatusForbidden}, // no stream
		{`{"token":"admin-tok"}`, map[string]string{"Content-Type": "text/plain"}, http.StatusForbidden},
		{`{"token":"admin-tok"}`, map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, http.StatusForbidden},
	} {
		if code, body := httpDo(t, anon, "POST", base+"api/login", tc.body, tc.header); code != tc.want {
			t.Errorf("login %s %v: %d %s, want %d", tc.body, tc.header, code, body, tc.want)
		}
	}

	login := func(token string) (*http.Client, string) {
		t.Helper()
		c := client()
		if code, body := httpDo(t, c, "POST", base+"api/login", `{"token":"`+token+`"}`, map[string]string{"Content-Type": "application/json", "Origin": origin}); code != http.StatusOK {
			t.Fatalf("login %s: %d %s", token, code, body)
		}
		code, body := httpDo(t, c, "GET", base+"api/session", "", nil)
		var s struct {
			LoggedIn bool   `json:"logged_in"`
			Act      bool   `json:"act"`
			CSRF     string `json:"csrf"`
		}
		if err := json.Unmarshal([]byte(body), &s); code != http.StatusOK || err != nil || !s.LoggedIn || s.CSRF == "" {
			t.Fatalf("session of %s: %d %s", token, code, body)
		}
		return c, s.CSRF
	}

	reader, csrf := login("reader-tok")
	if code, ev := firstEvent(t, reader, base+"api/live"); code != http.StatusOK || ev != "event: snapshot" {
		t.Fatalf("live with a stream grant: %d %q", code, ev)
	}
	if code, ev := firstEvent(t, reader, base+"api/tail?stream=all&from=earliest"); code != http.StatusOK || ev != "event: hello" {
		t.Fatalf("tail of a granted stream: %d %q", code, ev)
	}
	if code, body := httpDo(t, reader, "GET", base+"api/tail?stream=secret", "", nil); code != http.StatusForbidden || !strings.Contains(body, `not granted stream \"secret\"`) {
		t.Fatalf("tail of a stream not granted: %d %s", code, body)
	}
	withCSRF := map[string]string{"Content-Type": "application/json", "X-Console-CSRF": csrf}
	if code, body := httpDo(t, reader, "POST", base+"api/offsets/move", `{"consumer":"nope","to":"earliest"}`, withCSRF); code != http.StatusForbidden || !strings.Contains(body, `granted \"*\"`) {
		t.Fatalf("action with a stream grant: %d %s, want 403", code, body)
	}

	admin, csrf := login("admin-tok")
	move := `{"consumer":"nope","to":"earliest"}`
	for _, tc := range []struct {
		header map[string]string
		want   int
		says   string
	}{
		{jsonH, http.StatusForbidden, "X-Console-CSRF"},
		{map[string]string{"Content-Type": "application/json", "X-Console-CSRF": otherFirst(csrf)}, http.StatusForbidden, "X-Console-CSRF"},
		{map[string]string{"Content-Type": "text/plain", "X-Console-CSRF": csrf}, http.StatusForbidden, "JSON"},
		{map[string]string{"Content-Type": "application/json", "X-Console-CSRF": csrf, "Origin": "http://evil.example"}, http.StatusForbidden, "origin"},
		// Through: the admin API answers that it runs no such consumer.
		{map[string]string{"Content-Type": "application/json", "X-Console-CSRF": csrf, "Origin": origin}, http.StatusNotFound, "unknown consumer"},
	} {
		if code, body := httpDo(t, admin, "POST", base+"api/offsets/move", move, tc.header); code != tc.want || !strings.Contains(body, tc.says) {
			t.Errorf("move with %v: %d %s, want %d saying %q", tc.header, code, body, tc.want, tc.says)
		}
	}
	// The reader's CSRF token is not the admin's.
	if code, _ := httpDo(t, admin, "POST", base+"api/offsets/move", move, withCSRF); code != http.StatusForbidden {
		t.Errorf("move with another session's CSRF token: %d, want 403", code)
	}
	if code, _ := httpDo(t, admin, "POST", base+"api/logout", `{}`, map[string]string{"Content-Type": "application/json", "X-Console-CSRF": csrf}); code != http.StatusOK {
		t.Fatalf("logout: %d", code)
	}
	if code, _ := httpDo(t, admin, "GET", base+"api/live", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("live after logout: %d, want 401", code)
	}
}

// SIGTERM ends the console's live streams first, so that the HTTP
// server's shutdown does not wait for them and give up.
func TestConsoleEndsStreamsOnShutdown(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	resp, err := http.Get(consoleURL(t, d) + "api/live")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() && !strings.HasPrefix(sc.Text(), "event: snapshot") {
	}
	if err := d.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM with a live stream open: %v; %s", err, d.Log())
	}
	io.Copy(io.Discard, resp.Body)
	if strings.Contains(d.Log(), "metrics server shutdown") {
		t.Fatalf("the HTTP server's shutdown waited for the console's stream:\n%s", d.Log())
	}
}

func TestConsoleFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		auth bool
		on   bool
		err  string
	}{
		{args: []string{"--metrics-listen", "127.0.0.1:9464"}, on: true},
		{args: []string{"--metrics-listen", "localhost:0"}, on: true},
		{args: []string{"--metrics-listen", "[::1]:9464"}, on: true},
		{args: []string{"--metrics-listen", ":9464"}},
		{args: []string{"--metrics-listen", "0.0.0.0:9464"}},
		{args: []string{"--metrics-listen", "10.0.0.5:9464"}},
		{args: []string{"--metrics-listen", ""}},
		{args: []string{"--metrics-listen", ":9464"}, auth: true, on: true},
		{args: []string{"--metrics-listen", "", "--console"}, err: "--metrics-listen, which is disabled"},
		{args: []string{"--metrics-listen", ":9464", "--console"}, err: "which is not loopback: add --auth-token-file"},
		{args: []string{"--metrics-listen", ":9464", "--console"}, auth: true, on: true},
		{args: []string{"--metrics-listen", "127.0.0.1:9464", "--console=false"}},
		{args: []string{"--metrics-listen", ":9464", "--console=false"}, auth: true},
	} {
		var (
			on  bool
			err error
		)
		app := &cli.App{
			Flags:  []cli.Flag{&cli.StringFlag{Name: "metrics-listen"}, consoleFlag()},
			Action: func(c *cli.Context) error { on, err = consoleOn(c, tc.auth); return nil },
		}
		if runErr := app.Run(append([]string{"streamd"}, tc.args...)); runErr != nil {
			t.Fatal(runErr)
		}
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%v auth=%v: error %v, want one saying %q", tc.args, tc.auth, err, tc.err)
		case tc.err == "" && (err != nil || on != tc.on):
			t.Errorf("%v auth=%v: on=%v err=%v, want on=%v", tc.args, tc.auth, on, err, tc.on)
		}
	}
}

// otherFirst is token with its first character changed.
func otherFirst(token string) string {
	if token[0] == '0' {
		return "1" + token[1:]
	}
	return "0" + token[1:]
}

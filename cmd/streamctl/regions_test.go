package main

import (
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/streamd/streamd/internal/kubetest"
	"github.com/streamd/streamd/internal/netproxy"
	"github.com/streamd/streamd/internal/streamdtest"
)

// TestRegionScripts runs the multi-region scripts: several streamd
// processes of one project, started, killed and started again by name.
func TestRegionScripts(t *testing.T) {
	if _, err := streamdtest.Binary(); err != nil {
		t.Fatal(err)
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/regions",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"closed-port":  closedPort,
			"region-start": regionStart,
			"region-kill":  regionKill,
			"eventually":   eventually,
			"proxy-start":  proxyStart,
			"proxy-reset":  proxyReset,
			"proxy-bytes":  proxyBytes,
			"kube-api":     kubeAPI,
		},
	})
}

// regionDaemons are the processes region-start ran, per script and name.
var regionDaemons = struct {
	sync.Mutex
	m map[*testscript.TestScript]map[string]*streamdtest.Daemon
}{m: map[*testscript.TestScript]map[string]*streamdtest.Daemon{}}

// region-start NAME [FLAG...] runs streamd with the data directory
// streamd-data-NAME in $WORK and sets NAME_ADDR (NAME upper-cased) to its
// gRPC address; started again after region-kill, it opens the same
// directory. The process is killed when the script ends.
func regionStart(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) == 0 {
		ts.Fatalf("usage: region-start NAME [FLAG...]")
	}
	name := args[0]
	d, err := streamdtest.Run(streamdtest.Options{DataDir: ts.MkAbs("streamd-data-" + name), Args: args[1:], Dir: ts.Getenv("WORK")})
	if d != nil {
		ts.Defer(d.Kill)
	}
	ts.Check(err)
	regionDaemons.Lock()
	if regionDaemons.m[ts] == nil {
		regionDaemons.m[ts] = map[string]*streamdtest.Daemon{}
		ts.Defer(func() { regionDaemons.Lock(); delete(regionDaemons.m, ts); regionDaemons.Unlock() })
	}
	regionDaemons.m[ts][name] = d
	regionDaemons.Unlock()
	ts.Setenv(strings.ToUpper(name)+"_ADDR", d.Addr)
}

// kube-api serves a stand-in of the Kubernetes API (Leases, ConfigMaps)
// over HTTP on 127.0.0.1, for the pods of a group (--kube-api), and sets
// KUBE_API to its URL. It closes when the script ends.
func kubeAPI(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: kube-api")
	}
	srv := httptest.NewServer(kubetest.New())
	ts.Defer(srv.Close)
	ts.Setenv("KUBE_API", srv.URL)
}

// region-kill NAME kills (SIGKILL) the streamd region-start ran as NAME.
func regionKill(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: region-kill NAME")
	}
	regionDaemons.Lock()
	d := regionDaemons.m[ts][args[0]]
	regionDaemons.Unlock()
	if d == nil {
		ts.Fatalf("region-kill: no region %q was started", args[0])
	}
	d.Kill()
}

// eventuallyTimeout bounds how long eventually retries.
const eventuallyTimeout = 60 * time.Second

// eventually REGEXP PROGRAM [ARG...] runs the program until its standard
// output matches REGEXP (multi-line mode), for up to a minute; the last
// run's output is what stdout and stderr then check.
func eventually(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: eventually REGEXP PROGRAM [ARG...]")
	}
	re, err := regexp.Compile("(?m)" + args[0])
	ts.Check(err)
	deadline := time.Now().Add(eventuallyTimeout)
	for {
		err := ts.Exec(args[1], args[2:]...)
		out := ts.ReadFile("stdout")
		if err == nil && re.MatchString(out) {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("eventually: after %v, %s still prints\n%s(err %v, stderr %s); want a match of %q", eventuallyTimeout, args[1], out, err, ts.ReadFile("stderr"), args[0])
		}
		time.Sleep(200 * time.Millisecond) // a poll interval: the condition is the output
	}
}

// proxies are the proxies proxy-start ran, per script and name.
var proxies = struct {
	sync.Mutex
	m map[*testscript.TestScript]map[string]*netproxy.Proxy
}{m: map[*testscript.TestScript]map[string]*netproxy.Proxy{}}

// proxy-start NAME TARGET listens on 127.0.0.1 and forwards every
// connection to TARGET, counting the bytes TARGET sends back; it sets
// NAME_PROXY (NAME upper-cased) to its address. It closes when the script
// ends.
func proxyStart(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: proxy-start NAME TARGET")
	}
	p, err := netproxy.Start(args[1])
	ts.Check(err)
	ts.Defer(func() { p.Close() })
	proxies.Lock()
	if proxies.m[ts] == nil {
		proxies.m[ts] = map[string]*netproxy.Proxy{}
		ts.Defer(func() { proxies.Lock(); delete(proxies.m, ts); proxies.Unlock() })
	}
	proxies.m[ts][args[0]] = p
	proxies.Unlock()
	ts.Setenv(strings.ToUpper(args[0])+"_PROXY", p.Addr())
}

func scriptProxy(ts *testscript.TestScript, name string) *netproxy.Proxy {
	proxies.Lock()
	defer proxies.Unlock()
	p := proxies.m[ts][name]
	if p == nil {
		ts.Fatalf("no proxy %q was started", name)
	}
	return p
}

// proxy-reset NAME sets the count of NAME's bytes to 0.
func proxyReset(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: proxy-reset NAME")
	}
	scriptProxy(ts, args[0]).ResetBytes()
}

// proxy-bytes NAME < N | >= N checks the bytes NAME's target sent since
// proxy-start or proxy-reset.
func proxyBytes(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 || (args[1] != "<" && args[1] != ">=") {
		ts.Fatalf("usage: proxy-bytes NAME < N | >= N")
	}
	n, err := strconv.ParseInt(args[2], 10, 64)
	ts.Check(err)
	_, got := scriptProxy(ts, args[0]).Bytes()
	ts.Logf("proxy %s: %d bytes", args[0], got)
	if (args[1] == "<") != (got < n) {
		ts.Fatalf("proxy %s carried %d bytes; want %s %d", args[0], got, args[1], n)
	}
}

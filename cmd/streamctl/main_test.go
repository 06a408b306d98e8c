package main

import (
	debugbuildinfo "debug/buildinfo"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/streamd/streamd/internal/buildinfo"
	"github.com/streamd/streamd/internal/streamdtest"
	"github.com/streamd/streamd/internal/testpki"
	"github.com/streamd/streamd/internal/testwait"
)

func TestMain(m *testing.M) {
	testscript.Main(streamdtest.M(m), map[string]func(){
		"streamctl": func() { os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// TestScripts runs the scripts against the real daemon (built once, or
// $STREAMD_BIN).
func TestScripts(t *testing.T) {
	if _, err := streamdtest.Binary(); err != nil {
		t.Fatal(err)
	}
	serviceDir = t.TempDir()
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"streamd-start":   streamdStart,
			"streamd-stop":    streamdStop,
			"streamd-restart": streamdRestart,
			"wait-file":       waitFile,
			"wait-stdout":     waitStdout,
			"closed-port":     closedPort,
			"gen-certs":       genCerts,
			"issue-cert":      issueCert,
			"build-info":      buildInfo,
			"service-start":   serviceStart,
		},
	})
}

// streamd-start [as=NAME] [FLAG...] runs streamd on an ephemeral port with a
// data directory in $WORK and sets STREAMD_ADDR (and NAME_ADDR with as=NAME,
// whose data directory is then streamd-data-NAME); the process is killed
// when the script ends.
func streamdStart(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! streamd-start")
	}
	name, dataDir := "", "streamd-data"
	if len(args) > 0 && strings.HasPrefix(args[0], "as=") {
		name, args = strings.TrimPrefix(args[0], "as="), args[1:]
		dataDir += "-" + name
	}
	// Relative paths in args are the script's.
	d, err := streamdtest.Run(streamdtest.Options{DataDir: ts.MkAbs(dataDir), Args: args, Dir: ts.Getenv("WORK")})
	if d != nil {
		ts.Defer(d.Kill)
		setDaemon(ts, name, started{d: d, args: args})
	}
	ts.Check(err)
	ts.Setenv("STREAMD_ADDR", d.Addr)
	if name != "" {
		ts.Setenv(name+"_ADDR", d.Addr)
	}
}

// started is a streamd a script started, with the streamd-start arguments
// after as=NAME.
type started struct {
	d    *streamdtest.Daemon
	args []string
}

// daemons are the streamd processes of each running script, by as=NAME.
var daemons struct {
	sync.Mutex
	m map[*testscript.TestScript]map[string]started
}

func setDaemon(ts *testscript.TestScript, name string, s started) {
	daemons.Lock()
	defer daemons.Unlock()
	if daemons.m == nil {
		daemons.m = map[*testscript.TestScript]map[string]started{}
	}
	if daemons.m[ts] == nil {
		daemons.m[ts] = map[string]started{}
		ts.Defer(func() { daemons.Lock(); delete(daemons.m, ts); daemons.Unlock() })
	}
	daemons.m[ts][name] = s
}

// streamd-stop [as=NAME] stops the script's streamd (NAME's with as=NAME)
// with SIGTERM and waits for a clean exit.
func streamdStop(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) > 1 {
		ts.Fatalf("usage: streamd-stop [as=NAME]")
	}
	stopDaemon(ts, scriptDaemon(ts, args))
}

// streamd-restart [as=NAME] stops the script's streamd (NAME's with
// as=NAME) like streamd-stop unless it has exited, and starts it again with
// the same data directory and flags, listening on the same address.
func streamdRestart(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) > 1 {
		ts.Fatalf("usage: streamd-restart [as=NAME]")
	}
	s := scriptDaemon(ts, args)
	if !s.d.Exited() {
		stopDaemon(ts, s)
	}
	again := append(slices.Clip(s.args), "--listen", s.d.Addr)
	if len(args) == 1 {
		again = append([]string{args[0]}, again...)
	}
	addr := ts.Getenv("STREAMD_ADDR")
	streamdStart(ts, false, again)
	ts.Setenv("STREAMD_ADDR", addr) // the same address; keep the script's choice

}

// scriptDaemon is the streamd started as args[0] (as=NAME), or without a
// name.
func scriptDaemon(ts *testscript.TestScript, args []string) started {
	name := ""
	if len(args) == 1 {
		name = strings.TrimPrefix(args[0], "as=")
	}
	daemons.Lock()
	s, ok := daemons.m[ts][name]
	daemons.Unlock()
	if !ok {
		ts.Fatalf("no streamd started as %q", name)
	}
	return s
}

func stopDaemon(ts *testscript.TestScript, s started) {
	ts.Check(syscall.Kill(s.d.PID(), syscall.SIGTERM))
	if !testwait.Until(30*time.Second, s.d.Exited) {
		ts.Fatalf("streamd did not exit within 30s of SIGTERM:\n%s", s.d.Log())
	}
	if err := s.d.Err(); err != nil {
		ts.Fatalf("streamd exited with %v after SIGTERM:\n%s", err, s.d.Log())
	}
}

// wait-stdout REGEXP COMMAND [ARG...] runs COMMAND until its standard
// output has a line matching REGEXP (up to 30s).
func waitStdout(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: wait-stdout REGEXP COMMAND [ARG...]")
	}
	re, err := regexp.Compile("(?m)" + args[0])
	ts.Check(err)
	if !testwait.Until(30*time.Second, func() bool {
		return ts.Exec(args[1], args[2:]...) == nil && re.MatchString(ts.ReadFile("stdout"))
	}) {
		ts.Fatalf("%q printed no line matching %q within 30s; last stdout:\n%s\nstderr:\n%s", args[1:], args[0], ts.ReadFile("stdout"), ts.ReadFile("stderr"))
	}
}

// wait-file FILE REGEXP waits (up to 30s) until FILE has a line matching
// REGEXP.
func waitFile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: wait-file FILE REGEXP")
	}
	re, err := regexp.Compile("(?m)" + args[1])
	ts.Check(err)
	path := ts.MkAbs(args[0])
	if !testwait.Until(30*time.Second, func() bool {
		b, err := os.ReadFile(path)
		return err == nil && re.Match(b)
	}) {
		b, _ := os.ReadFile(path)
		ts.Fatalf("%s has no line matching %q within 30s; it holds:\n%s", args[0], args[1], b)
	}
}

// serviceDir holds the example service's binary, built at its first use.
var (
	serviceDir   string
	serviceOnce  sync.Once
	serviceBin   string
	serviceBuild error
)

// service-start [FLAG...] runs examples/service (built once) with FLAGs
// and --listen 127.0.0.1:0, waits until it listens and sets SERVICE_ADDR
// (and SERVICE_PID);
// it is stopped with SIGTERM when the script ends.
func serviceStart(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! service-start")
	}
	serviceOnce.Do(func() {
		serviceBin = filepath.Join(serviceDir, "service")
		out, err := exec.Command("go", "build", "-o", serviceBin, "github.com/streamd/streamd/examples/service").CombinedOutput()
		if err != nil {
			serviceBuild = fmt.Errorf("build examples/service: %v\n%s", err, out)
		}
	})
	ts.Check(serviceBuild)
	ready := ts.MkAbs(fmt.Sprintf("service-ready-%d", time.Now().UnixNano()))
	cmd := exec.Command(serviceBin, append([]string{"--listen", "127.0.0.1:0", "--ready-file", ready}, args...)...)
	cmd.Dir = ts.Getenv("WORK")
	log, err := os.Create(ts.MkAbs("service.log"))
	ts.Check(err)
	cmd.Stdout, cmd.Stderr = log, log
	ts.Check(cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); log.Close(); close(exited) }()
	ts.Defer(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	var addr []byte
	if !testwait.Until(30*time.Second, func() bool {
		addr, err = os.ReadFile(ready)
		return err == nil && len(addr) > 0
	}) {
		ts.Fatalf("examples/service did not listen within 30s; its log is $WORK/service.log")
	}
	ts.Setenv("SERVICE_ADDR", string(addr))
	ts.Setenv("SERVICE_PID", fmt.Sprint(cmd.Process.Pid))
}

// closed-port sets STREAMD_ADDR to a local port nothing listens on.
func closedPort(ts *testscript.TestScript, neg bool, args []string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	addr := l.Addr().String()
	ts.Check(l.Close())
	ts.Setenv("STREAMD_ADDR", addr)
}

// gen-certs [DIR] writes a test CA, a server certificate for 127.0.0.1 and a
// client certificate to DIR (default $WORK): ca.pem, server.pem,
// server-key.pem, client.pem, client-key.pem.
func genCerts(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) > 1 {
		ts.Fatalf("usage: gen-certs [DIR]")
	}
	dir := ts.Getenv("WORK")
	if len(args) == 1 {
		dir = ts.MkAbs(args[0])
		ts.Check(os.MkdirAll(dir, 0o755))
	}
	_, err := testpki.Write(dir)
	ts.Check(err)
}

// issue-cert NAME CN [URI...] writes a client certificate NAME.pem and its
// key NAME-key.pem to $WORK, signed by gen-certs' CA, with subject CN and
// the URI SANs.
func issueCert(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: issue-cert NAME CN [URI...]")
	}
	ts.Check(testpki.Issue(ts.Getenv("WORK"), args[0], args[1], args[2:]...))
}

// build-info sets CLIENT_BUILD to what streamctl --version prints after
// "streamctl " (streamctl runs in this test binary), and SERVER_VERSION and
// SERVER_REVISION to the build of the streamd binary the scripts run, read
// from the binary.
func buildInfo(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) > 0 {
		ts.Fatalf("usage: build-info")
	}
	bin, err := streamdtest.Binary()
	ts.Check(err)
	bi, err := debugbuildinfo.ReadFile(bin)
	ts.Check(err)
	server := buildinfo.From(bi)
	ts.Setenv("CLIENT_BUILD", buildinfo.Read().String())
	ts.Setenv("SERVER_VERSION", server.Version)
	ts.Setenv("SERVER_REVISION", server.Revision)
}

package main

import (
	debugbuildinfo "debug/buildinfo"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
			"streamd-start": streamdStart,
			"streamd-stop":  streamdStop,
			"service-start": serviceStart,
			"waitfor":       waitFor,
			"closed-port":   closedPort,
			"gen-certs":     genCerts,
			"build-info":    buildInfo,
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
		daemons.Store(daemonKey{ts, name}, d)
	}
	ts.Check(err)
	ts.Setenv("STREAMD_ADDR", d.Addr)
	if name != "" {
		ts.Setenv(name+"_ADDR", d.Addr)
	}
}

// daemons are the streamd processes of the scripts, by script and as=NAME.
var daemons sync.Map // daemonKey → *streamdtest.Daemon

type daemonKey struct {
	ts   *testscript.TestScript
	name string
}

// streamd-stop NAME stops the streamd started as=NAME with SIGTERM and
// waits for it to exit (cleanly: status 0).
func streamdStop(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: streamd-stop NAME")
	}
	d, ok := daemons.Load(daemonKey{ts, args[0]})
	if !ok {
		ts.Fatalf("no streamd started as=%s", args[0])
	}
	dm := d.(*streamdtest.Daemon)
	ts.Check(syscall.Kill(dm.PID(), syscall.SIGTERM))
	if !testwait.Until(30*time.Second, dm.Exited) {
		ts.Fatalf("streamd %s did not exit within 30s of SIGTERM", args[0])
	}
	if err := dm.Err(); err != nil {
		ts.Fatalf("streamd %s: %v", args[0], err)
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

// waitfor REGEXP PROGRAM [ARG...] runs PROGRAM until its standard output
// matches REGEXP (multi-line mode), for at most 30s; stdout is then the
// matching run's.
func waitFor(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: waitfor REGEXP PROGRAM [ARG...]")
	}
	re, err := regexp.Compile("(?m)" + args[0])
	ts.Check(err)
	var out string
	if !testwait.Until(30*time.Second, func() bool {
		ts.Exec(args[1], args[2:]...)
		out = ts.ReadFile("stdout")
		return re.MatchString(out)
	}) {
		ts.Fatalf("no output of %v matched %q within 30s; the last:\n%s", args[1:], args[0], out)
	}
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

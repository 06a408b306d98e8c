package main

import (
	debugbuildinfo "debug/buildinfo"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/streamd/streamd/internal/buildinfo"
	"github.com/streamd/streamd/internal/streamdtest"
	"github.com/streamd/streamd/internal/testpki"
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
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"streamd-start": streamdStart,
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
	}
	ts.Check(err)
	ts.Setenv("STREAMD_ADDR", d.Addr)
	if name != "" {
		ts.Setenv(name+"_ADDR", d.Addr)
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

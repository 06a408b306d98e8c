package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/streamd/streamd/internal/testpki"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"streamctl": func() { os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr)) },
	})
}

// streamdBinary is the real daemon, built once by TestScripts.
var streamdBinary string

func TestScripts(t *testing.T) {
	// STREAMD_BIN runs the scripts against a prebuilt daemon.
	if streamdBinary = os.Getenv("STREAMD_BIN"); streamdBinary == "" {
		streamdBinary = filepath.Join(t.TempDir(), "streamd")
		if out, err := exec.Command("go", "build", "-o", streamdBinary, "github.com/streamd/streamd/cmd/streamd").CombinedOutput(); err != nil {
			t.Fatalf("build streamd: %v\n%s", err, out)
		}
	}
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"streamd-start": streamdStart,
			"closed-port":   closedPort,
			"gen-certs":     genCerts,
		},
	})
}

var listenRE = regexp.MustCompile(`grpc=(127\.0\.0\.1:\d+)`)

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
	cmd := exec.Command(streamdBinary, append([]string{"--data-dir", ts.MkAbs(dataDir), "--listen", "127.0.0.1:0", "--metrics-listen", ""}, args...)...)
	cmd.Dir = ts.Getenv("WORK") // relative paths in args are the script's
	stderr, err := cmd.StderrPipe()
	ts.Check(err)
	ts.Check(cmd.Start())
	done := make(chan struct{})
	ts.Defer(func() {
		cmd.Process.Kill()
		<-done
	})
	found := make(chan string, 1)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
		cmd.Wait()
	}()
	select {
	case addr := <-found:
		ts.Setenv("STREAMD_ADDR", addr)
		if name != "" {
			ts.Setenv(name+"_ADDR", addr)
		}
	case <-done:
		ts.Fatalf("streamd exited before listening")
	case <-time.After(30 * time.Second):
		ts.Fatalf("streamd did not say where it listens")
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

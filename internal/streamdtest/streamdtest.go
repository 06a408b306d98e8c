// Package streamdtest runs the real streamd daemon as a child process for
// tests: the binary is built once per test binary, each daemon listens on
// ephemeral ports of 127.0.0.1, and its addresses come from the file
// streamd writes with --ready-file once every listener is up, not from its
// log. A Daemon is stopped with a signal (SIGTERM, SIGKILL) and started
// again on the same data directory.
//
// Every Daemon keeps the last lines of its stderr, and the beginning of a
// Go crash report, for failure messages, in a Lines, which tests also use
// for the stderr of their other child processes. A test binary that uses the
// package wraps its testing.M with M, so that the binary is removed after
// the tests.
//
// It does not build streamd with the race detector, and it does not dial
// the daemon: callers choose their own gRPC options.
package streamdtest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/streamd/streamd/internal/testwait"
)

// BinaryEnv names a prebuilt streamd binary to run instead of building one.
const BinaryEnv = "STREAMD_BIN"

var build struct {
	once sync.Once
	dir  string // removed by M's Run
	path string
	err  error
}

// Binary is the path of the streamd binary: $STREAMD_BIN, or else streamd
// built once per test binary into a temporary directory.
func Binary() (string, error) {
	build.once.Do(func() {
		if build.path = os.Getenv(BinaryEnv); build.path != "" {
			return
		}
		if build.dir, build.err = os.MkdirTemp("", "streamdtest-bin"); build.err != nil {
			return
		}
		build.path = filepath.Join(build.dir, "streamd")
		out, err := exec.Command("go", "build", "-o", build.path, "github.com/streamd/streamd/cmd/streamd").CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("streamdtest: build streamd: %w\n%s", err, out)
		}
	})
	return build.path, build.err
}

// TestingM is what TestMain runs: *testing.M, or a wrapper of it.
type TestingM interface{ Run() int }

// M wraps m so that its Run removes the binary Binary built once the tests
// have run: os.Exit(streamdtest.M(m).Run()), or
// goleak.VerifyTestMain(streamdtest.M(m)).
func M(m TestingM) TestingM { return cleanupM{m} }

type cleanupM struct{ m TestingM }

func (c cleanupM) Run() int {
	code := c.m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	return code
}

// Options say how to run a daemon.
type Options struct {
	// DataDir is --data-dir; "" passes none (the environment may set it).
	DataDir string
	// Args are more flags, after the ones the package sets: a flag given
	// again here wins.
	Args []string
	// Metrics serves /metrics on an ephemeral port; else --metrics-listen "".
	Metrics bool
	// Env is the environment of the process (nil: the test's).
	Env []string
	// Dir is its working directory ("": the test's).
	Dir string
	// StartTimeout bounds the wait for the ready file (0: 30s).
	StartTimeout time.Duration
}

// Daemon is a running (or exited) streamd process.
type Daemon struct {
	// Addr is the gRPC address, MetricsAddr the /metrics one ("" without
	// Options.Metrics).
	Addr, MetricsAddr string

	opts Options
	cmd  *exec.Cmd
	done chan struct{} // closed once the process exited and stderr is read
	err  error         // of Wait, set before done is closed
	log  Lines
}

// Start runs a daemon and waits until it is ready, failing the test if it
// does not get there. It is killed at the test's cleanup if still running.
func Start(t testing.TB, o Options) *Daemon {
	t.Helper()
	d, err := Run(o)
	if d != nil {
		t.Cleanup(d.Kill)
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Run runs a daemon and waits until it is ready. The caller kills it (Kill)
// when done, also when Run returns an error with a Daemon; the error of a
// daemon that exited or timed out includes its stderr.
func Run(o Options) (*Daemon, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	readyDir, err := os.MkdirTemp("", "streamdtest-ready")
	if err != nil {
		return nil, err
	}
	readyFile := filepath.Join(readyDir, "ready.json")
	metrics := ""
	if o.Metrics {
		metrics = "127.0.0.1:0"
	}
	args := []string{"--listen", "127.0.0.1:0", "--metrics-listen", metrics, "--ready-file", readyFile}
	if o.DataDir != "" {
		args = append(args, "--data-dir", o.DataDir)
	}
	cmd := exec.Command(bin, append(args, o.Args...)...)
	cmd.Env, cmd.Dir = o.Env, o.Dir
	d := &Daemon{opts: o, cmd: cmd, done: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		os.RemoveAll(readyDir)
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(readyDir)
		return nil, fmt.Errorf("streamdtest: start streamd: %w", err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			d.log.Add(sc.Text())
		}
		d.err = cmd.Wait() // after reading to the end: Wait closes the pipe
		os.RemoveAll(readyDir)
		close(d.done)
	}()
	timeout := o.StartTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	var r struct{ GRPC, Metrics string }
	ready := testwait.Until(timeout, func() bool {
		b, err := os.ReadFile(readyFile)
		return err == nil && json.Unmarshal(b, &r) == nil || d.Exited()
	})
	switch {
	case d.Exited():
		return d, fmt.Errorf("streamd %q exited before it was ready (%v); %s", cmd.Args[1:], d.err, d.failure())
	case !ready:
		return d, fmt.Errorf("streamd %q was not ready within %v; %s", cmd.Args[1:], timeout, d.failure())
	}
	d.Addr, d.MetricsAddr = r.GRPC, r.Metrics
	return d, nil
}

// Restart runs a new daemon with the options of d, which must have exited
// (Stop it first): the same data directory, flags and environment.
func (d *Daemon) Restart(t testing.TB) *Daemon {
	t.Helper()
	if !d.Exited() {
		t.Fatal("streamdtest: Restart of a daemon that is still running; Stop it first")
	}
	return Start(t, d.opts)
}

// Stop sends sig and waits for the exit, failing the test (after a
// SIGKILL) if it takes longer than timeout. It returns how the process
// ended: nil for exit code 0.
func (d *Daemon) Stop(t testing.TB, sig syscall.Signal, timeout time.Duration) error {
	t.Helper()
	d.cmd.Process.Signal(sig) // fails harmlessly if it has exited
	return d.Wait(t, timeout)
}

// Wait waits for the exit, failing the test (after a SIGKILL) if it takes
// longer than timeout. It returns how the process ended.
func (d *Daemon) Wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-d.done:
		return d.err
	case <-time.After(timeout):
		d.Kill()
		t.Fatalf("streamd did not exit within %v; %s", timeout, d.failure())
		return nil
	}
}

// Kill sends SIGKILL and waits for the exit.
func (d *Daemon) Kill() {
	d.cmd.Process.Kill() // fails harmlessly if it has exited
	<-d.done
}

// Exited reports whether the process has exited.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// Err is how the process ended (nil for exit code 0, or while it runs).
func (d *Daemon) Err() error {
	if !d.Exited() {
		return nil
	}
	return d.err
}

// ExitCode is the exit code: -1 for a death by signal or while it runs.
func (d *Daemon) ExitCode() int {
	if !d.Exited() {
		return -1
	}
	var ee *exec.ExitError
	if errors.As(d.err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

// PID is the process id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// DataDir is the data directory it was started on ("" if the environment
// gave it).
func (d *Daemon) DataDir() string { return d.opts.DataDir }

// Log is the last lines (up to 400) streamd wrote to stderr.
func (d *Daemon) Log() string { return d.log.String() }

// CrashReport is the beginning of streamd's Go crash report, if it wrote one.
func (d *Daemon) CrashReport() string { return d.log.CrashReport() }

// failure is what a failure message shows of the process: its crash
// report, or else its stderr.
func (d *Daemon) failure() string {
	if c := d.CrashReport(); c != "" {
		return "its crash report begins:\n" + c
	}
	return "its stderr:\n" + d.Log()
}

// Lines keeps the last lines (up to 400) a process wrote, and the
// beginning of a Go crash report (which the goroutine dump after it would
// push out), for failure messages. Its zero value is empty and ready; it
// is safe for concurrent use.
type Lines struct {
	mu    sync.Mutex
	all   []string
	crash []string
}

const keptLines, keptCrashLines = 400, 40

// Add keeps line s (without its newline).
func (l *Lines) Add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.crash) == 0 && (strings.HasPrefix(s, "fatal error") || strings.HasPrefix(s, "panic:") || strings.HasPrefix(s, "unexpected fault address")) ||
		len(l.crash) > 0 && len(l.crash) < keptCrashLines {
		l.crash = append(l.crash, s)
	}
	if len(l.all) == keptLines {
		l.all = append(l.all[:0], l.all[keptLines/2:]...)
	}
	l.all = append(l.all, s)
}

// String is the lines kept, joined by newlines.
func (l *Lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.all, "\n")
}

// CrashReport is the beginning of the Go crash report among the lines
// added, or "".
func (l *Lines) CrashReport() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.crash, "\n")
}

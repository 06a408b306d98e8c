package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tools are the binaries a run uses.
type tools struct {
	streamd    string
	natsServer string
	natsCLI    string // the nats CLI, for `nats bench`
}

// prepareTools builds streamd from the module at modRoot into cacheDir and
// installs nats-server at natsVersion and the nats CLI at cliVersion into
// cacheDir unless they are there.
func prepareTools(ctx context.Context, modRoot, cacheDir, natsVersion, cliVersion string) (tools, error) {
	t := tools{
		streamd:    filepath.Join(cacheDir, "streamd"),
		natsServer: filepath.Join(cacheDir, "nats-server-"+natsVersion, "nats-server"),
		natsCLI:    filepath.Join(cacheDir, "natscli-"+cliVersion, "nats"),
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return t, err
	}
	build := exec.CommandContext(ctx, "go", "build", "-o", t.streamd, "./cmd/streamd")
	build.Dir = modRoot
	if out, err := build.CombinedOutput(); err != nil {
		return t, fmt.Errorf("go build ./cmd/streamd: %w\n%s", err, out)
	}
	for _, tool := range []struct{ bin, pkg string }{
		{t.natsServer, "github.com/nats-io/nats-server/v2@" + natsVersion},
		{t.natsCLI, "github.com/nats-io/natscli/nats@" + cliVersion},
	} {
		if _, err := os.Stat(tool.bin); err == nil {
			continue
		}
		logf("installing %s into %s (once)", tool.pkg, filepath.Dir(tool.bin))
		inst := exec.CommandContext(ctx, "go", "install", tool.pkg)
		inst.Dir = cacheDir // outside the module: go install pkg@version ignores it anyway
		inst.Env = append(os.Environ(), "GOBIN="+filepath.Dir(tool.bin), "GOFLAGS=")
		if out, err := inst.CombinedOutput(); err != nil {
			return t, fmt.Errorf("go install %s: %w\n%s", tool.pkg, err, out)
		}
	}
	return t, nil
}

// running holds every child process the harness started and has not seen
// exit, so that an interrupted run ends them too.
var running = struct {
	sync.Mutex
	procs map[*os.Process]bool
}{procs: map[*os.Process]bool{}}

func track(p *os.Process, alive bool) {
	running.Lock()
	defer running.Unlock()
	if alive {
		running.procs[p] = true
	} else {
		delete(running.procs, p)
	}
}

// killChildren kills every child process still running.
func killChildren() {
	running.Lock()
	defer running.Unlock()
	for p := range running.procs {
		_ = p.Kill()
	}
}

// server is a running server process.
type server struct {
	name string
	cmd  *exec.Cmd
	addr string // host:port of its client port
	dir  string // its data, removed by stop
	log  string // its log file
	exit chan struct{}
}

var (
	streamdAddrRE = regexp.MustCompile(`msg="streamd serving" grpc=(\S+)`)
	natsAddrRE    = regexp.MustCompile(`Listening for client connections on (\S+)`)
	natsReadyRE   = regexp.MustCompile(`Server is ready`)
)

// startStreamd starts streamd with its defaults (fsync before ack) and
// flags on an ephemeral loopback port.
func startStreamd(bin, workDir string, flags ...string) (*server, error) {
	dir, err := os.MkdirTemp(workDir, "streamd-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, append([]string{"--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0",
		"--metrics-listen", "", "--log-level", "info"}, flags...)...)
	return startServer("streamd", cmd, dir, streamdAddrRE, streamdAddrRE)
}

// startNATS starts nats-server with JetStream file storage in a fresh
// directory, on an ephemeral loopback port. syncAlways sets
// sync_interval: always (fsync every write); otherwise JetStream's default
// (periodic background fsync) applies.
func startNATS(bin, workDir string, syncAlways bool) (*server, error) {
	dir, err := os.MkdirTemp(workDir, "nats-")
	if err != nil {
		return nil, err
	}
	sync := ""
	if syncAlways {
		sync = "\n  sync_interval: always"
	}
	conf := fmt.Sprintf("host: 127.0.0.1\nport: -1\nserver_name: bench\njetstream {\n  store_dir: %q%s\n}\n",
		filepath.Join(dir, "js"), sync)
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	name := "nats"
	if syncAlways {
		name = "nats-sync-always"
	}
	return startServer(name, exec.Command(bin, "-c", confPath), dir, natsAddrRE, natsReadyRE)
}

// startServer runs cmd, copies its stderr to a log file and waits until a
// line matches addrRE (whose first group is the address) and one matches
// readyRE.
func startServer(name string, cmd *exec.Cmd, dir string, addrRE, readyRE *regexp.Regexp) (*server, error) {
	s := &server{name: name, cmd: cmd, dir: dir, log: filepath.Join(dir, name+".log"), exit: make(chan struct{})}
	logFile, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = logFile
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	track(cmd.Process, true)
	addrCh, readyCh := make(chan string, 1), make(chan struct{}, 1)
	go func() {
		defer logFile.Close()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		addrSeen, readySeen := false, false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if m := addrRE.FindStringSubmatch(line); m != nil && !addrSeen {
				addrSeen = true
				addrCh <- m[1]
			}
			if readyRE.MatchString(line) && !readySeen {
				readySeen = true
				readyCh <- struct{}{}
			}
		}
		_, _ = io.Copy(logFile, stderr)
	}()
	go func() { _ = cmd.Wait(); track(cmd.Process, false); close(s.exit) }()
	deadline := time.After(60 * time.Second)
	for s.addr == "" {
		select {
		case s.addr = <-addrCh:
		case <-s.exit:
			return nil, fmt.Errorf("%s exited while starting; log:\n%s", name, tail(s.log))
		case <-deadline:
			s.stop()
			return nil, fmt.Errorf("%s did not start within 60s; log:\n%s", name, tail(s.log))
		}
	}
	if addrRE != readyRE {
		select {
		case <-readyCh:
		case <-s.exit:
			return nil, fmt.Errorf("%s exited while starting; log:\n%s", name, tail(s.log))
		case <-deadline:
			s.stop()
			return nil, fmt.Errorf("%s was not ready within 60s; log:\n%s", name, tail(s.log))
		}
	}
	return s, nil
}

// cpu is the CPU time (user+system) the server has used so far, from
// /proc/<pid>/stat; 0 where that cannot be read.
func (s *server) cpu() time.Duration { return procCPU(s.cmd.Process.Pid) }

// diskBytes is the disk space the server's data directory takes: allocated
// blocks, so that preallocated sparse files (Badger's value log) count for
// what they hold.
func (s *server) diskBytes() int64 {
	var n int64
	_ = filepath.WalkDir(s.dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				if st, ok := info.Sys().(*syscall.Stat_t); ok {
					n += st.Blocks * 512
				} else {
					n += info.Size()
				}
			}
		}
		return nil
	})
	return n
}

// stop sends SIGTERM, waits up to 30s (then kills), and removes the data.
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exit:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exit
	}
	_ = os.RemoveAll(s.dir)
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0
	}
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// tail returns the last lines of a log file, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-20, 0):], "\n")
}

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"time"
)

// Systems a client talks to.
const (
	sysStreamd = "streamd"
	sysNATS    = "nats"
)

// clientSpec tells a client process what to do. It travels as JSON in the
// command line: `bench client '<json>'`.
type clientSpec struct {
	Role   string `json:"role"`   // publish, subscribe or rawbadger
	System string `json:"system"` // streamd or nats
	Addr   string `json:"addr"`

	// publish
	Events   int     `json:"events"`    // events to publish
	Batch    int     `json:"batch"`     // events per publish request (1 = one event a publish)
	Rate     float64 `json:"rate"`      // events/s; 0 = as fast as InFlight allows
	InFlight int     `json:"in_flight"` // publishes awaiting their ack at most
	// Via is how streamd is published to: "publisher" (publisher.Publisher,
	// one event a publish, the publishes in flight sent together), "stream"
	// (PublishStream, Batch events a request) or "unary" (InFlight goroutines
	// calling Publish).
	Via string `json:"via"`
	// MaxDuration ends a publisher early: it sends nothing after this long.
	MaxDuration time.Duration `json:"max_duration"`

	// subscribe
	Kind    string `json:"kind"`    // streamd: raw, consumer; nats: ordered, durable
	Latest  bool   `json:"latest"`  // start at new events instead of the earliest
	Filter  bool   `json:"filter"`  // only the 1% tagged events
	Conns   int    `json:"conns"`   // independent subscriptions, each its own connection
	Expect  int    `json:"expect"`  // events each subscription must receive
	Latency bool   `json:"latency"` // record end-to-end latency from the payload stamp
	// Idle ends a subscriber once nothing arrived for this long (after a
	// first event): the harness then compares what arrived with what was
	// published.
	Idle time.Duration `json:"idle"`

	Dir        string        `json:"dir"` // scratch directory (Badger, offsets stores)
	Timeout    time.Duration `json:"timeout"`
	CPUProfile string        `json:"cpu_profile"`
}

// clientResult is what a client process reports.
type clientResult struct {
	Events  int64    `json:"events"`  // events acknowledged (publish) or received (subscribe)
	Seconds float64  `json:"seconds"` // measured interval, see the roles
	BytesIn int64    `json:"bytes_in"`
	Latency *Latency `json:"latency,omitempty"`
	Error   string   `json:"error,omitempty"`
	// Filled in by the harness, not the client.
	CPU time.Duration `json:"-"`
}

func (r clientResult) rate() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.Events) / r.Seconds
}

// clientMain is `bench client '<json>'`: run one role and print its result as
// the last line of stdout ("result <json>"); a subscriber prints "ready" first
// once its subscriptions are open.
func clientMain(arg string) error {
	var spec clientSpec
	if err := json.Unmarshal([]byte(arg), &spec); err != nil {
		return fmt.Errorf("client spec: %w", err)
	}
	if spec.CPUProfile != "" {
		f, err := os.Create(spec.CPUProfile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	ctx, cancel := context.WithTimeout(context.Background(), spec.Timeout)
	defer cancel()
	ctl := &control{ready: func() { fmt.Println("ready") }}
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			var n int64
			if _, err := fmt.Sscanf(sc.Text(), "expect %d", &n); err == nil {
				ctl.setTarget(n)
			}
		}
	}()
	var (
		res clientResult
		err error
	)
	switch spec.Role + "/" + spec.System {
	case "publish/" + sysStreamd:
		res, err = publishStreamd(ctx, spec)
	case "publish/" + sysNATS:
		res, err = publishNATS(ctx, spec)
	case "subscribe/" + sysStreamd:
		res, err = subscribeStreamd(ctx, spec, ctl)
	case "subscribe/" + sysNATS:
		res, err = subscribeNATS(ctx, spec, ctl)
	case "rawbadger/":
		res, err = rawBadger(spec)
	default:
		return fmt.Errorf("client: unknown role/system %q/%q", spec.Role, spec.System)
	}
	if err != nil {
		res.Error = err.Error()
	}
	b, _ := json.Marshal(res)
	fmt.Printf("result %s\n", b)
	return nil
}

// clientProc is a running client process.
type clientProc struct {
	label  string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	ready  chan struct{}
	result chan clientResult
	log    string
}

// startClient re-executes this binary as `bench client '<json>'`.
func startClient(self, logDir, label string, spec clientSpec) (*clientProc, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	c := &clientProc{label: label, ready: make(chan struct{}), result: make(chan clientResult, 1),
		log: filepath.Join(logDir, "client-"+strings.NewReplacer("/", "_", " ", "_").Replace(label)+".log")}
	c.cmd = exec.Command(self, "client", string(b))
	logFile, err := os.Create(c.log)
	if err != nil {
		return nil, err
	}
	c.cmd.Stderr = logFile
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	track(c.cmd.Process, true)
	go func() {
		defer logFile.Close()
		var (
			res       clientResult
			gotResult bool
			once      sync.Once
		)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "ready":
				once.Do(func() { close(c.ready) })
			case strings.HasPrefix(line, "result "):
				if err := json.Unmarshal([]byte(line[len("result "):]), &res); err != nil {
					res.Error = "bad result line: " + err.Error()
				}
				gotResult = true
			default:
				fmt.Fprintln(logFile, line)
			}
		}
		err := c.cmd.Wait()
		track(c.cmd.Process, false)
		if c.cmd.ProcessState != nil {
			res.CPU = c.cmd.ProcessState.UserTime() + c.cmd.ProcessState.SystemTime()
		}
		if !gotResult && res.Error == "" {
			res.Error = fmt.Sprintf("client exited without a result (%v); log %s:\n%s", err, c.log, tail(c.log))
		}
		c.result <- res
	}()
	return c, nil
}

// waitReady waits for the client's "ready" line.
func (c *clientProc) waitReady(timeout time.Duration) error {
	select {
	case <-c.ready:
		return nil
	case res := <-c.result:
		c.result <- res
		return fmt.Errorf("%s ended before it was ready: %s", c.label, res.Error)
	case <-time.After(timeout):
		_ = c.cmd.Process.Kill()
		return fmt.Errorf("%s: not ready within %s", c.label, timeout)
	}
}

// expect tells a subscriber how many events each subscription is to
// receive.
func (c *clientProc) expect(n int64) {
	_, _ = fmt.Fprintf(c.stdin, "expect %d\n", n)
}

// wait returns the client's result; an error if it reported one.
func (c *clientProc) wait() (clientResult, error) {
	res := <-c.result
	_ = c.stdin.Close()
	if res.Error != "" {
		return res, fmt.Errorf("%s: %s", c.label, res.Error)
	}
	return res, nil
}

// runClient starts a client and waits for its result.
func runClient(self, logDir, label string, spec clientSpec) (clientResult, error) {
	c, err := startClient(self, logDir, label, spec)
	if err != nil {
		return clientResult{}, err
	}
	return c.wait()
}

var errIncomplete = errors.New("incomplete")

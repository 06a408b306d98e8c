package netproxy

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo serves a line echo on 127.0.0.1 until the test ends.
func echo(t *testing.T) string {
	return lineServer(t, func(line string) string { return line })
}

// lineServer serves, on 127.0.0.1 until the test ends, connections that
// answer each line with reply(line).
func lineServer(t *testing.T, reply func(string) string) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { lis.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(reply(line)))
				}
			}()
		}
	}()
	return lis.Addr().String()
}

func roundTrip(c net.Conn, msg string) (string, error) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return line, err
}

func TestCutAndRestore(t *testing.T) {
	p, err := Start(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello\n" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	p.Cut()
	if _, err := roundTrip(c, "again"); err == nil {
		t.Fatal("an open connection survived Cut")
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		if _, err = roundTrip(c2, "new"); err == nil {
			t.Fatal("a new connection went through a cut proxy")
		}
		c2.Close()
	}
	p.Restore()
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got, err := roundTrip(c3, "back"); err != nil || got != "back\n" {
		t.Fatalf("after Restore: %q, %v", got, err)
	}
}

// named answers each line with its name and the line.
func named(t *testing.T, name string) string {
	return lineServer(t, func(line string) string { return name + " " + line })
}

func start(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSetTarget(t *testing.T) {
	p := start(t, named(t, "a"))
	before := dial(t, p.Addr())
	if got, err := roundTrip(before, "w"); err != nil || got != "a w\n" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	p.SetTarget(named(t, "b"))
	after := dial(t, p.Addr())
	if got, err := roundTrip(after, "x"); err != nil || got != "b x\n" {
		t.Fatalf("new connection after SetTarget: %q, %v", got, err)
	}
	if got, err := roundTrip(before, "y"); err != nil || got != "a y\n" {
		t.Fatalf("open connection after SetTarget: %q, %v", got, err)
	}
}

func TestReset(t *testing.T) {
	p := start(t, echo(t))
	c := dial(t, p.Addr())
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello\n" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	p.Reset()
	_, err := roundTrip(c, "again")
	if err == nil {
		t.Fatal("a connection survived Reset")
	}
	if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("after Reset: %v, want connection reset", err)
	}
	if got, err := roundTrip(dial(t, p.Addr()), "new"); err != nil || got != "new\n" {
		t.Fatalf("new connection after Reset: %q, %v", got, err)
	}
}

func TestStallAndResume(t *testing.T) {
	p := start(t, echo(t))
	c := dial(t, p.Addr())
	if got, err := roundTrip(c, "hello"); err != nil || got != "hello\n" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	p.Stall()
	r := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte("held\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err == nil {
		t.Fatalf("a stalled proxy forwarded %q", line)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("stalled connection: %v, want it open and silent", err)
	}
	if p.Conns() != 2 {
		t.Fatalf("%d connections open while stalled, want 2", p.Conns())
	}
	p.Resume()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "held\n" {
		t.Fatalf("after Resume: %q, %v; want what was held back", line, err)
	}
	// A stalled connection is still closed by Close, which must not hang.
	p.Stall()
	c.Write([]byte("never\n"))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestLatency(t *testing.T) {
	p := start(t, echo(t))
	c := dial(t, p.Addr())
	const latency = 100 * time.Millisecond
	p.SetLatency(latency)
	begin := time.Now()
	if got, err := roundTrip(c, "slow"); err != nil || got != "slow\n" {
		t.Fatalf("with latency: %q, %v", got, err)
	}
	if rtt := time.Since(begin); rtt < 2*latency {
		t.Fatalf("round trip took %v with %v latency each way", rtt, latency)
	}
	// Many lines in flight at once all arrive, in order, each delayed.
	begin = time.Now()
	r := bufio.NewReader(c)
	const lines = 20
	for i := range lines {
		if _, err := fmt.Fprintf(c, "%d\n", i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range lines {
		line, err := r.ReadString('\n')
		if err != nil || line != fmt.Sprintf("%d\n", i) {
			t.Fatalf("line %d: %q, %v", i, line, err)
		}
	}
	if took := time.Since(begin); took < 2*latency {
		t.Fatalf("%d pipelined lines took %v with %v latency each way", lines, took, latency)
	}
	p.SetLatency(0)
	if got, err := roundTrip(c, "fast"); err != nil || got != "fast\n" {
		t.Fatalf("latency removed: %q, %v", got, err)
	}
}

func TestBytes(t *testing.T) {
	p := start(t, lineServer(t, func(line string) string { return "reply to " + line }))
	c := dial(t, p.Addr())
	if got, err := roundTrip(c, "hello"); err != nil || got != "reply to hello\n" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	// The reply has arrived, so the proxy wrote it: both counts are final.
	if to, from := p.Bytes(); to != int64(len("hello\n")) || from != int64(len("reply to hello\n")) {
		t.Fatalf("Bytes() = %d, %d; want %d, %d", to, from, len("hello\n"), len("reply to hello\n"))
	}
	p.ResetBytes()
	if to, from := p.Bytes(); to != 0 || from != 0 {
		t.Fatalf("after ResetBytes, Bytes() = %d, %d", to, from)
	}
}

// Package netproxy is a TCP proxy that tests and examples control, standing
// for the network between two processes: it forwards connections to a
// target until it is cut, which closes every connection and refuses new ones
// until Restore. It can also delay what it forwards (SetLatency), hold it
// back while keeping connections open (Stall, Resume), reset every
// connection (Reset) and move to another target (SetTarget), so that tests
// can give a link the faults of a real network; and it counts the bytes it
// forwards each way (Bytes), HTTP/2 framing included.
package netproxy

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards TCP connections from Addr() to a target.
type Proxy struct {
	lis net.Listener
	// toTarget and fromTarget count the bytes forwarded each way.
	toTarget, fromTarget atomic.Int64

	mu      sync.Mutex
	target  string
	cut     bool
	latency time.Duration
	// stalled is non-nil while the proxy is stalled; Resume closes it.
	stalled chan struct{}
	// kick is closed (and replaced) whenever the proxy closes connections,
	// so that forwarders holding data back notice at once.
	kick  chan struct{}
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// Start listens on 127.0.0.1 (an ephemeral port) and forwards to target.
func Start(target string) (*Proxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, lis: lis, conns: map[net.Conn]bool{}, kick: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients dial.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Cut closes every open connection and refuses new ones (they are accepted
// and closed at once, as a partitioned peer's would reset).
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	p.closeAllLocked(false)
}

// Restore lets connections through again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// Reset aborts every open connection with a TCP reset (both sides see
// "connection reset by peer"); new connections go through as before.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeAllLocked(true)
}

// SetTarget makes new connections go to target (a restarted server on
// another port); open connections stay where they are.
func (p *Proxy) SetTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// SetLatency delays every chunk of bytes, in both directions, by d after the
// proxy read it (0 forwards at once). Order is kept and throughput is not
// capped by the delay, as on a long link.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// Stall holds back every byte on open and new connections, which stay open,
// until Resume: a black-holed link, which neither side can tell from a slow
// peer except by timeouts.
func (p *Proxy) Stall() {
	p.mu.Lock()
	if p.stalled == nil {
		p.stalled = make(chan struct{})
	}
	p.mu.Unlock()
}

// Resume ends a Stall: what was held back is delivered, in order.
func (p *Proxy) Resume() {
	p.mu.Lock()
	if p.stalled != nil {
		close(p.stalled)
		p.stalled = nil
	}
	p.mu.Unlock()
}

// Bytes returns the bytes forwarded to the target and from it, since Start
// or the last ResetBytes.
func (p *Proxy) Bytes() (toTarget, fromTarget int64) {
	return p.toTarget.Load(), p.fromTarget.Load()
}

// ResetBytes sets both counts of Bytes to 0.
func (p *Proxy) ResetBytes() {
	p.toTarget.Store(0)
	p.fromTarget.Store(0)
}

// Conns is the number of open connections, client and target sides counted
// separately.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops the proxy and waits for its goroutines.
func (p *Proxy) Close() error {
	err := p.lis.Close()
	p.Cut()
	p.wg.Wait()
	return err
}

// closeAllLocked closes every connection, with a reset if rst, and wakes
// forwarders that hold data back.
func (p *Proxy) closeAllLocked(rst bool) {
	if rst {
		// Every connection first, so that a forwarder that sees one side
		// close and closes the other cannot end it with a FIN.
		for c := range p.conns {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
		}
	}
	for c := range p.conns {
		c.Close()
	}
	close(p.kick)
	p.kick = make(chan struct{})
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns[in] = true
		target := p.target
		p.wg.Add(1)
		p.mu.Unlock()
		go p.forward(in, target)
	}
}

func (p *Proxy) forward(in net.Conn, target string) {
	defer p.wg.Done()
	out, err := net.Dial("tcp", target)
	if err != nil {
		p.drop(in)
		return
	}
	kick, ok := p.track(out)
	if !ok {
		out.Close()
		p.drop(in)
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(out, in, kick, &p.toTarget) }()
	go func() { defer wg.Done(); p.pipe(in, out, kick, &p.fromTarget) }()
	wg.Wait()
	p.drop(in)
	p.drop(out)
}

// track registers c unless the proxy was cut meanwhile, and returns the
// channel that is closed when the proxy closes c.
func (p *Proxy) track(c net.Conn) (<-chan struct{}, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return nil, false
	}
	p.conns[c] = true
	return p.kick, true
}

type chunk struct {
	b  []byte
	at time.Time // when the proxy read it
}

// pipe copies src to dst, each chunk held back by hold, counting in n what
// it forwards. When either side ends, both are closed, which ends the pipe of
// the other direction too.
func (p *Proxy) pipe(dst, src net.Conn, kick <-chan struct{}, n *atomic.Int64) {
	chunks := make(chan chunk, 16)
	stop := make(chan struct{})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(chunks)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				select {
				case chunks <- chunk{b: b[:n], at: time.Now()}:
				case <-stop:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		if !p.hold(c.at, kick) {
			break
		}
		n.Add(int64(len(c.b))) // before: a peer that has the bytes sees them counted
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	close(stop)
	src.Close()
	dst.Close()
	<-readerDone
}

// hold waits until a chunk read at `at` may be forwarded: not stalled, and
// the latency has passed. It returns false when the connection was closed
// by the proxy meanwhile.
func (p *Proxy) hold(at time.Time, kick <-chan struct{}) bool {
	for {
		p.mu.Lock()
		stalled, latency := p.stalled, p.latency
		p.mu.Unlock()
		if stalled != nil {
			select {
			case <-stalled:
				continue
			case <-kick:
				return false
			}
		}
		d := time.Until(at.Add(latency))
		if d <= 0 {
			return true
		}
		timer := time.NewTimer(d)
		select {
		case <-timer.C:
		case <-kick:
			timer.Stop()
			return false
		}
	}
}

func (p *Proxy) drop(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

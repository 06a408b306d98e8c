package main

import (
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// linkProxy is the link between the cloud and one edge: a TCP proxy the
// cloud's replication dials instead of the edge, counting every byte in
// both directions (HTTP/2 frames, pings, window updates included).
type linkProxy struct {
	lis    net.Listener
	target string
	down   atomic.Int64 // edge to cloud
	up     atomic.Int64 // cloud to edge

	mu    sync.Mutex
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func startProxy(target string) (*linkProxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("telemetry: link proxy: %w", err)
	}
	p := &linkProxy{lis: lis, target: target, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	return p, nil
}

func (p *linkProxy) addr() string { return p.lis.Addr().String() }

func (p *linkProxy) accept() {
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		if !p.track(in, out) {
			return
		}
		p.wg.Go(func() { p.pipe(out, in, &p.up) })
		p.wg.Go(func() { p.pipe(in, out, &p.down) })
	}
}

func (p *linkProxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		for _, c := range conns {
			c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = true
	}
	return true
}

// pipe copies src to dst, counting, and closes both when either ends.
func (p *linkProxy) pipe(dst, src net.Conn, n *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			n.Add(int64(k))
			if _, werr := dst.Write(buf[:k]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			if err != io.EOF {
				src.Close()
			}
			dst.Close()
			return
		}
	}
}

// close stops the proxy and its connections and waits for its goroutines.
func (p *linkProxy) close() {
	p.lis.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	p.wg.Wait()
}

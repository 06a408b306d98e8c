package main

import (
	"io"
	"net"
	"sync"
)

// proxy forwards TCP connections from its address to a region's gRPC
// address: it stands for the network between two regions, which cut
// partitions until restore. It is as small as the example needs.
type proxy struct {
	lis    net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// startProxy listens on 127.0.0.1 (an ephemeral port) and forwards to target.
func startProxy(target string) (*proxy, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{lis: lis, target: target, conns: map[net.Conn]bool{}}
	p.wg.Go(p.accept)
	return p, nil
}

// addr is the address a replication dials.
func (p *proxy) addr() string { return p.lis.Addr().String() }

// partition closes every open connection and refuses new ones (accepted
// and closed at once, as a partitioned peer's would reset) until restore.
func (p *proxy) partition() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		c.Close()
	}
}

// restore lets connections through again.
func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// close stops listening, closes every connection and waits for the
// forwarding goroutines.
func (p *proxy) close() error {
	err := p.lis.Close()
	p.partition()
	p.wg.Wait()
	return err
}

func (p *proxy) accept() {
	for {
		in, err := p.lis.Accept()
		if err != nil {
			return
		}
		if !p.track(in) {
			in.Close()
			continue
		}
		p.wg.Go(func() { p.forward(in) })
	}
}

// forward copies both ways between in and the target until either side
// ends or a partition closes them.
func (p *proxy) forward(in net.Conn) {
	defer p.drop(in)
	out, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(out) {
		out.Close()
		return
	}
	defer p.drop(out)
	done := make(chan struct{})
	go func() {
		io.Copy(out, in)
		out.Close() // ends the copy below
		close(done)
	}()
	io.Copy(in, out)
	in.Close() // ends the copy above
	<-done
}

// track registers c unless the link is partitioned.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *proxy) drop(c net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	c.Close()
	delete(p.conns, c)
}

package main

import (
	"context"
	"maps"
	"net"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// traffic is a count of events and bytes.
type traffic struct{ Events, Bytes int64 }

func (t traffic) minus(o traffic) traffic { return traffic{t.Events - o.Events, t.Bytes - o.Bytes} }

// linkStats is what crossed the region link into the cloud so far.
type linkStats struct {
	// Summary and Raw are the events received, each counted at its size
	// inside the received EventBatch (batchedSize). RawBy splits Raw by car
	// category.
	Summary, Raw traffic
	RawBy        map[string]traffic
	// Control is the rest of the gRPC messages received: their 5-byte gRPC
	// prefixes, batch envelopes, Hello, Progress watermarks and filter
	// update answers.
	Control int64
	// TCPDown and TCPUp are every byte read from and written to the
	// sockets of the cloud's connections to the edges: HTTP/2 frames,
	// headers, pings and window updates included.
	TCPDown, TCPUp int64
}

// GRPC is the gRPC message bytes received (Summary + Raw + Control).
func (l linkStats) GRPC() int64 { return l.Summary.Bytes + l.Raw.Bytes + l.Control }

// TCP is every byte the link carried, both ways.
func (l linkStats) TCP() int64 { return l.TCPDown + l.TCPUp }

func (l linkStats) minus(o linkStats) linkStats {
	d := linkStats{Summary: l.Summary.minus(o.Summary), Raw: l.Raw.minus(o.Raw), Control: l.Control - o.Control,
		TCPDown: l.TCPDown - o.TCPDown, TCPUp: l.TCPUp - o.TCPUp, RawBy: map[string]traffic{}}
	for k, v := range l.RawBy {
		d.RawBy[k] = v.minus(o.RawBy[k])
	}
	return d
}

// linkMeter measures the cloud consumer's connections to the edges: a
// dialer counts the bytes on the sockets, and a gRPC stats.Handler splits
// the received messages by what they carry.
type linkMeter struct {
	tcpDown, tcpUp atomic.Int64

	mu sync.Mutex
	s  linkStats
}

func newLinkMeter() *linkMeter { return &linkMeter{s: linkStats{RawBy: map[string]traffic{}}} }

// dialOptions put the meter on a consumer's connections.
func (m *linkMeter) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithStatsHandler(m), grpc.WithContextDialer(m.dial)}
}

func (m *linkMeter) dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &countedConn{Conn: conn, m: m}, nil
}

// countedConn counts the bytes of a connection.
type countedConn struct {
	net.Conn
	m *linkMeter
}

func (c *countedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.m.tcpDown.Add(int64(n))
	return n, err
}

func (c *countedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.m.tcpUp.Add(int64(n))
	return n, err
}

// HandleRPC counts each received message. It runs before the consumer gets
// the message, so reading it here is safe.
func (m *linkMeter) HandleRPC(_ context.Context, s stats.RPCStats) {
	in, ok := s.(*stats.InPayload)
	if !ok || !in.Client {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rest := int64(in.WireLength)
	if msg, ok := in.Payload.(*streamdv1.SubscribeResponse); ok {
		for _, e := range msg.GetEvents().GetEvents() {
			n := batchedSize(e)
			rest -= n
			switch e.EntityType {
			case summaryType:
				m.s.Summary = traffic{m.s.Summary.Events + 1, m.s.Summary.Bytes + n}
			case carType:
				category := ""
				if len(e.Tags) > 0 {
					category = e.Tags[0]
				}
				by := m.s.RawBy[category]
				m.s.RawBy[category] = traffic{by.Events + 1, by.Bytes + n}
				m.s.Raw = traffic{m.s.Raw.Events + 1, m.s.Raw.Bytes + n}
			default:
				rest += n // not telemetry: counted as control
			}
		}
	}
	m.s.Control += rest
}

// TagRPC, TagConn and HandleConn complete stats.Handler.
func (m *linkMeter) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

// TagConn is part of stats.Handler.
func (m *linkMeter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn is part of stats.Handler.
func (m *linkMeter) HandleConn(context.Context, stats.ConnStats) {}

// stats returns the counts so far.
func (m *linkMeter) stats() linkStats {
	m.mu.Lock()
	s := m.s
	s.RawBy = maps.Clone(m.s.RawBy)
	m.mu.Unlock()
	s.TCPDown, s.TCPUp = m.tcpDown.Load(), m.tcpUp.Load()
	return s
}

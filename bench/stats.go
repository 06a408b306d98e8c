package main

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// payloadSize is the size of every event payload the harness publishes.
const payloadSize = 128

// newPayload returns a payload whose first 8 bytes carry ts (Unix
// nanoseconds): the time the publish was scheduled to start. Subscribers in
// other processes compute end-to-end latency from it (same machine, same
// clock). The rest is random, so that no store gains from compressing it.
func newPayload(ts time.Time) []byte {
	p := make([]byte, payloadSize)
	binary.BigEndian.PutUint64(p, uint64(ts.UnixNano()))
	for i := 8; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], rand.Uint64())
	}
	return p
}

// payloadTime reads the time newPayload stamped; ok is false for a payload
// too short to carry one.
func payloadTime(p []byte) (int64, bool) {
	if len(p) < 8 {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(p)), true
}

// tagged reports whether the i-th published event (0-based) belongs to the
// 1% that filtered workloads select.
func tagged(i int) bool { return i%100 == 0 }

// taggedCount is how many of n events are tagged.
func taggedCount(n int) int { return (n + 99) / 100 }

// entityOf names the entity of the i-th event: 10,000 entities, as in
// journal/bench_test.go.
func entityOf(i int) string { return "device-" + strconv.Itoa(i%10_000) }

// Latency is a summary of end-to-end latencies in nanoseconds.
type Latency struct {
	Count int64 `json:"count"`
	P50   int64 `json:"p50"`
	P99   int64 `json:"p99"`
	P999  int64 `json:"p999"`
	Max   int64 `json:"max"`
}

// summarize sorts lat in place and returns its percentiles (nearest rank).
func summarize(lat []int64) *Latency {
	if len(lat) == 0 {
		return nil
	}
	slices.Sort(lat)
	return &Latency{
		Count: int64(len(lat)),
		P50:   percentile(lat, 0.50),
		P99:   percentile(lat, 0.99),
		P999:  percentile(lat, 0.999),
		Max:   lat[len(lat)-1],
	}
}

// percentile returns the nearest-rank p-quantile of sorted values: the
// smallest value that at least a fraction p of all values do not exceed.
func percentile(sorted []int64, p float64) int64 {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p*float64(len(sorted)) + 0.999999999)
	return sorted[min(max(rank, 1), len(sorted))-1]
}

// countingConn counts the bytes a client reads from the network: what
// crossed loopback towards it, protocol framing included.
type countingConn struct {
	net.Conn
	in *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(int64(n))
	return n, err
}

// countingDialer dials TCP and counts what the connections read.
type countingDialer struct{ in atomic.Int64 }

// Dial implements nats.CustomDialer.
func (d *countingDialer) Dial(network, address string) (net.Conn, error) {
	c, err := net.DialTimeout(network, address, 10*time.Second)
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, in: &d.in}, nil
}

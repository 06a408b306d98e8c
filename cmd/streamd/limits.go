package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/ratelimit"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// clientLimits bound what one client may cost: calls per second (by bearer
// token, or by IP address without one) and streams open at once on one
// connection. Health checks are never limited.
type clientLimits struct {
	rate           float64 // calls per second per client; 0 = unlimited
	burst          int
	streamsPerConn int
}

func (l clientLimits) serverOptions() []grpc.ServerOption {
	notHealth := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service != healthpb.Health_ServiceDesc.ServiceName
	})
	var opts []grpc.ServerOption
	if l.rate > 0 {
		lim := &perClient{rate: rate.Limit(l.rate), burst: l.burst, clients: map[string]*clientRate{}}
		opts = append(opts,
			grpc.ChainUnaryInterceptor(selector.UnaryServerInterceptor(ratelimit.UnaryServerInterceptor(lim), notHealth)),
			grpc.ChainStreamInterceptor(selector.StreamServerInterceptor(ratelimit.StreamServerInterceptor(lim), notHealth)))
	}
	if l.streamsPerConn > 0 {
		c := &connStreams{limit: l.streamsPerConn, open: map[string]int{}}
		opts = append(opts, grpc.ChainStreamInterceptor(selector.StreamServerInterceptor(c.intercept, notHealth)))
	}
	return opts
}

// perClient is a token bucket per client.
type perClient struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex
	clients map[string]*clientRate
}

type clientRate struct {
	lim  *rate.Limiter
	seen time.Time
}

// forgetAfter drops the bucket of a client idle this long (it is full again
// by then anyway), so that many clients cost bounded memory.
const forgetAfter = time.Minute

func (p *perClient) Limit(ctx context.Context) error {
	key := clientKey(ctx)
	now := time.Now()
	p.mu.Lock()
	c, ok := p.clients[key]
	if !ok {
		if len(p.clients) >= 10_000 {
			for k, old := range p.clients {
				if now.Sub(old.seen) > forgetAfter {
					delete(p.clients, k)
				}
			}
		}
		c = &clientRate{lim: rate.NewLimiter(p.rate, p.burst)}
		p.clients[key] = c
	}
	c.seen = now
	allowed := c.lim.AllowN(now, 1)
	p.mu.Unlock()
	if !allowed {
		return fmt.Errorf("streamd: client %s is over its rate limit of %g calls/s (burst %d); slow down", redact(key), float64(p.rate), p.burst)
	}
	return nil
}

// clientKey is the bearer token if there is one, else the peer's IP address.
func clientKey(ctx context.Context) string {
	if tok, err := auth.AuthFromMD(ctx, "bearer"); err == nil && tok != "" {
		return "token:" + tok
	}
	if p, ok := peer.FromContext(ctx); ok {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			return "ip:" + host
		}
		return "ip:" + p.Addr.String()
	}
	return "unknown"
}

// redact hides a token in messages.
func redact(key string) string {
	if strings.HasPrefix(key, "token:") {
		return "(by token)"
	}
	return strings.TrimPrefix(key, "ip:")
}

// connStreams counts the streams open on each connection.
type connStreams struct {
	limit int

	mu   sync.Mutex
	open map[string]int // by the peer's ip:port, one per connection
}

func (c *connStreams) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	key := "unknown"
	if p, ok := peer.FromContext(ss.Context()); ok {
		key = p.Addr.String()
	}
	c.mu.Lock()
	if c.open[key] >= c.limit {
		c.mu.Unlock()
		return status.Errorf(codes.ResourceExhausted, "streamd: %d streams are open on this connection, the limit (--max-streams-per-conn)", c.limit)
	}
	c.open[key]++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.open[key]--; c.open[key] == 0 {
			delete(c.open, key)
		}
		c.mu.Unlock()
	}()
	return handler(srv, ss)
}

package main

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Grant words in a token file besides stream names.
const (
	grantAll     = "*"       // every stream, publishing, and every other call
	grantPublish = "publish" // Publish and PublishStream
)

// grants is what one token allows: stream names and the grant words above.
type grants map[string]bool

func (g grants) subscribe(stream string) bool { return g[grantAll] || g[stream] }
func (g grants) publish() bool                { return g[grantAll] || g[grantPublish] }

type tokenGrants struct {
	token  []byte
	grants grants
}

// tokens are the bearer tokens streamd accepts, from --auth-token-file.
//
// The EventStreamService requires a token: Subscribe to a stream named in its
// grants (or "*"), Publish and PublishStream with "publish" (or "*"), and the
// other calls (LoadEvent, EntityEvents, JournalInfo), which read the whole
// journal, with "*". Health and reflection stay open.
type tokens []tokenGrants

// loadTokens reads a token file: one `TOKEN GRANT[,GRANT...]` a line, where a
// grant is a stream name, "publish" or "*"; blank lines and lines starting
// with # are ignored.
func loadTokens(path string) (tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--auth-token-file: %w", err)
	}
	defer f.Close()
	return parseTokens(path, f)
}

// parseTokens reads a token file's content; errors name the file and line,
// never a token.
func parseTokens(path string, r io.Reader) (tokens, error) {
	var ts tokens
	seen := map[string]bool{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			return nil, fmt.Errorf("--auth-token-file %s line %d: want TOKEN STREAM[,STREAM...] (or TOKEN *)", path, n)
		}
		if seen[fields[0]] {
			return nil, fmt.Errorf("--auth-token-file %s line %d: token repeats an earlier line's", path, n)
		}
		seen[fields[0]] = true
		g := grants{}
		for s := range strings.SplitSeq(fields[1], ",") {
			if s == "" {
				return nil, fmt.Errorf("--auth-token-file %s line %d: empty stream name in the grants", path, n)
			}
			g[s] = true
		}
		ts = append(ts, tokenGrants{token: []byte(fields[0]), grants: g})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--auth-token-file %s: %w", path, err)
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("--auth-token-file %s: no tokens, every call would be refused", path)
	}
	return ts, nil
}

// lookup returns the token's grants, nil for an unknown token. It compares
// with every token in constant time, so timing tells nothing of them.
func (ts tokens) lookup(token string) grants {
	var found grants
	for _, t := range ts {
		if subtle.ConstantTimeCompare(t.token, []byte(token)) == 1 {
			found = t.grants
		}
	}
	return found
}

type grantsKey struct{}

// authenticate is the bearer-token auth.AuthFunc; it puts the token's grants
// in the context.
func (ts tokens) authenticate(ctx context.Context) (context.Context, error) {
	token, err := auth.AuthFromMD(ctx, "bearer")
	if err != nil {
		return nil, err
	}
	g := ts.lookup(token)
	if g == nil {
		return nil, status.Error(codes.Unauthenticated, "streamd: unknown bearer token")
	}
	return context.WithValue(ctx, grantsKey{}, g), nil
}

var (
	errPublishDenied = status.Error(codes.PermissionDenied, `streamd: publishing needs a token granted "publish" or "*"`)
	errAdminDenied   = status.Error(codes.PermissionDenied, `streamd: this call reads the whole journal and needs a token granted "*"`)
)

// serverOptions authenticate and authorise every call but health and reflection.
func (ts tokens) serverOptions() []grpc.ServerOption {
	// Default deny: every service needs a token except health and reflection,
	// so a service added later is protected without anyone remembering to.
	protected := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.Service != healthpb.Health_ServiceDesc.ServiceName &&
			!strings.HasPrefix(c.Service, "grpc.reflection.")
	})
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(
			selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(ts.authenticate), protected),
			selector.UnaryServerInterceptor(authorizeUnary, protected)),
		grpc.ChainStreamInterceptor(
			selector.StreamServerInterceptor(auth.StreamServerInterceptor(ts.authenticate), protected),
			selector.StreamServerInterceptor(authorizeStream, protected)),
	}
}

func authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	g, _ := ctx.Value(grantsKey{}).(grants)
	switch {
	case info.FullMethod == streamdv1.EventStreamService_Publish_FullMethodName:
		if !g.publish() {
			return nil, errPublishDenied
		}
	case !g[grantAll]:
		return nil, errAdminDenied
	}
	return handler(ctx, req)
}

func authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	g, _ := ss.Context().Value(grantsKey{}).(grants)
	switch {
	case info.FullMethod == streamdv1.EventStreamService_Subscribe_FullMethodName:
		return handler(srv, &subscribeAuthz{ServerStream: ss, grants: g})
	case info.FullMethod == streamdv1.EventStreamService_PublishStream_FullMethodName:
		if !g.publish() {
			return errPublishDenied
		}
	case !g[grantAll]:
		return errAdminDenied
	}
	return handler(srv, ss)
}

// subscribeAuthz refuses a Subscribe whose Init names a stream the token is
// not granted. Only the first message is checked: Init comes first or the
// producer refuses the stream.
type subscribeAuthz struct {
	grpc.ServerStream
	grants  grants
	checked bool
}

func (s *subscribeAuthz) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil || s.checked {
		return err
	}
	s.checked = true
	req, ok := m.(*streamdv1.SubscribeRequest)
	if !ok {
		return errors.New("streamd: unexpected Subscribe message type")
	}
	if init := req.GetInit(); init != nil {
		stream := init.Stream
		if stream == "" {
			stream = producer.DefaultStream
		}
		if !s.grants.subscribe(stream) {
			return status.Errorf(codes.PermissionDenied, "streamd: token not granted stream %q", stream)
		}
	}
	return nil
}

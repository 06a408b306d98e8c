package main

import (
	"bufio"
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
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

// Prefixes of a token file line that names a client certificate identity
// instead of a token.
const (
	identityCN  = "cn:"  // the certificate's subject common name
	identityURI = "uri:" // one of its URI SANs, such as a SPIFFE id
)

// tokenGrants is one line of the token file: a bearer token, or a client
// certificate identity (cn or uri), and what it may do.
type tokenGrants struct {
	token   []byte // nil for an identity line
	cn, uri string
	line    int
	grants  grants
}

// who names the caller in refusals, never by its token.
func (t *tokenGrants) who() string {
	switch {
	case t.cn != "":
		return fmt.Sprintf("client certificate CN %q", t.cn)
	case t.uri != "":
		return fmt.Sprintf("client certificate URI %q", t.uri)
	}
	return fmt.Sprintf("the token of --auth-token-file line %d", t.line)
}

// tokens are the bearer tokens and client certificate identities streamd
// accepts, from --auth-token-file.
//
// The EventStreamService requires one: Subscribe to a stream named in its
// grants (or "*"), Publish and PublishStream with "publish" (or "*"), and the
// other calls (LoadEvent, EntityEvents, JournalInfo), which read the whole
// journal, with "*". A call with a bearer token is its token's; one without
// is its verified client certificate's (mTLS), matched by subject CN or by
// a URI SAN. Health and reflection stay open.
type tokens []tokenGrants

// loadTokens reads a token file: one `TOKEN GRANT[,GRANT...]` a line, where a
// grant is a stream name, "publish" or "*", or `cn:NAME GRANTS` and
// `uri:URI GRANTS` for client certificates; blank lines and lines starting
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
			return nil, fmt.Errorf("--auth-token-file %s line %d: want TOKEN STREAM[,STREAM...] (or TOKEN *), or cn:NAME or uri:URI and the grants", path, n)
		}
		if seen[fields[0]] {
			return nil, fmt.Errorf("--auth-token-file %s line %d: token or identity repeats an earlier line's", path, n)
		}
		seen[fields[0]] = true
		t := tokenGrants{line: n, grants: grants{}}
		switch id := fields[0]; {
		case strings.HasPrefix(id, identityCN):
			t.cn = strings.TrimPrefix(id, identityCN)
		case strings.HasPrefix(id, identityURI):
			t.uri = strings.TrimPrefix(id, identityURI)
		default:
			t.token = []byte(id)
		}
		if t.token == nil && t.cn == "" && t.uri == "" {
			return nil, fmt.Errorf("--auth-token-file %s line %d: %s names no identity", path, n, fields[0])
		}
		for s := range strings.SplitSeq(fields[1], ",") {
			if s == "" {
				return nil, fmt.Errorf("--auth-token-file %s line %d: empty stream name in the grants", path, n)
			}
			t.grants[s] = true
		}
		ts = append(ts, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--auth-token-file %s: %w", path, err)
	}
	if len(ts) == 0 {
		return nil, fmt.Errorf("--auth-token-file %s: no tokens, every call would be refused", path)
	}
	return ts, nil
}

// identityLine is the first line naming a client certificate identity, 0
// if none does.
func (ts tokens) identityLine() int {
	for _, t := range ts {
		if t.token == nil {
			return t.line
		}
	}
	return 0
}

// lookup returns the line of token, nil for an unknown token. It compares
// with every token in constant time, so timing tells nothing of them.
func (ts tokens) lookup(token string) *tokenGrants {
	var found *tokenGrants
	for i := range ts {
		if ts[i].token != nil && subtle.ConstantTimeCompare(ts[i].token, []byte(token)) == 1 {
			found = &ts[i]
		}
	}
	return found
}

// lookupCert returns the line naming cert's subject CN or one of its URI
// SANs (the first such line), nil if none does.
func (ts tokens) lookupCert(cert *x509.Certificate) *tokenGrants {
	for i, t := range ts {
		switch {
		case t.cn != "" && t.cn == cert.Subject.CommonName:
			return &ts[i]
		case t.uri != "" && slices.ContainsFunc(cert.URIs, func(u *url.URL) bool { return u.String() == t.uri }):
			return &ts[i]
		}
	}
	return nil
}

// peerCert is the verified client certificate of the call, nil without
// mTLS.
func peerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}

// certName describes a certificate's identities for a refusal.
func certName(cert *x509.Certificate) string {
	s := fmt.Sprintf("CN %q", cert.Subject.CommonName)
	for _, u := range cert.URIs {
		s += fmt.Sprintf(", URI %q", u.String())
	}
	return s
}

type grantsKey struct{}

// authenticate is the auth.AuthFunc: a bearer token, else the client
// certificate. It puts the caller's line in the context.
func (ts tokens) authenticate(ctx context.Context) (context.Context, error) {
	token, err := auth.AuthFromMD(ctx, "bearer")
	if err == nil {
		t := ts.lookup(token)
		if t == nil {
			return nil, status.Error(codes.Unauthenticated, "streamd: unknown bearer token")
		}
		return context.WithValue(ctx, grantsKey{}, t), nil
	}
	if cert := peerCert(ctx); cert != nil && ts.identityLine() > 0 {
		t := ts.lookupCert(cert)
		if t == nil {
			return nil, status.Errorf(codes.Unauthenticated,
				"streamd: client certificate (%s) is named by no line of --auth-token-file (cn:NAME or uri:URI), and no bearer token was sent", certName(cert))
		}
		return context.WithValue(ctx, grantsKey{}, t), nil
	}
	return nil, err
}

// caller is the token file line of an authenticated call.
func caller(ctx context.Context) *tokenGrants {
	t, _ := ctx.Value(grantsKey{}).(*tokenGrants)
	if t == nil {
		return &tokenGrants{grants: grants{}}
	}
	return t
}

func publishDenied(t *tokenGrants) error {
	return status.Errorf(codes.PermissionDenied, `streamd: %s is not granted "publish" (or "*"), which publishing needs`, t.who())
}

func adminDenied(t *tokenGrants) error {
	return status.Errorf(codes.PermissionDenied, `streamd: %s is not granted "*", which this call needs: it reads the whole journal`, t.who())
}

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
	t := caller(ctx)
	switch {
	case info.FullMethod == streamdv1.EventStreamService_Publish_FullMethodName:
		if !t.grants.publish() {
			return nil, publishDenied(t)
		}
	case !t.grants[grantAll]:
		return nil, adminDenied(t)
	}
	return handler(ctx, req)
}

func authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	t := caller(ss.Context())
	switch {
	case info.FullMethod == streamdv1.EventStreamService_Subscribe_FullMethodName:
		return handler(srv, &subscribeAuthz{ServerStream: ss, caller: t})
	case info.FullMethod == streamdv1.EventStreamService_PublishStream_FullMethodName:
		if !t.grants.publish() {
			return publishDenied(t)
		}
	case !t.grants[grantAll]:
		return adminDenied(t)
	}
	return handler(srv, ss)
}

// subscribeAuthz refuses a Subscribe whose Init names a stream the token is
// not granted. Only the first message is checked: Init comes first or the
// producer refuses the stream.
type subscribeAuthz struct {
	grpc.ServerStream
	caller  *tokenGrants
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
		if !s.caller.grants.subscribe(stream) {
			return status.Errorf(codes.PermissionDenied, `streamd: %s is not granted stream %q (or "*")`, s.caller.who(), stream)
		}
	}
	return nil
}

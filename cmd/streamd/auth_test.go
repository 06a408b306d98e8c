package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func writeTokens(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// bearer is a call context carrying token, if any.
func bearer(t *testing.T, token string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// subscribe opens a Subscribe on stream "all" and returns the code of its
// first response.
func subscribe(t *testing.T, conn *grpc.ClientConn, token string) codes.Code {
	t.Helper()
	st, err := streamdv1.NewEventStreamServiceClient(conn).Subscribe(bearer(t, token))
	if err != nil {
		return status.Code(err)
	}
	// A refused stream may end before Init is sent (io.EOF); Recv has the status.
	st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
		Stream: "all", ConsumerName: "auth-test", StartPolicy: streamdv1.StartPolicy_START_POLICY_LATEST}}})
	m, err := st.Recv()
	if err == nil && m.GetHello() == nil {
		t.Fatalf("first response is not Hello: %v", m)
	}
	return status.Code(err)
}

func TestTokenAuth(t *testing.T) {
	file := writeTokens(t, `# streamd tokens
tok-all    all
tok-other  other,more
tok-pub    publish

tok-admin  *
`)
	d := startDaemon(t, t.TempDir(), "--auth-token-file", file)
	for _, tc := range []struct {
		token string
		want  codes.Code
	}{
		{"", codes.Unauthenticated},
		{"tok-unknown", codes.Unauthenticated},
		{"tok-other", codes.PermissionDenied},
		{"tok-pub", codes.PermissionDenied},
		{"tok-all", codes.OK},
		{"tok-admin", codes.OK},
	} {
		if got := subscribe(t, d.conn, tc.token); got != tc.want {
			t.Errorf("subscribe to all with %q: %v, want %v", tc.token, got, tc.want)
		}
	}
	client := streamdv1.NewEventStreamServiceClient(d.conn)
	for _, tc := range []struct {
		token string
		want  codes.Code
	}{
		{"", codes.Unauthenticated},
		{"tok-all", codes.PermissionDenied},
		{"tok-pub", codes.OK},
		{"tok-admin", codes.OK},
	} {
		_, err := client.Publish(bearer(t, tc.token), &streamdv1.PublishRequest{Events: []*streamdv1.Event{
			{EntityType: "car", EntityId: "c1", EventType: "Moved"}}})
		if got := status.Code(err); got != tc.want {
			t.Errorf("publish with %q: %v (%v), want %v", tc.token, got, err, tc.want)
		}
	}
	for token, want := range map[string]codes.Code{"tok-all": codes.PermissionDenied, "tok-admin": codes.OK} {
		_, err := client.JournalInfo(bearer(t, token), &streamdv1.JournalInfoRequest{})
		if got := status.Code(err); got != want {
			t.Errorf("JournalInfo with %q: %v, want %v", token, got, want)
		}
	}
	if h, err := healthpb.NewHealthClient(d.conn).Check(bearer(t, ""), &healthpb.HealthCheckRequest{}); err != nil ||
		h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health without a token: %v %v", h, err)
	}
	rc, err := reflectionpb.NewServerReflectionClient(d.conn).ServerReflectionInfo(bearer(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	if r, err := rc.Recv(); err != nil || len(r.GetListServicesResponse().GetService()) == 0 {
		t.Fatalf("reflection without a token: %v %v", r, err)
	}
}

func TestBadTokenFile(t *testing.T) {
	for _, tc := range []struct {
		content, want string
	}{
		{"# ok\ntok all\nsecret-tok\n", "line 3"},
		{"tok a,,b\n", "line 1"},
		{"tok all\nx y z\n", "line 2"},
		{"tok all\ntok other\n", "line 2"},
		{"# nothing\n", "no tokens"},
		{"cn: all\n", "line 1: cn: names no identity"},
		{"tok all\ncn:billing publish\n", "line 2 names a client certificate identity: it needs mTLS (--tls-client-ca)"},
	} {
		out, err := exec.Command(binary, "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--metrics-listen", "",
			"--auth-token-file", writeTokens(t, tc.content)).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Fatalf("%q: want a non-zero exit, got %v: %s", tc.content, err, out)
		}
		if !strings.Contains(string(out), "--auth-token-file") || !strings.Contains(string(out), tc.want) {
			t.Errorf("%q: error does not name the flag and %q: %s", tc.content, tc.want, out)
		}
		if strings.Contains(string(out), "secret-tok") || strings.Contains(string(out), "tok other") {
			t.Errorf("%q: error shows a token: %s", tc.content, out)
		}
	}
}

// FuzzParseTokens: any token file is refused or yields tokens that each
// grant something; an error never shows a token.
func FuzzParseTokens(f *testing.F) {
	f.Add("# ops\nsecret-a *\nsecret-b cars,publish\n")
	f.Add("tok a,,b\n")
	f.Add("tok\n")
	f.Fuzz(func(t *testing.T, content string) {
		ts, err := parseTokens("tokens", strings.NewReader(content))
		if err != nil {
			for _, field := range strings.Fields(content) {
				if len(field) >= 8 && !strings.HasPrefix(field, "#") && strings.Contains(err.Error(), field) && !strings.Contains("--auth-token-file tokens line want TOKEN STREAM[,STREAM...] (or TOKEN *), or cn:NAME or uri:URI and the grants token or identity repeats an earlier line's empty stream name in the grants no tokens, every call would be refused names no identity", field) {
					t.Fatalf("error %q shows %q from the file", err, field)
				}
			}
			return
		}
		for _, tg := range ts {
			if (len(tg.token) == 0 && tg.cn == "" && tg.uri == "") || len(tg.grants) == 0 {
				t.Fatalf("token %q (cn %q, uri %q) with grants %v accepted from %q", tg.token, tg.cn, tg.uri, tg.grants, content)
			}
		}
	})
}

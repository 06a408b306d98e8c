package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

type tokenServer struct {
	streamdv1.UnimplementedEventStreamServiceServer
	auth chan []string
}

func (s *tokenServer) JournalInfo(ctx context.Context, _ *streamdv1.JournalInfoRequest) (*streamdv1.JournalInfoResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.auth <- md.Get("authorization")
	return &streamdv1.JournalInfoResponse{JournalId: make([]byte, 16), LastOffset: 7}, nil
}

// --token and STREAMD_TOKEN arrive as "authorization: Bearer TOKEN".
func TestTokenMetadata(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ts := &tokenServer{auth: make(chan []string, 2)}
	streamdv1.RegisterEventStreamServiceServer(srv, ts)
	go srv.Serve(l)
	defer srv.Stop()

	for _, tc := range []struct {
		args []string
		env  string
		want []string
	}{
		{args: []string{"--token", "s3cret"}, want: []string{"Bearer s3cret"}},
		{env: "from-env", want: []string{"Bearer from-env"}},
		{want: nil},
	} {
		t.Setenv("STREAMD_TOKEN", tc.env)
		var out, errOut bytes.Buffer
		args := append(append([]string{"streamctl", "--addr", l.Addr().String()}, tc.args...), "journal", "info")
		if code := run(args, strings.NewReader(""), &out, &errOut); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut.String())
		}
		if got := <-ts.auth; strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%v env %q: authorization %q, want %q", tc.args, tc.env, got, tc.want)
		}
		if !strings.Contains(out.String(), "last offset:      7") {
			t.Errorf("output %q", out.String())
		}
	}
}

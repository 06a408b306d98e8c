package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/streamd/streamd/internal/testpki"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// pki is a test CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files in a temporary directory.
type pki struct {
	caFile, serverCert, serverKey string
	caPool                        *x509.CertPool
	client                        tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	f, err := testpki.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{caFile: f.CA, serverCert: f.ServerCert, serverKey: f.ServerKey, caPool: x509.NewCertPool()}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil || !p.caPool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("test CA: %v", err)
	}
	if p.client, err = tls.LoadX509KeyPair(f.ClientCert, f.ClientKey); err != nil {
		t.Fatal(err)
	}
	return p
}

// dialTLS connects to addr trusting the test CA, presenting the client
// certificate if withCert.
func (p *pki) dialTLS(t *testing.T, addr string, withCert bool) *grpc.ClientConn {
	t.Helper()
	cfg := &tls.Config{RootCAs: p.caPool, MinVersion: tls.VersionTLS12}
	if withCert {
		cfg.Certificates = []tls.Certificate{p.client}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// publish publishes one event and returns the error.
func publish(conn *grpc.ClientConn, opts ...grpc.CallOption) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := streamdv1.NewEventStreamServiceClient(conn).Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{
		{EntityType: "car", EntityId: "c1", EventType: "Moved"}}}, opts...)
	return err
}

func TestTLS(t *testing.T) {
	p := newPKI(t)
	d := startDaemon(t, t.TempDir(), "--tls-cert", p.serverCert, "--tls-key", p.serverKey)
	if err := publish(p.dialTLS(t, d.Addr, false)); err != nil {
		t.Fatalf("TLS client trusting the CA: %v", err)
	}
	if err := publish(d.conn); err == nil {
		t.Fatal("a plaintext client published to a TLS server")
	}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	d := startDaemon(t, t.TempDir(), "--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.caFile)
	if err := publish(p.dialTLS(t, d.Addr, false)); err == nil {
		t.Fatal("a client without a certificate published to an mTLS server")
	}
	if err := publish(p.dialTLS(t, d.Addr, true)); err != nil {
		t.Fatalf("client with a CA-signed certificate: %v", err)
	}
}

func TestBadTLSFlags(t *testing.T) {
	p := newPKI(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--tls-cert", p.serverCert}, "--tls-key"},
		{[]string{"--tls-key", p.serverKey}, "--tls-cert"},
		{[]string{"--tls-client-ca", p.caFile}, "--tls-cert"},
		{[]string{"--tls-cert", p.serverCert, "--tls-key", p.caFile}, "--tls-key"},
		{[]string{"--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.serverKey}, "--tls-client-ca"},
	} {
		out, err := exec.Command(binary, append([]string{"--data-dir", t.TempDir(), "--listen", "127.0.0.1:0", "--metrics-listen", ""}, tc.args...)...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
			t.Fatalf("%v: want a non-zero exit, got %v: %s", tc.args, err, out)
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: error does not name %s: %s", tc.args, tc.want, out)
		}
	}
}

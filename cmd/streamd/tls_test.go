package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

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
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "streamd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "streamd test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	}
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := &pki{caPool: x509.NewCertPool()}
	p.caPool.AddCert(ca)
	p.caFile = write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	cert, key := issue(2, x509.ExtKeyUsageServerAuth)
	p.serverCert, p.serverKey = write("server.pem", cert), write("server-key.pem", key)
	cert, key = issue(3, x509.ExtKeyUsageClientAuth)
	if p.client, err = tls.X509KeyPair(cert, key); err != nil {
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
	if err := publish(p.dialTLS(t, d.addr, false)); err != nil {
		t.Fatalf("TLS client trusting the CA: %v", err)
	}
	if err := publish(d.conn); err == nil {
		t.Fatal("a plaintext client published to a TLS server")
	}
}

func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	d := startDaemon(t, t.TempDir(), "--tls-cert", p.serverCert, "--tls-key", p.serverKey, "--tls-client-ca", p.caFile)
	if err := publish(p.dialTLS(t, d.addr, false)); err == nil {
		t.Fatal("a client without a certificate published to an mTLS server")
	}
	if err := publish(p.dialTLS(t, d.addr, true)); err != nil {
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

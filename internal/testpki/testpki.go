// Package testpki writes a throwaway certificate authority for tests: a CA,
// a server certificate for 127.0.0.1 and a client certificate, as PEM files;
// Issue adds client certificates with a chosen identity. It is for tests
// only; the keys are fresh each time and valid for an hour.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Files are the paths of the PEM files Write made.
type Files struct {
	CA, CAKey             string // ca.pem, ca-key.pem
	ServerCert, ServerKey string // server.pem, server-key.pem (127.0.0.1)
	ClientCert, ClientKey string // client.pem, client-key.pem
}

// Write creates the CA and both certificates in dir.
func Write(dir string) (Files, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Files{}, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "streamd test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return Files{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Files{}, err
	}
	var f Files
	write := func(name string, typ string, der []byte) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
	}
	issue := func(serial int64, usage x509.ExtKeyUsage, certName, keyName string) (string, string, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "streamd test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return "", "", err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return "", "", err
		}
		c, err := write(certName, "CERTIFICATE", der)
		if err != nil {
			return "", "", err
		}
		k, err := write(keyName, "PRIVATE KEY", keyDER)
		return c, k, err
	}
	if f.CA, err = write("ca.pem", "CERTIFICATE", caDER); err != nil {
		return Files{}, err
	}
	caKeyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
	if err != nil {
		return Files{}, err
	}
	if f.CAKey, err = write("ca-key.pem", "PRIVATE KEY", caKeyDER); err != nil {
		return Files{}, err
	}
	if f.ServerCert, f.ServerKey, err = issue(2, x509.ExtKeyUsageServerAuth, "server.pem", "server-key.pem"); err != nil {
		return Files{}, err
	}
	if f.ClientCert, f.ClientKey, err = issue(3, x509.ExtKeyUsageClientAuth, "client.pem", "client-key.pem"); err != nil {
		return Files{}, err
	}
	return f, nil
}

// Issue writes a client certificate NAME.pem and its key NAME-key.pem to
// dir, signed by the CA Write made there, with subject CN cn and the URI
// SANs uris (a SPIFFE id, say).
func Issue(dir, name, cn string, uris ...string) error {
	read := func(file string) ([]byte, error) {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return nil, err
		}
		block, _ := pem.Decode(b)
		if block == nil {
			return nil, fmt.Errorf("testpki: %s: no PEM", file)
		}
		return block.Bytes, nil
	}
	caDER, err := read("ca.pem")
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	caKeyDER, err := read("ca-key.pem")
	if err != nil {
		return err
	}
	caKey, err := x509.ParsePKCS8PrivateKey(caKeyDER)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			return err
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
}

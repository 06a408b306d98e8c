// Package testpki writes a throwaway certificate authority for tests: a CA,
// a server certificate for 127.0.0.1 and a client certificate, as PEM files.
// It is for tests only; the keys are fresh each time and valid for an hour.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files are the paths of the PEM files Write made.
type Files struct {
	CA                    string // ca.pem
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
	if f.ServerCert, f.ServerKey, err = issue(2, x509.ExtKeyUsageServerAuth, "server.pem", "server-key.pem"); err != nil {
		return Files{}, err
	}
	if f.ClientCert, f.ClientKey, err = issue(3, x509.ExtKeyUsageClientAuth, "client.pem", "client-key.pem"); err != nil {
		return Files{}, err
	}
	return f, nil
}

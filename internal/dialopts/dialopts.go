// Package dialopts builds the gRPC dial options of streamd's clients
// (streamctl, and streamd's own replications): TLS or mTLS from PEM files and
// a bearer token, with errors that name the setting at fault.
package dialopts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// Client says how to reach a server. Names label errors: what the user
// calls each setting (a flag like "--tls-ca", or a config key).
type Client struct {
	// CA verifies the server (PEM); empty uses the system roots when TLS is on.
	CA string
	// Cert and Key are the client certificate for mTLS (PEM), together.
	Cert, Key string
	// Token is sent as "authorization: Bearer TOKEN".
	Token string
	// Names of CA, Cert and Key for error messages.
	CAName, CertName, KeyName string
}

// TLS reports whether any TLS setting is given: then the connection uses
// TLS, otherwise plaintext.
func (c Client) TLS() bool { return c.CA != "" || c.Cert != "" || c.Key != "" }

// Options returns the dial options, or an error naming the bad setting.
func (c Client) Options() ([]grpc.DialOption, error) {
	creds, err := c.transport()
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if c.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: c.Token}))
	}
	return opts, nil
}

func (c Client) transport() (credentials.TransportCredentials, error) {
	if !c.TLS() {
		return insecure.NewCredentials(), nil
	}
	if (c.Cert == "") != (c.Key == "") {
		return nil, fmt.Errorf("%s and %s go together", c.CertName, c.KeyName)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.CAName, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %s: no PEM certificate in it", c.CAName, c.CA)
		}
	}
	if c.Cert != "" {
		pair, err := tls.LoadX509KeyPair(c.Cert, c.Key)
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", c.CertName, c.KeyName, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(cfg), nil
}

// bearer sends the token as "authorization: Bearer TOKEN" on every call.
type bearer struct {
	token string
}

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + b.token}, nil
}

// RequireTransportSecurity is false so that a token also works against a
// plaintext server on localhost; over a network, use TLS.
func (b bearer) RequireTransportSecurity() bool { return false }

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// client is a connection to streamd made from the global flags.
type client struct {
	addr string
	conn *grpc.ClientConn
	api  streamdv1.EventStreamServiceClient
}

func dial(c *cli.Context) (*client, error) {
	addr := c.String("addr")
	if addr == "" {
		return nil, usagef("--addr is empty")
	}
	creds, err := transportCreds(c)
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if tok := c.String("token"); tok != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer{token: tok}))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, usagef("--addr %q: %v", addr, err)
	}
	return &client{addr: addr, conn: conn, api: streamdv1.NewEventStreamServiceClient(conn)}, nil
}

func (cl *client) Close() error { return cl.conn.Close() }

// transportCreds is TLS when any --tls-* flag is given, plaintext otherwise.
func transportCreds(c *cli.Context) (credentials.TransportCredentials, error) {
	ca, cert, key := c.String("tls-ca"), c.String("tls-cert"), c.String("tls-key")
	if ca == "" && cert == "" && key == "" {
		return insecure.NewCredentials(), nil
	}
	if (cert == "") != (key == "") {
		return nil, usagef("--tls-cert and --tls-key go together")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in it", ca)
		}
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
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

// unary returns a context with the --timeout deadline.
func unary(c *cli.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.Context, c.Duration("timeout"))
}

// serverError says what went wrong talking to the server at addr.
func (cl *client) serverError(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("server %s did not answer in time: %w", cl.addr, err)
		}
		return fmt.Errorf("server %s: %w", cl.addr, err)
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("server %s unavailable: %s", cl.addr, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("server %s did not answer in time (--timeout): %s", cl.addr, st.Message())
	}
	return fmt.Errorf("server %s: %s: %s", cl.addr, st.Code(), st.Message())
}

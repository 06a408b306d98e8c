package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/internal/dialopts"
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
	opts, err := dialopts.Client{
		CA: c.String("tls-ca"), Cert: c.String("tls-cert"), Key: c.String("tls-key"), Token: c.String("token"),
		CAName: "--tls-ca", CertName: "--tls-cert", KeyName: "--tls-key",
	}.Options()
	if err != nil {
		return nil, usagef("%v", err)
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, usagef("--addr %q: %v", addr, err)
	}
	return &client{addr: addr, conn: conn, api: streamdv1.NewEventStreamServiceClient(conn)}, nil
}

func (cl *client) Close() error { return cl.conn.Close() }

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
	case codes.Unimplemented:
		return fmt.Errorf("server %s does not serve this call (%s): streamd serves every call; a service serves offsets, filters and consumers once it mounts the admin API (admin.Mount)", cl.addr, st.Message())
	}
	return fmt.Errorf("server %s: %s: %s", cl.addr, st.Code(), st.Message())
}

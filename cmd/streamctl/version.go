package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/streamd/streamd/internal/buildinfo"
)

// printVersion is --version.
func printVersion(c *cli.Context) {
	fmt.Fprintf(c.App.Writer, "%s %s\n", c.App.Name, c.App.Version)
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print streamctl's version and the server's (from the header of a health check, which needs no token)",
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			p := newPrinter(c)
			client := buildinfo.Read()
			clientObj := map[string]string{"version": client.Version, "revision": client.Revision, "go_version": client.GoVersion}
			server, err := serverBuild(c)
			if err != nil {
				// The client's version is still worth printing.
				if perr := p.one(map[string]any{"client": clientObj}, "client: "+client.String()); perr != nil {
					return perr
				}
				return err
			}
			return p.one(map[string]any{"client": clientObj, "server": map[string]string{"version": server.Version, "revision": server.Revision}},
				fmt.Sprintf("client: %s\nserver: %s (revision %s)", client, server.Version, server.Revision))
		},
	}
}

// serverBuild asks the server for its version and revision: a health check
// answers with them in its header.
func serverBuild(c *cli.Context) (buildinfo.Info, error) {
	cl, err := dial(c)
	if err != nil {
		return buildinfo.Info{}, err
	}
	defer cl.Close()
	ctx, cancel := unary(c)
	defer cancel()
	var md metadata.MD
	if _, err := healthpb.NewHealthClient(cl.conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md)); err != nil {
		return buildinfo.Info{}, cl.serverError(err)
	}
	info := buildinfo.Info{Version: first(md, buildinfo.VersionHeader), Revision: first(md, buildinfo.RevisionHeader)}
	if info.Version == "" {
		return info, fmt.Errorf("server %s sent no %s header: it is a streamd older than this streamctl", cl.addr, buildinfo.VersionHeader)
	}
	return info, nil
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/streamd/streamd/console"
	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func consoleFlag() cli.Flag {
	return &cli.BoolFlag{Name: "console", EnvVars: []string{"STREAMD_CONSOLE"},
		Usage:       "serve the web console at /console/ on --metrics-listen; on a non-loopback address only with --auth-token-file (the console then asks for a token)",
		DefaultText: "on when --metrics-listen is loopback or --auth-token-file is set"}
}

// consoleOn decides whether streamd serves the console: by default when
// the HTTP address is loopback or tokens are required; never on another
// address without tokens, where anyone who reaches the port could steer
// the consumers.
func consoleOn(c *cli.Context, auth bool) (bool, error) {
	addr := c.String("metrics-listen")
	loopback := loopbackAddr(addr)
	if !c.IsSet("console") {
		return addr != "" && (loopback || auth), nil
	}
	switch on := c.Bool("console"); {
	case on && addr == "":
		return false, fmt.Errorf("--console: the console is served on --metrics-listen, which is disabled")
	case on && !loopback && !auth:
		return false, fmt.Errorf("--console on --metrics-listen %s, which is not loopback: add --auth-token-file, or listen on 127.0.0.1", addr)
	default:
		return on, nil
	}
}

// loopbackAddr reports whether a listen address is on loopback only:
// localhost or a loopback IP (not "" or 0.0.0.0, which are every address).
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// startConsole mounts the console on mux. It reaches streamd's services
// through a gRPC server of its own on an in-memory listener (no TLS, no
// token: the console authorizes each request against cfg.tokens). The
// returned stop ends the console's streams; hs.Shutdown calls it first.
// od, the interest registry of the on-demand types, may be nil.
func startConsole(log *slog.Logger, cfg config, p *producer.Producer, cs *consumers, aggs *aggregates, od *onDemand, mux *http.ServeMux, hs *http.Server, addr string) (stop func(), err error) {
	lis := bufconn.Listen(1 << 20)
	g := grpc.NewServer(append(producer.Interceptors(log), grpc.MaxRecvMsgSize(p.Server().MaxMessageBytes()))...)
	streamdv1.RegisterEventStreamServiceServer(g, p.Server())
	cs.registry.Register(g)
	aggs.set.Register(g)
	streamdv1.RegisterInterestServiceServer(g, interestServer{od: od})
	if cfg.router != nil {
		streamdv1.RegisterPrimaryServiceServer(g, cfg.router.p.Server())
	}
	go g.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///console", grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		g.Stop()
		return nil, fmt.Errorf("console: %w", err)
	}
	opts := console.Options{
		Conn: conn, Info: p.Journal().Info, Err: p.Journal().Err, Gatherer: cfg.metrics.Registry(),
		DataDir: cfg.dataDir, Region: cfg.producer.Journal.Region, Logger: log,
	}
	states, _ := cs.registry.States("")
	for i, r := range allReplications(cfg.replications, cfg.grouped) {
		l := console.Link{From: r.From.Name, Addrs: r.From.Addrs, Stream: r.Stream}
		if i < len(states) {
			l.Consumer = states[i].Consumer.Options().Name
		}
		for _, f := range r.Filter {
			l.Filter = append(l.Filter, filters.Format(f))
		}
		opts.Links = append(opts.Links, l)
	}
	for _, t := range cfg.entityTypes.EntityTypes {
		et := console.EntityType{Name: t.Name, Mode: t.Mode.String(), Configured: t.FirstOwner()}
		if i := slices.IndexFunc(cfg.onDemand, func(od onDemandType) bool { return od.name == t.Name }); i >= 0 {
			et.OnDemand, et.SummaryTypes, et.Inactivity = true, cfg.onDemand[i].summaries, cfg.onDemand[i].inactivity
		}
		opts.EntityTypes = append(opts.EntityTypes, et)
	}
	if d := cfg.entityTypes; d.DefaultMode != 0 {
		opts.EntityTypes = append(opts.EntityTypes, console.EntityType{Mode: d.DefaultMode.String(), Configured: d.DefaultPrimary})
	}
	if cfg.tokens != nil {
		opts.Tokens = func(token string) (console.Grant, bool) {
			g := cfg.tokens.lookup(token)
			if g == nil {
				return console.Grant{}, false
			}
			grant := console.Grant{All: g.grants[grantAll]}
			for s := range g.grants {
				if s != grantAll && s != grantPublish {
					grant.Streams = append(grant.Streams, s)
				}
			}
			return grant, true
		}
	}
	con, err := console.New(opts)
	if err != nil {
		conn.Close()
		g.Stop()
		return nil, err
	}
	mux.Handle(console.Path, con.Handler())
	var once sync.Once
	stop = func() { once.Do(func() { con.Close(); conn.Close(); g.Stop() }) }
	hs.RegisterOnShutdown(stop)
	log.Info("console serving", "url", "http://"+addr+console.Path, "auth", cfg.tokens != nil)
	return stop, nil
}

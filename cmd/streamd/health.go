package main

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/streamd/streamd/internal/buildinfo"
)

// healthPoll is how often the health watcher asks the journal whether it
// failed.
const healthPoll = time.Second

// healthServices are the names health answers for: "" (the server) and
// every service g serves, such as streamd.v1.EventStreamService.
func healthServices(g *grpc.Server) []string {
	services := []string{""}
	for name := range g.GetServiceInfo() {
		services = append(services, name)
	}
	return services
}

// setHealth sets the status of every service.
func setHealth(hs *health.Server, services []string, st healthpb.HealthCheckResponse_ServingStatus) {
	for _, s := range services {
		hs.SetServingStatus(s, st)
	}
}

// watchJournal polls failed (the journal's Err) every interval until ctx is
// done, and once it returns an error marks every service NOT_SERVING for
// good: a failed journal refuses appends until streamd restarts.
func watchJournal(ctx context.Context, log *slog.Logger, hs *health.Server, services []string, failed func() error, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := failed(); err != nil {
				log.Error("journal failed: health is NOT_SERVING until streamd restarts", "err", err)
				setHealth(hs, services, healthpb.HealthCheckResponse_NOT_SERVING)
				return
			}
		}
	}
}

// buildHeaders send the server's version and revision in the response
// header of every call, health checks included (buildinfo.VersionHeader,
// RevisionHeader; documented on EventStreamService in the proto).
func buildHeaders() []grpc.ServerOption {
	info := buildinfo.Read()
	md := metadata.Pairs(buildinfo.VersionHeader, info.Version, buildinfo.RevisionHeader, info.Revision)
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			grpc.SetHeader(ctx, md) // fails only once the header is sent, which it is not yet
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			ss.SetHeader(md)
			return h(srv, ss)
		}),
	}
}

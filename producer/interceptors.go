package producer

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Interceptors are the server options every streamd gRPC server uses:
// recovery from handler panics (answered with Internal, logged with the
// stack), call logging through slog (successful calls at Debug), and a
// keepalive policy that lets consumers ping every 10s or more (gRPC's
// default refuses pings more often than every 5 minutes), so that they can
// detect a link that silently drops everything.
func Interceptors(log *slog.Logger) []grpc.ServerOption {
	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	logOpts := []logging.Option{
		logging.WithLogOnEvents(logging.FinishCall),
		logging.WithLevels(func(c codes.Code) logging.Level {
			switch c {
			case codes.OK, codes.Canceled:
				return logging.LevelDebug
			case codes.Internal, codes.Unknown, codes.DataLoss:
				return logging.LevelError
			}
			return logging.LevelInfo
		}),
	}
	recoverOpts := []recovery.Option{recovery.WithRecoveryHandler(func(p any) error {
		log.Error("panic in gRPC handler", "panic", p, "stack", string(debug.Stack()))
		return status.Error(codes.Internal, fmt.Sprintf("internal error: %v", p))
	})}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(recoverOpts...), logging.UnaryServerInterceptor(logger, logOpts...)),
		grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(recoverOpts...), logging.StreamServerInterceptor(logger, logOpts...)),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
}

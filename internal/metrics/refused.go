package metrics

import (
	"context"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Reasons a publish is refused: the reason label of
// streamd_publish_refused_total. RefusalReason maps every gRPC status to
// one of them, so the label has a bounded set of values.
var Reasons = []string{
	"invalid", "too_large", "disk_full", "rate_limited", "resource_exhausted", "seqnr_conflict",
	"precondition", "unauthenticated", "permission_denied", "unavailable", "deadline_exceeded", "internal", "other",
}

// RefusalReason names why a publish was refused from the gRPC status it
// got: one of Reasons.
func RefusalReason(code codes.Code, msg string) string {
	switch code {
	case codes.InvalidArgument:
		return "invalid"
	case codes.ResourceExhausted:
		switch {
		case strings.HasPrefix(msg, "grpc: received message larger than max"):
			return "too_large"
		case strings.Contains(msg, "not enough free disk space"): // journal.ErrNoSpace
			return "disk_full"
		case strings.Contains(msg, "rate limit"):
			return "rate_limited"
		}
		return "resource_exhausted"
	case codes.Aborted:
		return "seqnr_conflict"
	case codes.FailedPrecondition:
		return "precondition"
	case codes.Unauthenticated:
		return "unauthenticated"
	case codes.PermissionDenied:
		return "permission_denied"
	case codes.Unavailable:
		return "unavailable"
	case codes.DeadlineExceeded:
		return "deadline_exceeded"
	case codes.Internal, codes.DataLoss:
		return "internal"
	}
	return "other"
}

// PublishStats is a gRPC server stats.Handler that counts refused
// publishes in streamd_publish_refused_total: Publish and PublishStream
// calls that end with an error, whoever refused them (gRPC's message size
// limit, authentication, rate limits, the journal), and each PublishStream
// answer with a non-OK code. A call the client cancelled is not counted.
func (m *Metrics) PublishStats() stats.Handler { return publishStats{m} }

type publishStats struct{ m *Metrics }

type methodKey struct{}

func (publishStats) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	switch info.FullMethodName {
	case streamdv1.EventStreamService_Publish_FullMethodName, streamdv1.EventStreamService_PublishStream_FullMethodName:
		return context.WithValue(ctx, methodKey{}, info.FullMethodName)
	}
	return ctx
}

func (p publishStats) HandleRPC(ctx context.Context, s stats.RPCStats) {
	method, _ := ctx.Value(methodKey{}).(string)
	if method == "" {
		return
	}
	switch s := s.(type) {
	case *stats.End:
		if st := status.Convert(s.Error); s.Error != nil && st.Code() != codes.Canceled {
			p.m.refused.WithLabelValues(RefusalReason(st.Code(), st.Message())).Inc()
		}
	case *stats.OutPayload:
		if r, ok := s.Payload.(*streamdv1.PublishStreamResponse); ok && r.GetCode() != 0 {
			p.m.refused.WithLabelValues(RefusalReason(codes.Code(r.GetCode()), r.GetMessage())).Inc()
		}
	}
}

func (publishStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (publishStats) HandleConn(context.Context, stats.ConnStats)                       {}

func newRefused() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "streamd_publish_refused_total",
		Help: "Publishes refused (Publish calls, PublishStream requests), by reason: " + strings.Join(Reasons, ", ") + "."},
		[]string{"reason"})
}

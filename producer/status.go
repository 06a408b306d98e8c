package producer

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/journal"
)

// ErrUnknownStream: no named stream of that name.
var ErrUnknownStream = errors.New("producer: unknown stream")

// toStatus maps an error to the gRPC status the clients see. It is the one
// place where codes are chosen.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var conflict *journal.SeqNrConflictError
	var oor *journal.OutOfRangeError
	var gap *journal.OriginGapError
	var notWritable *journal.NotWritableError
	switch {
	case errors.Is(err, journal.ErrInvalidEvent):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.As(err, &conflict):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, journal.ErrNoSpace):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.As(err, &gap):
		// The origin's earlier events must be published first.
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.As(err, &notWritable):
		// Another pod of the group writes the slice now: ask again.
		return status.Error(codes.Unavailable, err.Error()+": it is moving between the pods of this streamd's group; retry")
	case errors.As(err, &oor):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.Is(err, journal.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrUnknownStream):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, journal.ErrClosed), errors.Is(err, errShuttingDown):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

func invalidArg(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, "producer: "+format, args...)
}

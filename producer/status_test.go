package producer

import (
	"context"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/journal"
)

func TestToStatus(t *testing.T) {
	for _, c := range []struct {
		err  error
		want codes.Code
	}{
		{fmt.Errorf("wrapped: %w", journal.ErrInvalidEvent), codes.InvalidArgument},
		{&journal.SeqNrConflictError{Expected: 3, Next: 4}, codes.Aborted},
		{&journal.OutOfRangeError{Requested: 1, FirstAvailable: 9}, codes.OutOfRange},
		{journal.ErrNotFound, codes.NotFound},
		{ErrUnknownStream, codes.NotFound},
		{journal.ErrClosed, codes.Unavailable},
		{errShuttingDown, codes.Unavailable},
		{context.Canceled, codes.Canceled},
		{context.DeadlineExceeded, codes.DeadlineExceeded},
		{status.Error(codes.PermissionDenied, "kept"), codes.PermissionDenied},
		{fmt.Errorf("disk on fire"), codes.Internal},
	} {
		got := toStatus(c.err)
		if status.Code(got) != c.want {
			t.Errorf("toStatus(%v) = %v, want %v", c.err, status.Code(got), c.want)
		}
		if status.Convert(got).Message() == "" {
			t.Errorf("toStatus(%v) has no message", c.err)
		}
	}
	if toStatus(nil) != nil {
		t.Error("toStatus(nil) is not nil")
	}
}

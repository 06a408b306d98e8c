package primary

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology/crdt"
)

// Server returns the PrimaryService of this region, to register on the
// region's gRPC server.
func (p *Primary) Server() streamdv1.PrimaryServiceServer { return primaryServer{p: p} }

type primaryServer struct {
	streamdv1.UnimplementedPrimaryServiceServer
	p *Primary
}

func (s primaryServer) Write(ctx context.Context, req *streamdv1.WriteRequest) (*streamdv1.WriteResponse, error) {
	expected := AnyVersion
	if req.ExpectedVersion != nil {
		expected = *req.ExpectedVersion
	}
	w, err := s.p.write(ctx, req.EntityType, req.EntityId, expected, req.Events, req.Hops)
	if err != nil {
		return nil, toStatus(err)
	}
	return &streamdv1.WriteResponse{Region: w.Region, Versions: w.Versions, Offsets: w.Offsets, SeqNrs: w.SeqNrs}, nil
}

func (s primaryServer) Sync(ctx context.Context, req *streamdv1.SyncRequest) (*streamdv1.SyncResponse, error) {
	resp, err := s.p.serveSync(ctx, req)
	return resp, toStatus(err)
}

func (s primaryServer) Takeover(ctx context.Context, req *streamdv1.TakeoverRequest) (*streamdv1.TakeoverResponse, error) {
	v, err := s.p.Takeover(ctx, req.EntityType, req.EntityId, req.Force)
	if err != nil {
		return nil, toStatus(err)
	}
	return &streamdv1.TakeoverResponse{Version: v}, nil
}

func (s primaryServer) SetPrimary(ctx context.Context, req *streamdv1.SetPrimaryRequest) (*streamdv1.SetPrimaryResponse, error) {
	if err := s.p.SetPrimary(ctx, req.EntityType, req.Primary); err != nil {
		return nil, toStatus(err)
	}
	return &streamdv1.SetPrimaryResponse{}, nil
}

func (s primaryServer) GetPrimary(ctx context.Context, req *streamdv1.GetPrimaryRequest) (*streamdv1.GetPrimaryResponse, error) {
	info, err := s.p.PrimaryOf(req.EntityType)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &streamdv1.GetPrimaryResponse{
		EntityType: info.EntityType.Name, Mode: info.EntityType.Mode.String(), Configured: info.EntityType.FirstOwner(),
		Primary: info.Primary, PinnedAtUnixNano: info.PinnedAtUnixNano, PinnedIn: info.PinnedIn,
	}
	if req.EntityId != "" {
		h, err := s.p.Read(ctx, req.EntityType, req.EntityId)
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Owner, resp.Version = h.Owner, h.Version
	}
	return resp, nil
}

func (s primaryServer) State(ctx context.Context, req *streamdv1.StateRequest) (*streamdv1.StateResponse, error) {
	st, err := s.p.State(ctx, req.EntityType, req.EntityId)
	if err != nil {
		return nil, toStatus(err)
	}
	return stateProto(st), nil
}

func (s primaryServer) Failover(ctx context.Context, req *streamdv1.FailoverRequest) (*streamdv1.FailoverResponse, error) {
	plan, err := s.p.Failover(ctx, req.From, req.To, req.Execute)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &streamdv1.FailoverResponse{
		EntityTypes: plan.EntityTypes, UnlistedTypes: plan.UnlistedTypes, AtRisk: plan.AtRisk,
		Executed: plan.Executed, Offset: plan.Offset, FromAppliedUnixNano: plan.FromApplied,
	}
	for _, rp := range plan.Progress {
		out := &streamdv1.RegionProgress{Region: rp.Region, Reachable: rp.Reachable, AppliedOffset: rp.Applied, KnownOffset: rp.Known, Journals: journalsProto(rp.Journals)}
		if rp.Err != nil {
			out.Error = rp.Err.Error()
		}
		resp.Progress = append(resp.Progress, out)
	}
	return resp, nil
}

func (s primaryServer) Conflicts(ctx context.Context, req *streamdv1.ConflictsRequest) (*streamdv1.ConflictsResponse, error) {
	conflicts := s.p.Conflicts
	if req.Pod {
		conflicts = s.p.podConflicts
	}
	cs, err := conflicts(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &streamdv1.ConflictsResponse{}
	for _, c := range cs {
		resp.Conflicts = append(resp.Conflicts, &streamdv1.Conflict{From: c.From, To: c.To, Event: c.Event})
	}
	return resp, nil
}

func (s primaryServer) Progress(ctx context.Context, req *streamdv1.ProgressRequest) (*streamdv1.ProgressResponse, error) {
	if req.Source == "" {
		return nil, toStatus(fmt.Errorf("%w: progress of which region? source is empty", ErrInvalidRequest))
	}
	var sp SourceProgress
	var err error
	if req.Pod {
		sp, err = s.p.podProgress(req.Source)
	} else {
		sp, err = s.p.Progress(ctx, req.Source)
	}
	if err != nil {
		return nil, toStatus(err)
	}
	applied, known := sp.Sums()
	return &streamdv1.ProgressResponse{
		Region: s.p.region, Replicating: sp.Replicating, AppliedOffset: applied, KnownOffset: known,
		Journals: journalsProto(sp.Journals), LastAppliedUnixNano: sp.LastApplied,
	}, nil
}

func journalsProto(js []JournalProgress) []*streamdv1.JournalProgress {
	var out []*streamdv1.JournalProgress
	for _, j := range js {
		out = append(out, &streamdv1.JournalProgress{JournalId: j.JournalID, AppliedOffset: j.Applied, KnownOffset: j.Known})
	}
	return out
}

// ToStatus is the gRPC status of an error of Primary (Publish, for
// example): Unavailable for an unreachable region, Aborted for a version
// conflict, InvalidArgument for a refused request.
func ToStatus(err error) error { return toStatus(err) }

// toStatus chooses the gRPC status of an error of Primary.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrUnavailable), errors.Is(err, journal.ErrClosed):
		code = codes.Unavailable
	case errors.Is(err, ErrVersionConflict):
		code = codes.Aborted
	case errors.Is(err, ErrInvalidRequest), errors.Is(err, ErrUnknownEntityType), errors.Is(err, ErrWrongMode), errors.Is(err, journal.ErrInvalidEvent),
		errors.Is(err, crdt.ErrInvalidChange), errors.Is(err, crdt.ErrInvalidOp):
		code = codes.InvalidArgument
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	default:
		if s, ok := status.FromError(err); ok {
			code = s.Code()
		}
	}
	return status.Error(code, err.Error())
}

package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Register serves the AdminService of r on s.
func (r *Registry) Register(s *grpc.Server) {
	streamdv1.RegisterAdminServiceServer(s, &server{r: r})
}

type server struct {
	streamdv1.UnimplementedAdminServiceServer
	r *Registry
}

func (s *server) ListConsumers(_ context.Context, req *streamdv1.ListConsumersRequest) (*streamdv1.ListConsumersResponse, error) {
	resp := &streamdv1.ListConsumersResponse{}
	s.r.mu.Lock()
	src := s.r.readers
	s.r.mu.Unlock()
	if src != nil {
		for _, rd := range src.Readers() {
			if req.GetConsumer() == "" || rd.Consumer == req.GetConsumer() {
				resp.Readers = append(resp.Readers, rd.Proto())
			}
		}
	}
	states, err := s.r.States(req.GetConsumer())
	if errors.Is(err, ErrUnknownConsumer) && len(resp.Readers) > 0 {
		return resp, nil // a consumer that reads from this process, run elsewhere
	}
	if err != nil {
		return nil, statusOf(err)
	}
	for _, st := range states {
		opts := st.Consumer.Options()
		cs := &streamdv1.ConsumerStatus{
			Name:    opts.Name,
			Stream:  opts.Stream,
			Mode:    opts.Mode().String(),
			Filter:  st.Consumer.Filter(),
			Running: st.Running,
		}
		if st.Err != nil {
			cs.Error = st.Err.Error()
		}
		cs.Group = st.Group
		if st.Slices.Len() > 0 {
			cs.Slices = st.Slices.Proto()
		}
		for _, p := range st.Consumer.Status() {
			ps := &streamdv1.ProducerStatus{Addr: p.Addr, JournalId: p.JournalID, Offset: p.Offset, Lag: p.Lag, Connected: p.Connected}
			if p.LastError != nil {
				ps.LastError = p.LastError.Error()
			}
			cs.Producers = append(cs.Producers, ps)
		}
		resp.Consumers = append(resp.Consumers, cs)
	}
	return resp, nil
}

func (s *server) ListOffsets(_ context.Context, req *streamdv1.ListOffsetsRequest) (*streamdv1.ListOffsetsResponse, error) {
	es, err := s.r.entries(req.GetConsumer())
	if err != nil {
		return nil, statusOf(err)
	}
	resp := &streamdv1.ListOffsetsResponse{}
	for _, e := range es {
		opts := e.consumer().Options()
		stored, err := opts.Store.List(opts.Name)
		if err != nil {
			return nil, statusOf(err)
		}
		for _, p := range stored {
			resp.Offsets = append(resp.Offsets, p.Proto())
		}
	}
	return resp, nil
}

func (s *server) GetOffset(_ context.Context, req *streamdv1.GetOffsetRequest) (*streamdv1.GetOffsetResponse, error) {
	e, sel, err := s.selected(req.GetSelector())
	if err != nil {
		return nil, err
	}
	k, res, err := e.consumer().Options().Store.ResolveSelected(sel)
	if err != nil {
		return nil, statusOf(err)
	}
	if !res.Found {
		return nil, status.Errorf(codes.NotFound, "admin: no stored offset for %s: the consumer uses its start policy", k)
	}
	return &streamdv1.GetOffsetResponse{Offset: offsets.Entry{Key: k, Offset: res.Offset}.Proto(), Exact: res.Exact}, nil
}

func (s *server) MoveOffsets(ctx context.Context, req *streamdv1.MoveOffsetsRequest) (*streamdv1.MoveOffsetsResponse, error) {
	e, sel, err := s.selected(req.GetSelector())
	if err != nil {
		return nil, err
	}
	if err := e.steerable(); err != nil {
		return nil, statusOf(err)
	}
	to := offsets.Offset{Offset: req.GetToOffset(), Start: req.GetToStartPolicy()}
	switch to.Start {
	case streamdv1.StartPolicy_START_POLICY_UNSPECIFIED, streamdv1.StartPolicy_START_POLICY_EARLIEST, streamdv1.StartPolicy_START_POLICY_LATEST:
	case streamdv1.StartPolicy_START_POLICY_AT_TIME:
		if req.GetToTimeUnixNano() == 0 {
			return nil, status.Error(codes.InvalidArgument, "admin: to_start_policy AT_TIME needs to_time_unix_nano")
		}
		to.StartTime = time.Unix(0, req.GetToTimeUnixNano())
	default:
		return nil, status.Errorf(codes.InvalidArgument, "admin: to_start_policy %v is not a start policy", to.Start)
	}
	store := e.consumer().Options().Store
	var changes []offsets.Change
	move := func() error {
		changes, err = store.Move(sel, to, req.GetExecute())
		return err
	}
	if req.GetExecute() {
		err = s.r.whileStopped(ctx, e, move)
	} else {
		err = move()
	}
	if err != nil {
		return nil, statusOf(err)
	}
	resp := &streamdv1.MoveOffsetsResponse{Executed: req.GetExecute()}
	for _, c := range changes {
		pc := &streamdv1.OffsetChange{To: offsets.Entry{Key: c.Key, Offset: c.To}.Proto()}
		if c.Found {
			pc.From = offsets.Entry{Key: c.Key, Offset: c.From}.Proto()
		}
		resp.Changes = append(resp.Changes, pc)
	}
	return resp, nil
}

func (s *server) UpdateConsumerFilter(ctx context.Context, req *streamdv1.UpdateConsumerFilterRequest) (*streamdv1.UpdateConsumerFilterResponse, error) {
	if req.GetConsumer() == "" {
		return nil, status.Error(codes.InvalidArgument, "admin: consumer is empty")
	}
	es, err := s.r.entries(req.GetConsumer())
	if err != nil {
		return nil, statusOf(err)
	}
	if err := es[0].steerable(); err != nil {
		return nil, statusOf(err)
	}
	c := es[0].consumer()
	if missing := filters.Missing(c.Filter(), req.GetRemove()); len(missing) > 0 {
		return nil, status.Errorf(codes.NotFound, "admin: %q is not in the filter of consumer %q", filters.Format(missing[0]), req.GetConsumer())
	}
	if err := c.UpdateFilter(ctx, req.GetAdd(), req.GetRemove()); err != nil {
		return nil, statusOf(err)
	}
	return &streamdv1.UpdateConsumerFilterResponse{Filter: c.Filter()}, nil
}

// selected returns the consumer a selector names and the selector itself.
func (s *server) selected(p *streamdv1.OffsetSelector) (*entry, offsets.Selector, error) {
	sel := offsets.Selector{Consumer: p.GetConsumer(), JournalID: p.GetJournalId()}
	if sel.Consumer == "" {
		return nil, sel, status.Error(codes.InvalidArgument, "admin: selector.consumer is empty")
	}
	if len(sel.JournalID) == 0 {
		sel.JournalID = nil
	} else if len(sel.JournalID) != offsets.JournalIDLen {
		return nil, sel, status.Errorf(codes.InvalidArgument, "admin: selector.journal_id has %d bytes, want %d", len(sel.JournalID), offsets.JournalIDLen)
	}
	if p.GetSlices() != nil {
		r, err := offsets.SliceRangeFromProto(p.GetSlices())
		if err != nil {
			return nil, sel, status.Errorf(codes.InvalidArgument, "admin: selector.slices: %v", err)
		}
		sel.Slices = &r
	}
	es, err := s.r.entries(sel.Consumer)
	if err != nil {
		return nil, sel, statusOf(err)
	}
	return es[0], sel, nil
}

// statusOf chooses the status code of an error, in one place.
func statusOf(err error) error {
	var refused *consumer.FilterRefusedError
	switch {
	case errors.As(err, &refused):
		return refused.GRPCStatus().Err()
	case errors.Is(err, ErrUnknownConsumer), errors.Is(err, offsets.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, offsets.ErrInvalid), errors.Is(err, consumer.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrGroupMember):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, fmt.Sprintf("admin: %v", err))
}

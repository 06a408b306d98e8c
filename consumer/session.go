package consumer

import (
	"context"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// session is one open Subscribe stream.
type session struct {
	f      *follower
	stream grpc.BidiStreamingClient[streamdv1.SubscribeRequest, streamdv1.SubscribeResponse]
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when the stream is over

	sendMu sync.Mutex // one sender at a time (gRPC's rule)

	mu        sync.Mutex
	journalID []byte
	waiters   map[uint64]chan *streamdv1.FilterUpdateResult

	recvErr error // set by receive before it closes its channel

	// reports: the producer takes OffsetReport (its Hello said so); set
	// before the serving loop starts.
	reports bool
}

// receive reads the stream: filter update results go to their waiters (so
// that UpdateFilter does not wait for the handler), the rest to out.
func (s *session) receive(ctx context.Context, out chan<- *streamdv1.SubscribeResponse) {
	defer close(out)
	for {
		m, err := s.stream.Recv()
		if err != nil {
			s.recvErr = err
			return
		}
		if r := m.GetFilterUpdateResult(); r != nil {
			s.deliver(r)
			continue
		}
		select {
		case out <- m:
		case <-ctx.Done():
			return
		}
	}
}

func (s *session) send(req *streamdv1.SubscribeRequest) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(req)
}

func (s *session) restart(reason string) { s.cancel(&restartError{reason: reason}) }

func (s *session) setJournalID(jid []byte) {
	s.mu.Lock()
	s.journalID = jid
	s.mu.Unlock()
}

func (s *session) expect(id uint64) chan *streamdv1.FilterUpdateResult {
	ch := make(chan *streamdv1.FilterUpdateResult, 1)
	s.mu.Lock()
	s.waiters[id] = ch
	s.mu.Unlock()
	return ch
}

func (s *session) forget(id uint64) {
	s.mu.Lock()
	delete(s.waiters, id)
	s.mu.Unlock()
}

func (s *session) deliver(r *streamdv1.FilterUpdateResult) {
	s.mu.Lock()
	ch := s.waiters[r.GetId()]
	delete(s.waiters, r.GetId())
	s.mu.Unlock()
	if ch == nil {
		s.f.log.Debug("consumer: filter update result nobody waits for", "id", r.GetId())
		return
	}
	ch <- r
}

// replayFromLastApplied fills in, for this stream's journal, the replay of
// includes of exact entity ids that ask none.
func (s *session) replayFromLastApplied(add []*streamdv1.FilterCriterion, entityType string) []*streamdv1.FilterCriterion {
	s.mu.Lock()
	jid := s.journalID
	s.mu.Unlock()
	o := s.f.c.opts
	out := make([]*streamdv1.FilterCriterion, len(add))
	for i, c := range add {
		if c.GetAction() == streamdv1.FilterAction_FILTER_ACTION_INCLUDE &&
			c.GetField() == streamdv1.FilterField_FILTER_FIELD_ENTITY_ID && c.GetReplayFromSeqNr() == 0 {
			c = proto.CloneOf(c)
			var last uint64
			if jid != nil {
				var err error
				if last, err = o.Store.AppliedSeqNr(nil, o.Name, jid, entityType, c.GetValue()); err != nil {
					s.f.log.Warn("consumer: read applied seqNr for a replay, replaying the whole history", "entity", c.GetValue(), "error", err)
					last = 0
				}
			}
			c.ReplayFromSeqNr = last + 1
		}
		out[i] = c
	}
	return out
}

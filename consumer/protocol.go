package consumer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// infoTimeout bounds the JournalInfo call that explains a refused Init.
const infoTimeout = 5 * time.Second

// serve reads Hello, then events and progress until the stream ends.
func (f *follower) serve(ctx context.Context, s *session, msgs <-chan *streamdv1.SubscribeResponse, st start) (bool, error) {
	var first *streamdv1.SubscribeResponse
	helloTimer := time.NewTimer(f.c.opts.HelloTimeout)
	defer helloTimer.Stop()
	select {
	case first = <-msgs:
	case <-ctx.Done():
		return false, context.Cause(ctx)
	case <-helloTimer.C:
		return false, status.Errorf(codes.Unavailable, "consumer: producer %s sent no Hello within %v", f.addr, f.c.opts.HelloTimeout)
	}
	if first == nil {
		if ctx.Err() != nil {
			return false, context.Cause(ctx)
		}
		return false, f.translate(ctx, s.recvErr, st)
	}
	h := first.GetHello()
	if h == nil {
		return false, protocolf(f.addr, "the first response is not Hello")
	}
	if err := f.hello(h, st, s); err != nil {
		return false, err
	}
	s.reports = h.GetAcceptsOffsetReports()
	f.reportedOffset, f.reportedAt = 0, time.Time{}
	f.mu.Lock()
	f.st.Connected = true
	f.mu.Unlock()
	f.updateStatus()
	f.log.Info("consumer: stream open", "journal", fmt.Sprintf("%x", f.journalID), "offset", f.offset,
		"producer_first", h.GetFirstOffset(), "producer_last", h.GetLastOffset())

	ticker := time.NewTicker(f.c.opts.SaveInterval)
	defer ticker.Stop()
	for {
		select {
		case m := <-msgs:
			if m == nil {
				if ctx.Err() != nil {
					return true, context.Cause(ctx)
				}
				return true, f.translate(ctx, s.recvErr, st)
			}
			var next *streamdv1.SubscribeResponse
			if f.c.opts.BatchHandler != nil || f.c.opts.CommitHandler != nil {
				m, next = coalesce(m, msgs)
			}
			if err := f.handle(ctx, m); err != nil {
				return true, err
			}
			if next != nil {
				if err := f.handle(ctx, next); err != nil {
					return true, err
				}
			}
			f.report(s)
		case err := <-f.saveDone:
			if err := f.saveEnded(err); err != nil {
				return true, err
			}
			f.report(s)
		case <-ticker.C:
			if err := f.saveDue(); err != nil {
				return true, err
			}
			f.report(s)
		case <-ctx.Done():
			return true, context.Cause(ctx)
		}
	}
}

// report tells the producer the offset stored, if it moved since the last
// report and the last report is ReportInterval old, and the producer takes
// reports.
func (f *follower) report(s *session) {
	if !s.reports || !f.known || f.stored == f.reportedOffset ||
		time.Since(f.reportedAt) < f.c.opts.ReportInterval {
		return
	}
	err := s.send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_OffsetReport{
		OffsetReport: &streamdv1.OffsetReport{StoredOffset: f.stored}}})
	if err == nil { // else the stream is ending, and receive says why
		f.reportedOffset, f.reportedAt = f.stored, time.Now()
	}
}

// coalesceEvents and coalesceBytes bound the batches coalesce makes.
const (
	coalesceEvents = 1000
	coalesceBytes  = 1 << 20
)

// coalesce merges into m, a live event batch, the live batches already
// queued behind it, so that a BatchHandler or CommitHandler writes them at
// once (one append, one fsync, for a replication). It stops at the first other message, which
// it returns as next (nil if none), to be handled after the merged batch.
func coalesce(m *streamdv1.SubscribeResponse, msgs <-chan *streamdv1.SubscribeResponse) (merged, next *streamdv1.SubscribeResponse) {
	b := m.GetEvents()
	if b == nil || b.GetReplay() {
		return m, nil
	}
	var events []*streamdv1.Event
	size := proto.Size(b)
	for len(b.GetEvents())+len(events) < coalesceEvents && size < coalesceBytes {
		var more *streamdv1.SubscribeResponse
		select {
		case more = <-msgs:
		default:
		}
		if more == nil {
			break // nothing queued, or the stream ended (the channel closed)
		}
		mb := more.GetEvents()
		if mb == nil || mb.GetReplay() {
			next = more
			break
		}
		if events == nil {
			events = append(events, b.GetEvents()...)
		}
		events = append(events, mb.GetEvents()...)
		size += proto.Size(mb)
	}
	if events == nil {
		return m, next
	}
	return &streamdv1.SubscribeResponse{Response: &streamdv1.SubscribeResponse_Events{Events: &streamdv1.EventBatch{Events: events}}}, next
}

// hello checks the journal id and settles the position the stream starts
// from.
func (f *follower) hello(h *streamdv1.Hello, st start, s *session) error {
	jid := bytes.Clone(h.GetJournalId())
	if len(jid) != offsets.JournalIDLen {
		return protocolf(f.addr, "Hello has a journal id of %d bytes, want %d", len(jid), offsets.JournalIDLen)
	}
	if st.expect != nil && !bytes.Equal(jid, st.expect) {
		return &JournalChangedError{Addr: f.addr, Stored: st.expect, Current: jid}
	}
	takeover, err := f.c.claim(f, jid)
	if err != nil {
		return err
	}
	if takeover { // another follower moved jid on meanwhile
		f.known = false
		clear(f.cache)
		if st.position != nil {
			return &restartError{reason: fmt.Sprintf("journal %x was followed through another address meanwhile", jid)}
		}
	}
	forced := f.forceEarliest
	if !bytes.Equal(jid, f.journalID) {
		f.journalID, f.known, f.dirty, f.sinceSave = jid, false, false, 0
		f.forgetApplied()
	}
	if !f.discovered && !bytes.Equal(jid, f.recorded) {
		if err := f.saveJournalRecord(jid); err != nil {
			return err
		}
		f.recorded = jid
	}
	s.setJournalID(jid)
	f.lastKnown = h.GetLastOffset() // the journal's end now, lower after a restore from a copy
	if st.position != nil {
		f.offset, f.known, f.stored = st.position.Offset, true, st.stored
		f.dirty = st.position.Offset > st.stored
		return nil
	}
	if !forced && !st.reset && !bytes.Equal(jid, st.journalID) {
		// We did not know this journal; an offset may still be stored for it
		// (set by an operator, or the journal record was lost): use it.
		r, err := f.c.opts.Store.Resolve(f.key(jid))
		if err != nil {
			return storeErrorf("consumer: producer %s: read the offset: %w", f.addr, err)
		}
		if r.Found {
			return &restartError{reason: fmt.Sprintf("an offset is stored for journal %x", jid)}
		}
	}
	// Started from a policy: the stored offset is the one just before the start offset.
	// Set (not Save) so that a reset or a re-split is settled exactly.
	off := h.GetStartOffset()
	if off > 0 {
		off--
	}
	if f.parts != nil {
		f.c.resplitMu.Lock()
		defer f.c.resplitMu.Unlock()
	}
	for _, k := range f.startKeys(jid, off) {
		if err := f.c.opts.Store.Set(k, off); err != nil {
			return storeErrorf("consumer: producer %s: store the start offset: %w", f.addr, err)
		}
	}
	f.offset, f.known, f.dirty, f.forceEarliest, f.stored = off, true, false, false, off
	return nil
}

// translate turns a stream error into what the caller branches on.
func (f *follower) translate(ctx context.Context, err error, st start) error {
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("consumer: producer %s ended the stream", f.addr) // retried
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	s, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("consumer: producer %s: %w", f.addr, err)
	}
	switch s.Code() {
	case codes.FailedPrecondition:
		if st.position != nil {
			info := f.journalInfo(ctx)
			if bytes.Equal(info.GetJournalId(), st.position.JournalId) && info.GetLastOffset() < st.position.Offset {
				return &AheadError{Addr: f.addr, Consumer: f.c.opts.Name, JournalID: st.position.JournalId,
					Offset: st.position.Offset, LastOffset: info.GetLastOffset(), Message: s.Message()}
			}
			e := &JournalChangedError{Addr: f.addr, Stored: st.position.JournalId, Message: s.Message()}
			if len(info.GetJournalId()) > 0 {
				e.Current = info.GetJournalId()
			}
			return e
		}
	case codes.OutOfRange:
		e := &OutOfRangeError{Addr: f.addr, JournalID: f.journalID, Offset: f.offset, Message: s.Message()}
		if st.position != nil && !f.known {
			e.JournalID, e.Offset = st.position.JournalId, st.position.Offset
		}
		if info := f.journalInfo(ctx); info != nil {
			e.FirstAvailable = info.GetFirstOffset()
		}
		if e.FirstAvailable == 0 {
			e.FirstAvailable = firstAvailableIn(s.Message())
		}
		return e
	}
	return fmt.Errorf("consumer: producer %s: %w", f.addr, err)
}

// journalInfo asks the producer about its journal, best effort.
func (f *follower) journalInfo(ctx context.Context) *streamdv1.JournalInfoResponse {
	ctx, cancel := context.WithTimeout(ctx, infoTimeout)
	defer cancel()
	info, err := f.client.JournalInfo(ctx, &streamdv1.JournalInfoRequest{})
	if err != nil {
		f.log.Debug("consumer: JournalInfo failed", "error", err)
		return nil
	}
	return info
}

var firstAvailableRE = regexp.MustCompile(`first available offset is (\d+)`)

func firstAvailableIn(msg string) uint64 {
	m := firstAvailableRE.FindStringSubmatch(msg)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

func (f *follower) handle(ctx context.Context, m *streamdv1.SubscribeResponse) error {
	switch r := m.GetResponse().(type) {
	case *streamdv1.SubscribeResponse_Events:
		var err error
		if f.c.opts.Mode() == ExactlyOnce {
			err = f.batchExactlyOnce(ctx, r.Events)
		} else {
			err = f.batchAtLeastOnce(ctx, r.Events)
		}
		f.updateStatus()
		return err
	case *streamdv1.SubscribeResponse_Progress:
		p := r.Progress.GetOffset()
		f.lastKnown = max(f.lastKnown, p)
		if p > f.offset {
			f.offset, f.dirty = p, true
		}
		err := f.saveDue()
		f.updateStatus()
		return err
	case *streamdv1.SubscribeResponse_Hello:
		return protocolf(f.addr, "a second Hello")
	default:
		f.log.Debug("consumer: ignoring an unknown response", "type", fmt.Sprintf("%T", r))
		return nil
	}
}

func (f *follower) checkEvent(e *streamdv1.Event) error {
	switch {
	case e == nil:
		return protocolf(f.addr, "a nil event")
	case e.GetEntityId() == "":
		return protocolf(f.addr, "event at offset %d has no entity id", e.GetOffset())
	case e.GetSeqNr() == 0:
		return protocolf(f.addr, "event at offset %d (%s/%s) has seqNr 0", e.GetOffset(), e.GetEntityType(), e.GetEntityId())
	}
	return nil
}

func codeOf(c int32) codes.Code { return codes.Code(uint32(c)) }

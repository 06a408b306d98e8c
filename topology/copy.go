package topology

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// CopyHistory copies into opts.Journal every event of opts.Slices that the
// journal at opts.From held when CopyHistory was called, and returns nil
// once all of them are in opts.Journal, committed as durably as its
// appends are. A pod that takes slices from another pod of its region
// calls it with opts.Member set and opts.From that pod, before it serves
// those slices: the events written at that pod and the copies it holds
// from other regions arrive with their origin and origin seqNr, so the
// pod continues each entity's sequence. (Without Member, the source is
// another region and this region's own events are not copied, as in any
// replication.)
//
// It runs the replication of opts (NewReplication; opts.Streams streams)
// until the offset it stored in opts.Journal covers, over all of
// opts.Slices, the source's last offset as of the start (JournalInfo).
// That offset commits in the same transaction as the events it covers,
// and a stretch of events the source filtered away (other slices) is
// committed as an offset alone when the source's progress watermark
// arrives, so a stored offset at that mark means every event of those
// slices up to it is in opts.Journal. The check runs after each commit;
// nothing is timed. Later events may be copied too.
//
// The offset is stored under opts.Name, by default
// "copy-<From.Name>-<stream>-<source journal id>": a later CopyHistory
// from the same source journal copies only what came since, and a source
// whose journal was replaced is copied from its earliest event. Copying
// again is harmless: the journal drops the origin seqNrs it holds.
//
// opts.From.Addrs must be one address (one journal, not opts.Journal),
// and opts.Filter empty (a part of a history would leave gaps); else the
// error wraps ErrInvalidOptions. Otherwise it returns an error wrapping:
//
//   - *journal.OriginGapError when the source lacks an entity's earlier
//     events (deleted by retention): that history cannot be copied whole.
//     What was committed before stays; nothing after the gap is applied.
//   - consumer.ErrJournalChanged when the address serves another journal
//     than at the start; call CopyHistory again.
//   - the source's error when JournalInfo fails, or when it refuses the
//     stream (consumer.ErrOutOfRange: the stored offset is below its
//     retention floor); once the copy runs, a source that cannot be
//     reached is retried with backoff, like any replication's, until ctx
//     ends.
//   - the journal's or the offsets store's error.
//
// When ctx ends first it returns ctx.Err(). It must not run beside another
// CopyHistory or replication of the same Name, whose offsets it writes.
func CopyHistory(ctx context.Context, opts ReplicationOptions) error {
	if err := opts.Validate(); err != nil {
		return err
	}
	switch {
	case len(opts.From.Addrs) > 1:
		return fmt.Errorf("%w: ReplicationOptions.From.Addrs: CopyHistory copies one journal, give one address, not %d", ErrInvalidOptions, len(opts.From.Addrs))
	case len(opts.Filter) > 0:
		return fmt.Errorf("%w: ReplicationOptions.Filter: CopyHistory copies whole histories, leave it empty", ErrInvalidOptions)
	}
	from := opts.From.Addrs[0]
	info, err := sourceInfo(ctx, from, opts.DialOptions)
	if err != nil {
		return fmt.Errorf("topology: copy from %s (%s): %w", opts.From.Name, from, err)
	}
	jid, target := info.GetJournalId(), info.GetLastOffset()
	switch {
	case len(jid) != offsets.JournalIDLen:
		return fmt.Errorf("topology: copy from %s (%s): JournalInfo gave a journal id of %d bytes, want %d", opts.From.Name, from, len(jid), offsets.JournalIDLen)
	case bytes.Equal(jid, opts.Journal.ID()):
		return fmt.Errorf("%w: ReplicationOptions.From: %s serves this journal (%x): give the address of the pod to copy from", ErrInvalidOptions, from, jid)
	case target == 0 || target < info.GetFirstOffset():
		return nil // the source holds no event
	}
	if opts.Name == "" {
		stream := opts.Stream
		if stream == "" {
			stream = "all"
		}
		opts.Name = "copy-" + opts.From.Name + "-" + stream + "-" + hex.EncodeToString(jid)
	}
	if opts.Store == nil {
		if opts.Store, err = offsets.Wrap(opts.Journal, offsets.Options{Logger: opts.Logger}); err != nil {
			return fmt.Errorf("topology: offsets in the local journal: %w", err)
		}
	}
	part := opts.Slices
	if part == (offsets.SliceRange{}) {
		part = offsets.AllSlices
	}
	key := offsets.Key{Consumer: opts.Name, JournalID: jid, Slices: part}
	// copied: the stored offsets of the slices, exact or the lowest of
	// the parts they were stored in, cover target.
	copied := func() (bool, error) {
		r, err := opts.Store.Resolve(key)
		if err != nil {
			return false, fmt.Errorf("topology: copy from %s (%s): read the offset %s: %w", opts.From.Name, from, key, err)
		}
		return r.Found && !r.Offset.Pending() && len(r.Uncovered) == 0 && r.Offset.Offset >= target, nil
	}
	if done, err := copied(); err != nil || done {
		return err
	}

	c, r, err := newReplication(opts)
	if err != nil {
		return err
	}
	run, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	r.gap = func(gap *journal.OriginGapError) error {
		return fmt.Errorf("topology: copy from %s (%s): the source lacks earlier events of the entity (deleted by retention?), so its history cannot be copied whole: %w", opts.From.Name, from, gap)
	}
	r.committed = func() {
		for _, st := range c.Status() {
			if st.JournalID != nil && !bytes.Equal(st.JournalID, jid) {
				stop(&consumer.JournalChangedError{Addr: st.Addr, Stored: jid, Current: st.JournalID,
					Message: "the address served another journal when the copy began; copy again"})
				return
			}
		}
		switch done, err := copied(); {
		case err != nil:
			stop(err)
		case done:
			stop(errCopied)
		}
	}
	err = c.Run(run)
	switch cause := context.Cause(run); {
	case errors.Is(cause, errCopied):
		return nil
	case err != nil:
		return err
	case ctx.Err() != nil:
		return ctx.Err()
	case cause != nil:
		return cause
	default:
		return fmt.Errorf("topology: copy from %s (%s): the replication stopped before the copy was done", opts.From.Name, from)
	}
}

// errCopied stops the replication of CopyHistory once it copied all.
var errCopied = errors.New("topology: history copied")

// sourceInfo asks the producer at addr about its journal.
func sourceInfo(ctx context.Context, addr string, dial []grpc.DialOption) (*streamdv1.JournalInfoResponse, error) {
	// As the consumer dials: insecure unless dial says otherwise.
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dial...)...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return streamdv1.NewEventStreamServiceClient(conn).JournalInfo(ctx, &streamdv1.JournalInfoRequest{})
}

package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// storeAdmin edits an offsets store directory of a stopped consumer.
type storeAdmin struct {
	dir string
	s   *offsets.Store
}

func (a *storeAdmin) offsets(consumer string) ([]offsets.Entry, error) { return a.s.List(consumer) }

func (a *storeAdmin) resolve(sel offsets.Selector) (offsets.Key, offsets.Resolution, error) {
	return a.s.ResolveSelected(sel)
}

func (a *storeAdmin) move(sel offsets.Selector, to offsets.Offset, execute bool) ([]offsets.Change, error) {
	return a.s.Move(sel, to, execute)
}

func (a *storeAdmin) filters(consumer, stream string, anyStream bool) ([]offsets.FilterEntry, error) {
	all, err := a.s.ListFilters()
	if err != nil {
		return nil, err
	}
	var out []offsets.FilterEntry
	for _, e := range all {
		if (consumer == "" || e.Consumer == consumer) && (anyStream || e.Stream == stream) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (a *storeAdmin) editFilter(consumer, stream string, add, remove []*streamdv1.FilterCriterion) (offsets.FilterEntry, error) {
	cur, err := a.s.Filters(consumer, stream)
	if err != nil && !errors.Is(err, offsets.ErrNotFound) {
		return offsets.FilterEntry{}, err
	}
	if missing := filters.Missing(cur, remove); len(missing) > 0 {
		return offsets.FilterEntry{}, fmt.Errorf("%q is not in the filter of consumer %q on stream %q", filters.Format(missing[0]), consumer, stream)
	}
	next := filters.Apply(cur, add, remove)
	if _, err := filters.Compile(next, filters.Limits{}); err != nil {
		return offsets.FilterEntry{}, err
	}
	if err := a.s.SetFilters(consumer, stream, next); err != nil {
		return offsets.FilterEntry{}, err
	}
	return offsets.FilterEntry{Consumer: consumer, Stream: stream, Criteria: next}, nil
}

// ends: an offsets store alone knows no producer.
func (a *storeAdmin) ends(string) ([]journalEnd, error) { return nil, nil }

func (a *storeAdmin) when(consumer string) string {
	return fmt.Sprintf("stored; consumer %q picks it up at its next (re)connect", consumer)
}

func (a *storeAdmin) Close() error {
	if err := a.s.Close(); err != nil {
		return fmt.Errorf("close offsets store %s: %w", a.dir, err)
	}
	return nil
}

// remoteAdmin acts on the consumers a server runs, through its AdminService.
type remoteAdmin struct {
	c   *cli.Context
	cl  *client
	api streamdv1.AdminServiceClient
}

func dialAdmin(c *cli.Context) (*remoteAdmin, error) {
	cl, err := dial(c)
	if err != nil {
		return nil, err
	}
	return &remoteAdmin{c: c, cl: cl, api: streamdv1.NewAdminServiceClient(cl.conn)}, nil
}

func (a *remoteAdmin) offsets(consumer string) ([]offsets.Entry, error) {
	ctx, cancel := unary(a.c)
	defer cancel()
	resp, err := a.api.ListOffsets(ctx, &streamdv1.ListOffsetsRequest{Consumer: consumer})
	if err != nil {
		return nil, a.cl.serverError(err)
	}
	out := make([]offsets.Entry, 0, len(resp.GetOffsets()))
	for _, p := range resp.GetOffsets() {
		e, err := a.entry(p)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// entry converts a stored offset the server sent.
func (a *remoteAdmin) entry(p *streamdv1.StoredOffset) (offsets.Entry, error) {
	e, err := offsets.EntryFromProto(p)
	if err != nil {
		return e, fmt.Errorf("server %s sent a bad stored offset: %w", a.cl.addr, err)
	}
	return e, nil
}

func (a *remoteAdmin) resolve(sel offsets.Selector) (offsets.Key, offsets.Resolution, error) {
	ctx, cancel := unary(a.c)
	defer cancel()
	resp, err := a.api.GetOffset(ctx, &streamdv1.GetOffsetRequest{Selector: selectorProto(sel)})
	if err != nil {
		return offsets.Key{}, offsets.Resolution{}, a.cl.serverError(err)
	}
	e, err := a.entry(resp.GetOffset())
	return e.Key, offsets.Resolution{Offset: e.Offset, Found: true, Exact: resp.GetExact()}, err
}

func (a *remoteAdmin) move(sel offsets.Selector, to offsets.Offset, execute bool) ([]offsets.Change, error) {
	ctx, cancel := unary(a.c)
	defer cancel()
	req := &streamdv1.MoveOffsetsRequest{Selector: selectorProto(sel), ToOffset: to.Offset, ToStartPolicy: to.Start, Execute: execute}
	if !to.StartTime.IsZero() {
		req.ToTimeUnixNano = to.StartTime.UnixNano()
	}
	resp, err := a.api.MoveOffsets(ctx, req)
	if err != nil {
		return nil, a.cl.serverError(err)
	}
	var out []offsets.Change
	for _, pc := range resp.GetChanges() {
		toEntry, err := a.entry(pc.GetTo())
		if err != nil {
			return nil, err
		}
		ch := offsets.Change{Key: toEntry.Key, To: toEntry.Offset}
		if pc.GetFrom() != nil {
			from, err := a.entry(pc.GetFrom())
			if err != nil {
				return nil, err
			}
			ch.From, ch.Found = from.Offset, true
		}
		out = append(out, ch)
	}
	return out, nil
}

func selectorProto(sel offsets.Selector) *streamdv1.OffsetSelector {
	p := &streamdv1.OffsetSelector{Consumer: sel.Consumer, JournalId: sel.JournalID}
	if sel.Slices != nil {
		p.Slices = sel.Slices.Proto()
	}
	return p
}

func (a *remoteAdmin) filters(consumer, _ string, _ bool) ([]offsets.FilterEntry, error) {
	ctx, cancel := unary(a.c)
	defer cancel()
	resp, err := a.api.ListConsumers(ctx, &streamdv1.ListConsumersRequest{Consumer: consumer})
	if err != nil {
		return nil, a.cl.serverError(err)
	}
	var out []offsets.FilterEntry
	for _, cs := range resp.GetConsumers() {
		out = append(out, offsets.FilterEntry{Consumer: cs.GetName(), Stream: cs.GetStream(), Criteria: cs.GetFilter()})
	}
	return out, nil
}

func (a *remoteAdmin) editFilter(consumer, _ string, add, remove []*streamdv1.FilterCriterion) (offsets.FilterEntry, error) {
	ctx, cancel := unary(a.c)
	defer cancel()
	resp, err := a.api.UpdateConsumerFilter(ctx, &streamdv1.UpdateConsumerFilterRequest{Consumer: consumer, Add: add, Remove: remove})
	if err != nil {
		return offsets.FilterEntry{}, a.cl.serverError(err)
	}
	list, err := a.filters(consumer, "", true)
	if err != nil || len(list) != 1 {
		return offsets.FilterEntry{Consumer: consumer, Criteria: resp.GetFilter()}, err
	}
	list[0].Criteria = resp.GetFilter()
	return list[0], nil
}

// ends: a producer's last offset is the consumer's offset plus its lag,
// both as of the producer's last Hello, Progress or events.
func (a *remoteAdmin) ends(consumer string) ([]journalEnd, error) {
	ctx, cancel := unary(a.c)
	defer cancel()
	resp, err := a.api.ListConsumers(ctx, &streamdv1.ListConsumersRequest{Consumer: consumer})
	if err != nil {
		return nil, a.cl.serverError(err)
	}
	var out []journalEnd
	for _, cs := range resp.GetConsumers() {
		for _, p := range cs.GetProducers() {
			if len(p.GetJournalId()) > 0 {
				out = append(out, journalEnd{producer: p.GetAddr(), journalID: p.GetJournalId(), lastOffset: p.GetOffset() + p.GetLag()})
			}
		}
	}
	return out, nil
}

func (a *remoteAdmin) when(consumer string) string {
	return fmt.Sprintf("consumer %q on %s runs with it now", consumer, a.cl.addr)
}

func (a *remoteAdmin) Close() error { return a.cl.Close() }

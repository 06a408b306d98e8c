package primary

import (
	"context"
	"fmt"
	"slices"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology/crdt"
)

// Observer receives what the multi-region writes do, for metrics. Methods
// must not block.
type Observer interface {
	// Forwarded: a write of entityType was forwarded to its pinned primary.
	Forwarded(entityType string)
	// TookOver: this region took an entity of entityType over from its
	// owner (or by force) to write it.
	TookOver(entityType string)
	// CRDTOps: ops CRDT operations were written to an entity of entityType.
	CRDTOps(entityType string, ops int)
}

// Routes reports whether Publish writes an event, rather than a plain
// append to the local journal: its entity type is single-writer or
// replicated. An event that carries CRDT operations but is of a type that
// is not replicated is an error (ErrWrongMode).
func (p *Primary) Routes(ev *streamdv1.Event) (bool, error) {
	t, ok := p.config.Lookup(ev.GetEntityType())
	routed := ok && (t.SingleWriter() || t.Mode == ModeReplicated)
	if len(ev.GetCrdtOps()) > 0 && (!ok || t.Mode != ModeReplicated) {
		mode := "local"
		if ok {
			mode = t.Mode.String()
		}
		return false, fmt.Errorf("%w: entity type %q is %s; crdt_ops are for replicated entity types (mode replicated in streamd's config)", ErrWrongMode, ev.GetEntityType(), mode)
	}
	return routed, nil
}

// Publish writes the events of one entity as its type's mode says, so that
// a service publishes the same way in every region:
//
//   - pinned and request-region: Write (forwarded to the pinned primary, or
//     after a takeover); each event's answer carries the region that took it
//     and its version;
//   - replicated: each event carries CRDT operations (crdt_ops) and nothing
//     else; they are appended as one journal event per op (see
//     topology.Replicated) and the answer is where the event's last op
//     landed.
//
// Local events are not Publish's (see Routes). The answer has one Appended
// per event.
func (p *Primary) Publish(ctx context.Context, events []*streamdv1.Event) ([]*streamdv1.Appended, error) {
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: a publish with no events", ErrInvalidRequest)
	}
	entityType, entityID := events[0].GetEntityType(), events[0].GetEntityId()
	if entityType == "" || entityID == "" {
		return nil, fmt.Errorf("%w: entity type %q and id %q: both are required", ErrInvalidRequest, entityType, entityID)
	}
	for i, ev := range events {
		if ev.GetEntityType() != entityType || ev.GetEntityId() != entityID {
			return nil, fmt.Errorf("%w: event %d is of %s/%s, event 0 of %s/%s: a publish of a pinned, request-region or replicated entity type holds the events of one entity; publish each entity's events separately (or with separate_appends)",
				ErrInvalidRequest, i, ev.GetEntityType(), ev.GetEntityId(), entityType, entityID)
		}
	}
	t, ok := p.config.Lookup(entityType)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: %q (the config lists %s)", ErrUnknownEntityType, entityType, p.typeNames())
	case t.Mode == ModeReplicated:
		return p.publishOps(ctx, entityType, entityID, events)
	case !t.SingleWriter():
		return nil, fmt.Errorf("%w: %q is %s: append its events to the local journal", ErrWrongMode, entityType, t.Mode)
	}
	w, err := p.Write(ctx, entityType, entityID, AnyVersion, events...)
	if err != nil {
		return nil, err
	}
	if len(w.Versions) != len(events) || len(w.Offsets) != len(events) || len(w.SeqNrs) != len(events) {
		return nil, fmt.Errorf("topology: %s/%s: region %q answered %d versions, %d offsets and %d seqNrs for %d events",
			entityType, entityID, w.Region, len(w.Versions), len(w.Offsets), len(w.SeqNrs), len(events))
	}
	out := make([]*streamdv1.Appended, len(events))
	for i := range events {
		out[i] = &streamdv1.Appended{Offset: w.Offsets[i], SeqNr: w.SeqNrs[i], Region: w.Region, Version: w.Versions[i]}
	}
	return out, nil
}

// publishOps appends the CRDT operations of events as one append.
func (p *Primary) publishOps(ctx context.Context, entityType, entityID string, events []*streamdv1.Event) ([]*streamdv1.Appended, error) {
	var changes []crdt.Change
	last := make([]int, len(events)) // per event, the index of its last change
	for i, ev := range events {
		if err := opsOnly(ev); err != nil {
			return nil, fmt.Errorf("%w: event %d of %s/%s: %w", ErrInvalidRequest, i, entityType, entityID, err)
		}
		for j, op := range ev.CrdtOps {
			c, err := change(op)
			if err != nil {
				return nil, fmt.Errorf("%w: event %d of %s/%s: crdt_ops[%d]: %w", ErrInvalidRequest, i, entityType, entityID, j, err)
			}
			changes = append(changes, c)
		}
		last[i] = len(changes) - 1
	}
	appended, err := p.rep.Append(ctx, entityType, entityID, changes...)
	if err != nil {
		return nil, err
	}
	if len(appended) != len(changes) {
		return nil, fmt.Errorf("topology: %s/%s: %d events appended for %d CRDT operations", entityType, entityID, len(appended), len(changes))
	}
	p.obs.CRDTOps(entityType, len(changes))
	out := make([]*streamdv1.Appended, len(events))
	for i := range events {
		a := appended[last[i]]
		out[i] = &streamdv1.Appended{Offset: a.Offset, SeqNr: a.SeqNr}
	}
	return out, nil
}

// opsOnly refuses an event of a replicated type that is not just CRDT
// operations: the journal holds the ops, nothing else of it would be kept.
func opsOnly(ev *streamdv1.Event) error {
	switch {
	case len(ev.CrdtOps) == 0:
		return fmt.Errorf("no crdt_ops: an event of a replicated entity type carries CRDT operations (streamctl publish --set, --add-counter, --add, --remove)")
	case ev.EventType != "" || len(ev.Payload) > 0 || len(ev.Tags) > 0 || ev.Topic != "" || len(ev.Metadata) > 0:
		return fmt.Errorf("event_type, payload, tags, topic or metadata are set: an event of a replicated entity type carries only crdt_ops, written as one event per operation")
	case ev.SeqNr != 0 || ev.Offset != 0 || ev.Origin != "" || ev.OriginSeqNr != 0 || len(ev.VersionVector) > 0:
		return fmt.Errorf("seq_nr, offset, origin or version_vector are set; the receiving region sets them")
	}
	return nil
}

// change is the crdt.Change of a wire op.
func change(op *streamdv1.CrdtOp) (crdt.Change, error) {
	if op.GetField() == "" {
		return crdt.Change{}, fmt.Errorf("field is empty")
	}
	switch o := op.GetOp().(type) {
	case *streamdv1.CrdtOp_SetRegister:
		return crdt.SetRegister(op.Field, o.SetRegister), nil
	case *streamdv1.CrdtOp_AddCounter:
		return crdt.Increment(op.Field, o.AddCounter), nil
	case *streamdv1.CrdtOp_AddElement:
		return crdt.AddElement(op.Field, o.AddElement), nil
	case *streamdv1.CrdtOp_RemoveElement:
		return crdt.RemoveElement(op.Field, o.RemoveElement), nil
	}
	return crdt.Change{}, fmt.Errorf("field %q has no operation: set one of set_register, add_counter, add_element, remove_element", op.Field)
}

// State returns the merged state of an entity of a replicated entity type,
// as this region's journal holds it.
func (p *Primary) State(ctx context.Context, entityType, entityID string) (*crdt.State, error) {
	if entityType == "" || entityID == "" {
		return nil, fmt.Errorf("%w: entity type %q and id %q: both are required", ErrInvalidRequest, entityType, entityID)
	}
	t, ok := p.config.Lookup(entityType)
	switch {
	case !ok:
		return nil, fmt.Errorf("%w: %q (the config lists %s)", ErrUnknownEntityType, entityType, p.typeNames())
	case t.Mode != ModeReplicated:
		return nil, fmt.Errorf("%w: %q is %s; only a replicated entity type has a merged state (read the events of others with EntityEvents)", ErrWrongMode, entityType, t.Mode)
	}
	return p.rep.State(ctx, entityType, entityID)
}

// stateProto is the wire form of a state.
func stateProto(s *crdt.State) *streamdv1.StateResponse {
	resp := &streamdv1.StateResponse{Registers: map[string]string{}, Counters: map[string]int64{}, Sets: map[string]*streamdv1.Elements{}}
	for _, name := range s.Registers() {
		resp.Registers[name], _ = s.Register(name)
	}
	for _, name := range s.Counters() {
		resp.Counters[name] = s.Counter(name)
	}
	for _, name := range s.Sets() {
		resp.Sets[name] = &streamdv1.Elements{Elements: slices.Clone(s.Elements(name))}
	}
	return resp
}

// nopObserver observes nothing.
type nopObserver struct{}

func (nopObserver) Forwarded(string)    {}
func (nopObserver) TookOver(string)     {}
func (nopObserver) CRDTOps(string, int) {}

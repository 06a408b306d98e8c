package primary

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// pinState is the pin of one entity type folded from its pin events.
type pinState struct {
	lastSeqNr uint64
	primary   string // "" until a pin event or failover
	at        int64  // origin time of the pin event or failover that set it
	in        string // its origin
	pins      []pinEvent
}

// pinEvent is one pin event of an entity type.
type pinEvent struct {
	primary string
	at      int64
	in      string
}

// TypeInfo describes an entity type's mode and primary as this region
// knows them.
type TypeInfo struct {
	EntityType EntityType
	// Primary is the pinned primary now (ModePinned): as the last pin or
	// failover set it, or the configured one.
	Primary string
	// PinnedAtUnixNano and PinnedIn say when and where the last pin or
	// failover set it; zero without one.
	PinnedAtUnixNano int64
	PinnedIn         string
}

// pin folds the pin events of entityType in the local journal and the
// failover records, in (origin time, origin) order: a pin sets the
// primary, a failover moves it from its from to its to.
func (p *Primary) pin(entityType string) (pinState, error) {
	fs, err := p.failovers()
	if err != nil {
		return pinState{}, err
	}
	p.pinMu.Lock()
	defer p.pinMu.Unlock()
	st := p.pins[entityType]
	if st == nil {
		st = &pinState{}
		p.pins[entityType] = st
	}
	for {
		evs, err := p.j.ReadEntity(PinEntityType, entityType, st.lastSeqNr+1, readBatch, nil)
		if err != nil {
			return pinState{}, fmt.Errorf("topology: reading the pins of %q: %w", entityType, err)
		}
		for _, ev := range evs {
			st.lastSeqNr = ev.SeqNr
			pin := &streamdv1.PrimaryPin{}
			if err := proto.Unmarshal(ev.Payload, pin); err != nil || pin.Primary == "" || ev.EventType != PinEventType {
				p.log.Warn("primary: ignoring a pin event that is not a valid pin", "entity_type", entityType, "origin", ev.Origin, "seq_nr", ev.SeqNr, "err", err)
				continue
			}
			pe := pinEvent{primary: pin.Primary, at: ev.OriginTimestampUnixNano, in: ev.Origin}
			i, _ := slices.BinarySearchFunc(st.pins, pe, comparePins)
			st.pins = slices.Insert(st.pins, i, pe)
		}
		if len(evs) < readBatch {
			break
		}
	}
	t, _ := p.config.Lookup(entityType)
	out := pinState{primary: t.Primary}
	pins, i := st.pins, 0
	for _, f := range fs {
		for ; i < len(pins) && comparePins(pins[i], pinEvent{at: f.at, in: f.in}) <= 0; i++ {
			out.primary, out.at, out.in = pins[i].primary, pins[i].at, pins[i].in
		}
		if out.primary == f.from {
			out.primary, out.at, out.in = f.to, f.at, f.in
		}
	}
	for ; i < len(pins); i++ {
		out.primary, out.at, out.in = pins[i].primary, pins[i].at, pins[i].in
	}
	return out, nil
}

func comparePins(a, b pinEvent) int { return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.in, b.in)) }

// SetPrimary pins the primary region of a ModePinned entity type: it appends a
// pin event to the local journal, which replicates to the other regions.
// Each entity moves to the new primary on its next write there.
func (p *Primary) SetPrimary(ctx context.Context, entityType, region string) error {
	t, ok := p.config.Lookup(entityType)
	switch {
	case !ok:
		return fmt.Errorf("%w: %q (the config lists %s)", ErrUnknownEntityType, entityType, p.typeNames())
	case t.Mode != ModePinned:
		return fmt.Errorf("%w: %q is %s; only a pinned entity type has a primary to set", ErrWrongMode, entityType, t.Mode)
	case region != p.region && p.regions[region] == nil:
		return fmt.Errorf("%w: region %q is unknown; the regions are %v", ErrInvalidRequest, region, p.regionNames())
	}
	payload, err := proto.Marshal(&streamdv1.PrimaryPin{Primary: region})
	if err != nil {
		return err
	}
	_, err = p.j.Append(ctx, &streamdv1.Event{EntityType: PinEntityType, EntityId: entityType, EventType: PinEventType, Payload: payload})
	if err != nil {
		return fmt.Errorf("topology: pinning %q to %q: %w", entityType, region, err)
	}
	p.log.Info("primary: pinned", "entity_type", entityType, "primary", region)
	return nil
}

// PrimaryOf describes an entity type's mode and primary.
func (p *Primary) PrimaryOf(entityType string) (TypeInfo, error) {
	t, ok := p.config.Lookup(entityType)
	if !ok {
		return TypeInfo{}, fmt.Errorf("%w: %q (the config lists %s)", ErrUnknownEntityType, entityType, p.typeNames())
	}
	info := TypeInfo{EntityType: t}
	if t.Mode != ModePinned {
		return info, nil
	}
	pin, err := p.pin(entityType)
	if err != nil {
		return TypeInfo{}, err
	}
	info.Primary, info.PinnedAtUnixNano, info.PinnedIn = pin.primary, pin.at, pin.in
	return info, nil
}

package topology

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/streamd/streamd/consumer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Interest replicates single entities on demand: while a region has
// interest in an entity (a user works with it there), the replication
// includes it, history first; after a period without interest the include
// expires at the source and the entity stops being replicated.
//
// It steers a replication whose filter is in include mode — for example a
// permanent `include type=auction-summary`, so summaries replicate always
// and full histories only on interest. (Without any include, everything is
// replicated anyway and Interest changes nothing.)
type Interest struct {
	c          *consumer.Consumer
	inactivity time.Duration
	now        func() time.Time

	mu    sync.Mutex
	until map[string]time.Time // entity id -> expiry of the include the source has
}

// NewInterest steers the replication c (from NewReplication). An entity
// stops being replicated inactivity after its last Touch. now is the clock
// (nil: time.Now); it must agree with the source's.
func NewInterest(c *consumer.Consumer, inactivity time.Duration, now func() time.Time) (*Interest, error) {
	if c == nil {
		return nil, errors.New("topology: NewInterest: nil replication")
	}
	if inactivity <= 0 {
		return nil, errors.New("topology: NewInterest: inactivity must be positive")
	}
	if now == nil {
		now = time.Now
	}
	return &Interest{c: c, inactivity: inactivity, now: now, until: map[string]time.Time{}}, nil
}

// Touch records interest in the entity id now. The first touch, and the
// first after the include expired, adds `include entity=ID replay=1` with
// an expiry one inactivity period away: the source replays the entity's
// history (the journal drops what the region holds already) before its new
// events. Later touches move the expiry forward, at most one filter update
// per half period. It also removes the includes that have expired.
func (i *Interest) Touch(ctx context.Context, entityID string) error {
	if entityID == "" {
		return errors.New("topology: Touch: entity id is empty")
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	now := i.now()
	until, known := i.until[entityID]
	active := known && now.Before(until)
	if active && until.Sub(now) > i.inactivity/2 {
		return nil // extended recently enough
	}
	include := &streamdv1.FilterCriterion{
		Action:            streamdv1.FilterAction_FILTER_ACTION_INCLUDE,
		Field:             streamdv1.FilterField_FILTER_FIELD_ENTITY_ID,
		Value:             entityID,
		ExpiresAtUnixNano: now.Add(i.inactivity).UnixNano(),
	}
	if !active {
		include.ReplayFromSeqNr = 1
	}
	var remove []*streamdv1.FilterCriterion
	for id, u := range i.until {
		if id != entityID && !now.Before(u) {
			remove = append(remove, &streamdv1.FilterCriterion{Action: include.Action, Field: include.Field, Value: id})
		}
	}
	if err := i.c.UpdateFilter(ctx, []*streamdv1.FilterCriterion{include}, remove); err != nil {
		return err
	}
	for _, r := range remove {
		delete(i.until, r.Value)
	}
	i.until[entityID] = now.Add(i.inactivity)
	return nil
}

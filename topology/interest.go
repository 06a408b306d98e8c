package topology

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/journal"
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
// replicated anyway and Interest changes nothing.) An include names an
// entity id, so it covers that id in every entity type the filter lets
// through.
type Interest struct {
	c          Steered
	inactivity time.Duration
	now        func() time.Time

	mu      sync.Mutex
	entries map[string]*interest // by entity id
}

// interest is what Interest knows of one entity id.
type interest struct {
	since time.Time // start of this period of interest; zero if it began before a restart
	until time.Time // expiry of the include the source has
	types []string  // entity types used, sorted
	// fetching is closed when the fetch of a new period's history ends;
	// nil when none is under way.
	fetching chan struct{}
}

// InterestEntry is an entity a region has interest in.
type InterestEntry struct {
	EntityID string
	// EntityTypes are the types it was used as (none if known only from a
	// filter stored before a restart).
	EntityTypes []string
	// Since is when this period of interest began (zero if before the
	// process started); Expires is when the include expires at the source.
	Since, Expires time.Time
}

// Steered is the replication an Interest steers: a *consumer.Consumer
// (from NewReplication), or what stands for the replications a pod of a
// group runs over its slices in turn, each with the filter stored for
// their one name.
type Steered interface {
	Filter() []*streamdv1.FilterCriterion
	UpdateFilter(ctx context.Context, add, remove []*streamdv1.FilterCriterion, opts ...consumer.FilterOption) error
}

// NewInterest steers the replication c (from NewReplication). An entity
// stops being replicated inactivity after its last use. now is the clock
// (nil: time.Now); it must agree with the source's. The includes of entity
// ids that c's filter holds (stored by an earlier process) count as
// interest until they expire.
func NewInterest(c Steered, inactivity time.Duration, now func() time.Time) (*Interest, error) {
	if c == nil {
		return nil, errors.New("topology: NewInterest: nil replication")
	}
	if inactivity <= 0 {
		return nil, errors.New("topology: NewInterest: inactivity must be positive")
	}
	if now == nil {
		now = time.Now
	}
	i := &Interest{c: c, inactivity: inactivity, now: now, entries: map[string]*interest{}}
	for _, f := range c.Filter() {
		if isEntityInclude(f) && f.GetExpiresAtUnixNano() > 0 {
			i.entries[f.GetValue()] = &interest{until: time.Unix(0, f.GetExpiresAtUnixNano())}
		}
	}
	return i, nil
}

func isEntityInclude(f *streamdv1.FilterCriterion) bool {
	return f.GetAction() == streamdv1.FilterAction_FILTER_ACTION_INCLUDE && f.GetField() == streamdv1.FilterField_FILTER_FIELD_ENTITY_ID
}

// Touch records interest in the entity id now. The first touch, and the
// first after the include expired, adds `include entity=ID replay=1` with
// an expiry one inactivity period away: the source replays the entity's
// history (the journal drops what the region holds already) before its new
// events. Later touches move the expiry forward (see Use).
func (i *Interest) Touch(ctx context.Context, entityID string) error {
	_, err := i.Use(ctx, "", entityID, 0, nil)
	return err
}

// Use records interest in (entityType, entityID) now, for inactivity (0:
// the Interest's period), and reports whether a new period of interest
// began.
//
// A new period adds `include entity=ID` with an expiry inactivity away and
// waits for the source to take it, so that every event of the entity the
// source commits from then on is sent. Then fetch, if not nil, copies the
// history the source holds already (FetchEntity), before Use returns. If
// fetch fails, or is nil, the include asks for a replay of the whole
// history instead, which the replication applies when the source sends it;
// fetch's error is returned.
//
// Within a period, a use moves the expiry to inactivity from now once it
// would move by more than a tenth of the period: the include expires at
// the source between 0.9 and 1 period after the last use, with at most ten
// filter updates per period. Use also removes the includes that expired.
// Filter updates are one at a time per Interest; fetches of different
// entities run at once, and a use of an entity whose fetch is under way
// waits for it.
func (i *Interest) Use(ctx context.Context, entityType, entityID string, inactivity time.Duration, fetch func(context.Context) error) (bool, error) {
	if entityID == "" {
		return false, errors.New("topology: Interest: entity id is empty")
	}
	if inactivity <= 0 {
		inactivity = i.inactivity
	}
	i.mu.Lock()
	now := i.now()
	e := i.entries[entityID]
	active := e != nil && now.Before(e.until)
	until := now.Add(inactivity)
	if active {
		i.addType(e, entityType)
		if fetching := e.fetching; fetching != nil {
			i.mu.Unlock()
			select {
			case <-fetching:
				return false, nil
			case <-ctx.Done():
				return false, fmt.Errorf("topology: waiting for the history of %s: %w", entityID, ctx.Err())
			}
		}
		if until.Sub(e.until) <= inactivity/10 {
			i.mu.Unlock()
			return false, nil // extended recently enough
		}
	}
	include := &streamdv1.FilterCriterion{
		Action:            streamdv1.FilterAction_FILTER_ACTION_INCLUDE,
		Field:             streamdv1.FilterField_FILTER_FIELD_ENTITY_ID,
		Value:             entityID,
		ExpiresAtUnixNano: until.UnixNano(),
	}
	if !active && fetch == nil {
		include.ReplayFromSeqNr = 1
	}
	var remove []*streamdv1.FilterCriterion
	for id, x := range i.entries {
		if id != entityID && !now.Before(x.until) {
			remove = append(remove, &streamdv1.FilterCriterion{Action: include.Action, Field: include.Field, Value: id})
		}
	}
	if err := i.c.UpdateFilter(ctx, []*streamdv1.FilterCriterion{include}, remove); err != nil {
		i.mu.Unlock()
		return false, err
	}
	for _, r := range remove {
		delete(i.entries, r.Value)
	}
	if active {
		e.until = until
		i.mu.Unlock()
		return false, nil
	}
	e = &interest{since: now, until: until}
	i.addType(e, entityType)
	i.entries[entityID] = e
	if fetch == nil {
		i.mu.Unlock()
		return true, nil
	}
	fetching := make(chan struct{})
	e.fetching = fetching
	i.mu.Unlock()
	defer func() {
		i.mu.Lock()
		e.fetching = nil
		i.mu.Unlock()
		close(fetching)
	}()
	if err := fetch(ctx); err != nil {
		include.ReplayFromSeqNr = 1
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), replayRequestTimeout)
		defer cancel()
		i.mu.Lock()
		rerr := i.c.UpdateFilter(rctx, []*streamdv1.FilterCriterion{include}, nil)
		i.mu.Unlock()
		if rerr != nil {
			err = errors.Join(err, rerr)
		}
		return true, fmt.Errorf("topology: history of %s not copied now (the replication asks the source for it): %w", entityID, err)
	}
	return true, nil
}

// replayRequestTimeout bounds the wait for the source to take the replay
// Use asks for after a failed fetch; unanswered, the filter is stored and
// the stream opens again with it.
const replayRequestTimeout = 5 * time.Second

func (i *Interest) addType(e *interest, entityType string) {
	if entityType == "" {
		return
	}
	if n, found := slices.BinarySearch(e.types, entityType); !found {
		e.types = slices.Insert(e.types, n, entityType)
	}
}

// Entries are the entities with interest now, by entity id.
func (i *Interest) Entries() []InterestEntry {
	i.mu.Lock()
	defer i.mu.Unlock()
	now := i.now()
	var out []InterestEntry
	for id, e := range i.entries {
		if now.Before(e.until) {
			out = append(out, InterestEntry{EntityID: id, EntityTypes: slices.Clone(e.types), Since: e.since, Expires: e.until})
		}
	}
	slices.SortFunc(out, func(a, b InterestEntry) int { return strings.Compare(a.EntityID, b.EntityID) })
	return out
}

// PullHeader is the gRPC metadata key FetchEntity sets on its calls, so
// that the source serves them without counting them as use there.
const PullHeader = "streamd-pull"

// FetchEntity copies the history of (entityType, entityID) that the region
// from holds (its EntityEvents over conn) into j, as a replication copies
// events: origins kept, events written in j's own region skipped, events j
// holds already dropped by the journal.
func FetchEntity(ctx context.Context, conn grpc.ClientConnInterface, from string, j *journal.Journal, entityType, entityID string) error {
	ctx = metadata.AppendToOutgoingContext(ctx, PullHeader, j.Region())
	st, err := streamdv1.NewEventStreamServiceClient(conn).EntityEvents(ctx, &streamdv1.EntityEventsRequest{EntityType: entityType, EntityId: entityID, FromSeqNr: 1})
	if err != nil {
		return fmt.Errorf("topology: history of %s/%s from %s: %w", entityType, entityID, from, err)
	}
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("topology: history of %s/%s from %s: %w", entityType, entityID, from, err)
		}
		var events []*streamdv1.Event
		for _, e := range resp.GetEvents() {
			if e.GetOrigin() == j.Region() {
				continue // written here
			}
			if e.GetOrigin() == "" {
				e.Origin, e.OriginSeqNr, e.OriginTimestampUnixNano = from, e.GetSeqNr(), e.GetTimestampUnixNano()
			}
			e.Offset, e.SeqNr, e.Slice, e.TimestampUnixNano = 0, 0, 0, 0
			events = append(events, e)
		}
		for len(events) > 0 {
			n, size := 0, 0
			for n < len(events) && n < maxAppendEvents && (n == 0 || size+proto.Size(events[n]) <= maxAppendBytes) {
				size += proto.Size(events[n])
				n++
			}
			if _, err := j.Append(ctx, events[:n]...); err != nil {
				return fmt.Errorf("topology: history of %s/%s from %s: %w", entityType, entityID, from, err)
			}
			events = events[n:]
		}
	}
}

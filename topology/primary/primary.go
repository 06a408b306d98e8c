package primary

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
)

// Primary writes and reads the single-writer entities of one region (see
// the package documentation for what it guarantees). Its methods are safe
// for concurrent use.
type Primary struct {
	j       *journal.Journal
	region  string
	config  Config
	regions map[string][]regionClient
	conns   []*grpc.ClientConn
	timeout time.Duration
	log     *slog.Logger
	rep     *topology.Replicated
	obs     Observer

	mu       sync.Mutex
	entities map[string]*list.Element // of *primaryEntity, most recently used first
	lru      *list.List
	max      int

	pinMu sync.Mutex // guards pins and fails
	pins  map[string]*pinState
	fails failoverState

	progressOf ProgressFunc
	pods       func() ([]streamdv1.PrimaryServiceClient, error)
}

// maxAppendEvents and maxAppendBytes bound one Append of events another
// region sent, inside the journal's default limits.
const (
	maxAppendEvents = 1000
	maxAppendBytes  = 2 << 20
)

// Options configure New.
type Options struct {
	// Journal is the local journal; its Region names this region. Required.
	Journal *journal.Journal
	// Config gives the entity types' modes. Types not in it are refused.
	Config Config
	// Regions are the other regions and the addresses of their
	// PrimaryService (streamd's gRPC address); every primary and home of
	// Config must be this region or one of them.
	Regions []topology.Region
	// DialOptions reach the other regions (TLS, tokens); default plaintext.
	DialOptions []grpc.DialOption
	// RegionDialOptions replace DialOptions for the regions they name.
	RegionDialOptions map[string][]grpc.DialOption
	// CallTimeout bounds each call to another region; default 5s.
	CallTimeout time.Duration
	// CachedEntities bounds how many entities' histories are kept in
	// memory; default 1024.
	CachedEntities int
	Logger         *slog.Logger
	// Observer receives forwards, takeovers and CRDT operations written;
	// may be nil. If it is a ConflictObserver, WatchConflicts tells it of
	// conflicts.
	Observer Observer
	// Progress reports how far this journal applied another region's
	// journals, for Failover's report; nil: unknown (reported as none).
	Progress ProgressFunc
	// Pods returns the PrimaryService of the other pods of this region
	// when its pods share the entities, each with its own journal; nil:
	// this journal is the region's only one. With it, Progress, Conflicts
	// and Failover's progress and failover point are the whole region's:
	// they ask every other pod for its own (ProgressRequest.pod,
	// ConflictsRequest.pod) and fail if one cannot be asked. A client that
	// is a fmt.Stringer names its pod in those errors.
	Pods func() ([]streamdv1.PrimaryServiceClient, error)
}

// ErrInvalidOptions is wrapped by every error of Options.Validate.
var ErrInvalidOptions = errors.New("primary: invalid options")

// Validate reports every nonsensical field, the errors joined; each wraps
// ErrInvalidOptions.
func (o Options) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...))
	}
	region := ""
	if o.Journal == nil {
		bad("Options.Journal is nil")
	} else if region = o.Journal.Region(); region == "" {
		bad("Options.Journal has no region (journal.Options.Region): Primary needs to know which region it writes as")
	}
	if o.CallTimeout < 0 {
		bad("Options.CallTimeout is %v; it must be 0 (default) or more", o.CallTimeout)
	}
	if o.CachedEntities < 0 {
		bad("Options.CachedEntities is %d; it must be 0 (default) or more", o.CachedEntities)
	}
	if err := o.Config.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("%w: Options.Config: %w", ErrInvalidOptions, err))
	}
	known := map[string]bool{region: region != ""}
	for i, r := range o.Regions {
		switch {
		case r.Name == "":
			bad("Options.Regions[%d] has no name", i)
		case known[r.Name]:
			bad("Options.Regions[%d]: region %q is this region or listed twice", i, r.Name)
		case len(r.Addrs) == 0:
			bad("Options.Regions[%d]: region %q has no addresses", i, r.Name)
		}
		if r.Name != "" {
			known[r.Name] = true
		}
	}
	for _, t := range o.Config.EntityTypes {
		if region != "" && t.SingleWriter() && t.FirstOwner() != "" && !known[t.FirstOwner()] {
			bad("entity type %q: region %q is neither this region (%q) nor in Options.Regions", t.Name, t.FirstOwner(), region)
		}
	}
	if d := o.Config.DefaultPrimary; region != "" && d != "" && !known[d] {
		bad("default_primary: region %q is neither this region (%q) nor in Options.Regions", d, region)
	}
	return errors.Join(errs...)
}

// New returns the single-writer API of this region.
func New(opts Options) (*Primary, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	p := &Primary{
		j: opts.Journal, region: opts.Journal.Region(), config: opts.Config, timeout: opts.CallTimeout, log: opts.Logger,
		regions:  map[string][]regionClient{},
		entities: map[string]*list.Element{}, lru: list.New(), max: opts.CachedEntities,
		pins: map[string]*pinState{}, progressOf: opts.Progress, pods: opts.Pods,
	}
	if p.timeout == 0 {
		p.timeout = 5 * time.Second
	}
	if p.max == 0 {
		p.max = 1024
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.obs = opts.Observer; p.obs == nil {
		p.obs = nopObserver{}
	}
	rep, err := topology.NewReplicated(p.j, topology.ReplicatedOptions{Region: p.region, CachedEntities: opts.CachedEntities})
	if err != nil {
		return nil, err
	}
	p.rep = rep
	// A region back from a partition is called again within a second.
	dial := []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
		MinConnectTimeout: p.timeout,
	})}
	for _, r := range opts.Regions {
		own, ok := opts.RegionDialOptions[r.Name]
		if !ok {
			own = opts.DialOptions
		}
		if len(own) == 0 {
			own = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		}
		for _, addr := range r.Addrs {
			cc, err := grpc.NewClient(addr, append(slices.Clip(dial), own...)...)
			if err != nil {
				p.Close()
				return nil, fmt.Errorf("topology: region %q at %s: %w", r.Name, addr, err)
			}
			p.conns = append(p.conns, cc)
			p.regions[r.Name] = append(p.regions[r.Name], regionClient{cc: cc, c: streamdv1.NewPrimaryServiceClient(cc)})
		}
	}
	return p, nil
}

// Close closes the connections to the other regions.
func (p *Primary) Close() error {
	var errs []error
	for _, cc := range p.conns {
		errs = append(errs, cc.Close())
	}
	p.conns = nil
	return errors.Join(errs...)
}

// Region is this region's name.
func (p *Primary) Region() string { return p.region }

var (
	// ErrUnavailable: a region that had to be asked (the entity's owner, or
	// the pinned primary) could not be reached. See *UnavailableError.
	ErrUnavailable = errors.New("topology: region unavailable")
	// ErrVersionConflict: the write expected a version that is no longer the
	// entity's last.
	ErrVersionConflict = errors.New("topology: version conflict")
	// ErrInvalidRequest wraps every refusal of bad input.
	ErrInvalidRequest = errors.New("topology: invalid request")
)

// UnavailableError names the region that could not be reached.
type UnavailableError struct {
	Region string
	// Why: what this region needed from it.
	Why string
	Err error
	// Override is the operator's way to write without that region, should
	// it be gone; "" when there is none to offer.
	Override string
}

func (e *UnavailableError) Error() string {
	msg := fmt.Sprintf("topology: region %q is unavailable (%s): %v", e.Region, e.Why, e.Err)
	if e.Override != "" {
		msg += "; if it is gone: " + e.Override
	}
	return msg
}

// Is makes errors.Is(err, ErrUnavailable) true.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

func (e *UnavailableError) Unwrap() error { return e.Err }

type regionClient struct {
	cc *grpc.ClientConn
	c  streamdv1.PrimaryServiceClient
}

// Written is where a write landed.
type Written struct {
	// Region is the region whose journal holds the events (the owner).
	Region string
	// Versions of the events in the entity's history, and their Offsets and
	// SeqNrs in Region's journal.
	Versions, Offsets, SeqNrs []uint64
}

// AnyVersion as the expected version of Write skips the check.
const AnyVersion = ^uint64(0)

// maxForwardHops bounds how often a write is forwarded while regions
// disagree on a pin; maxRounds bounds the remote calls of one takeover or
// strong read that bring no events; maxSeqNrRetries the appends that lose
// the entity's next seqNr.
const (
	maxForwardHops  = 3
	maxRounds       = 16
	maxSeqNrRetries = 100
)

// Write appends events to a single-writer entity, as one journal append at
// the entity's owner, and returns their versions. expected is the version
// the caller decided on (History.Version of a read), or AnyVersion: the
// write fails with ErrVersionConflict if an event other than a handover was
// written after it. The events carry what the caller sets (event type,
// payload, tags, topic, metadata); Write sets the entity, origin and
// version vector.
func (p *Primary) Write(ctx context.Context, entityType, entityID string, expected uint64, events ...*streamdv1.Event) (Written, error) {
	return p.write(ctx, entityType, entityID, expected, events, 0)
}

func (p *Primary) write(ctx context.Context, entityType, entityID string, expected uint64, events []*streamdv1.Event, hops uint32) (Written, error) {
	t, err := p.singleWriter(entityType, entityID)
	if err != nil {
		return Written{}, err
	}
	if len(events) == 0 {
		return Written{}, fmt.Errorf("%w: a write to %s/%s has no events", ErrInvalidRequest, entityType, entityID)
	}
	for i, ev := range events {
		switch {
		case ev == nil:
			return Written{}, fmt.Errorf("%w: event %d is nil", ErrInvalidRequest, i)
		case (ev.EntityType != "" && ev.EntityType != entityType) || (ev.EntityId != "" && ev.EntityId != entityID):
			return Written{}, fmt.Errorf("%w: event %d is of entity %s/%s, the write of %s/%s", ErrInvalidRequest, i, ev.EntityType, ev.EntityId, entityType, entityID)
		case ev.SeqNr != 0 || ev.Offset != 0 || ev.Origin != "" || ev.OriginSeqNr != 0 || len(ev.VersionVector) > 0:
			return Written{}, fmt.Errorf("%w: event %d sets seq_nr, offset, origin or version_vector; the owner sets them", ErrInvalidRequest, i)
		case ev.EventType == HandoverEventType:
			return Written{}, fmt.Errorf("%w: event %d: event type %q is reserved for handovers", ErrInvalidRequest, i, HandoverEventType)
		}
	}
	if t.Mode == ModePinned {
		pin, err := p.pin(entityType)
		if err != nil {
			return Written{}, err
		}
		if pin.primary != p.region {
			if hops >= maxForwardHops {
				return Written{}, &UnavailableError{Region: pin.primary, Why: "forwarding the write", Err: fmt.Errorf("forwarded %d times: the regions disagree on the pinned primary of %q; try again once the pin has replicated", hops, entityType)}
			}
			p.obs.Forwarded(entityType)
			w, err := p.forward(ctx, pin.primary, &streamdv1.WriteRequest{
				EntityType: entityType, EntityId: entityID, ExpectedVersion: expectedField(expected), Events: events, Hops: hops + 1,
			})
			return w, p.withOverride(err, t, entityID)
		}
	}
	e := p.entity(t, entityID)
	var w Written
	err = p.asOwner(ctx, e, false, func() error {
		if expected != AnyVersion && (expected < e.lastData || expected > uint64(len(e.chain))) {
			return fmt.Errorf("%w: %s/%s: the write expected version %d; the last written is %d", ErrVersionConflict, entityType, entityID, expected, e.lastData)
		}
		batch := make([]*streamdv1.Event, len(events))
		vv := maps.Clone(e.tip())
		if vv == nil {
			vv = map[string]uint64{}
		}
		for i, ev := range events {
			vv[p.region]++
			c := proto.CloneOf(ev)
			c.EntityType, c.EntityId, c.SeqNr, c.VersionVector = entityType, entityID, e.lastSeqNr+uint64(i)+1, maps.Clone(vv)
			batch[i] = c
		}
		appended, err := p.j.Append(ctx, batch...)
		if err != nil {
			return err
		}
		w = Written{Region: p.region}
		for i, a := range appended {
			w.Versions = append(w.Versions, uint64(len(e.chain)+i+1))
			w.Offsets = append(w.Offsets, a.Offset)
			w.SeqNrs = append(w.SeqNrs, a.SeqNr)
		}
		return nil
	})
	return w, p.withOverride(err, t, entityID)
}

// withOverride adds to an UnavailableError the operator's commands that
// write the entity without the unreachable region.
func (p *Primary) withOverride(err error, t EntityType, entityID string) error {
	var ue *UnavailableError
	if !errors.As(err, &ue) || ue.Override != "" {
		return err
	}
	single := fmt.Sprintf("streamctl primary takeover --force --type %s --entity %s (forks the history if %s is alive and writes)", t.Name, entityID, ue.Region)
	if t.Mode == ModePinned {
		single = fmt.Sprintf("streamctl primary set --type %s --region %s, then %s", t.Name, p.region, single)
	}
	ue.Override = fmt.Sprintf("against region %s run streamctl primary failover --from %s --to %s (a dry run; --execute moves all %s had), or for this entity alone %s",
		p.region, ue.Region, p.region, ue.Region, single)
	return err
}

func expectedField(expected uint64) *uint64 {
	if expected == AnyVersion {
		return nil
	}
	return &expected
}

// Takeover makes this region the owner of the entity, as a write here would,
// and returns its version. With force it appends a handover to itself
// without asking the owner: see Primary on the fork this risks.
func (p *Primary) Takeover(ctx context.Context, entityType, entityID string, force bool) (uint64, error) {
	t, err := p.singleWriter(entityType, entityID)
	if err != nil {
		return 0, err
	}
	e := p.entity(t, entityID)
	var version uint64
	err = p.asOwner(ctx, e, force, func() error {
		version = uint64(len(e.chain))
		return nil
	})
	return version, err
}

// asOwner runs fn under e.mu once this region owns e, taking e over first.
func (p *Primary) asOwner(ctx context.Context, e *primaryEntity, force bool, fn func() error) error {
	e.write.Lock()
	defer e.write.Unlock()
	peerHeld := map[string]map[string]uint64{} // per region asked, what it said it holds
	conflicts, round := 0, 0                   // round: calls that brought no events
	tookOver := false
	for {
		e.mu.Lock()
		if err := p.fold(e); err != nil {
			e.mu.Unlock()
			return err
		}
		if e.effective == p.region && e.claim {
			// A failover made this region the owner: a forced handover
			// fixes where the old owner's events end.
			err := p.appendHandover(ctx, e, p.region, true)
			e.mu.Unlock()
			if err != nil {
				return err
			}
			tookOver = true
			continue
		}
		if e.effective == p.region {
			if tookOver {
				p.obs.TookOver(e.entityType)
				tookOver = false
			}
			visible := p.j.LastOffset()
			err := fn()
			e.mu.Unlock()
			var conflict *journal.SeqNrConflictError
			if !errors.As(err, &conflict) {
				return err
			}
			// A concurrent append to the entity (a handover granted here, a
			// late copy) took the seqNr: wait for it to be readable, fold it.
			if conflicts++; conflicts > maxSeqNrRetries {
				return fmt.Errorf("topology: %s/%s: %d appends in a row lost the seqNr to concurrent appends: %w", e.entityType, e.entityID, conflicts, err)
			}
			if _, err := p.j.NewCursor(visible+1).Wait(ctx, 1, nil); err != nil {
				return fmt.Errorf("topology: %s/%s: %w", e.entityType, e.entityID, err)
			}
			continue
		}
		tookOver = true
		if force {
			old := e.owner
			err := p.appendHandover(ctx, e, p.region, true)
			e.mu.Unlock()
			if err != nil {
				return err
			}
			p.log.Warn("primary: forced takeover; if the old owner is alive and writes, the history forks and its events from the fork on are lost",
				"entity_type", e.entityType, "entity_id", e.entityID, "old_owner", old)
			force = false
			continue
		}
		owner := e.effective
		if round >= maxRounds {
			e.mu.Unlock()
			return &UnavailableError{Region: owner, Why: "taking the entity over", Err: fmt.Errorf("ownership of %s/%s moved %d times during the write; try again", e.entityType, e.entityID, round)}
		}
		req := &streamdv1.SyncRequest{EntityType: e.entityType, EntityId: e.entityID, HandoverTo: p.region, Held: maps.Clone(e.held)}
		resp, err := p.exchange(ctx, e, owner, req, peerHeld, "taking the entity over")
		if err != nil {
			return err
		}
		if len(resp.Events) == 0 {
			round++
		}
	}
}

// exchange is one Sync with owner, for a handover (req.HandoverTo) or a
// strong read: req goes with the events owner lacks as its last answer
// said (peerHeld: the owner is behind what it granted), the answer's
// events are stored, and what owner holds is noted in peerHeld. The caller
// holds e.mu, which exchange releases.
func (p *Primary) exchange(ctx context.Context, e *primaryEntity, owner string, req *streamdv1.SyncRequest, peerHeld map[string]map[string]uint64, why string) (*streamdv1.SyncResponse, error) {
	if h, ok := peerHeld[owner]; ok {
		req.Events, _ = e.missing(h, maxAppendEvents, maxAppendBytes)
	}
	e.mu.Unlock()
	resp, err := p.sync(ctx, owner, req, why)
	if err != nil {
		return nil, err
	}
	peerHeld[owner] = resp.Held
	return resp, p.store(ctx, e, resp.Events)
}

// appendHandover appends a handover of e to region. Callers hold e.mu
// after a fold.
func (p *Primary) appendHandover(ctx context.Context, e *primaryEntity, to string, forced bool) error {
	payload, err := proto.Marshal(&streamdv1.Handover{To: to, Forced: forced})
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		visible := p.j.LastOffset()
		_, err = p.j.Append(ctx, &streamdv1.Event{
			EntityType: e.entityType, EntityId: e.entityID, SeqNr: e.lastSeqNr + 1,
			EventType: HandoverEventType, Payload: payload, VersionVector: e.nextVector(p.region),
		})
		var conflict *journal.SeqNrConflictError
		if !errors.As(err, &conflict) || attempt >= maxSeqNrRetries {
			if err != nil {
				return fmt.Errorf("topology: %s/%s: handover to %s: %w", e.entityType, e.entityID, to, err)
			}
			return p.fold(e)
		}
		if _, err := p.j.NewCursor(visible+1).Wait(ctx, 1, nil); err != nil {
			return err
		}
		if err := p.fold(e); err != nil {
			return err
		}
		if (e.effective == p.region && !e.claim) == forced {
			return nil // a concurrent append (a handover) made it moot
		}
	}
}

// store appends events another region sent (keeping their origins, as
// replication does; the journal drops the ones it holds) and folds them.
func (p *Primary) store(ctx context.Context, e *primaryEntity, events []*streamdv1.Event) error {
	for len(events) > 0 {
		n := min(len(events), maxAppendEvents)
		chunk := events[:n]
		for _, ev := range chunk {
			if ev.EntityType != e.entityType || ev.EntityId != e.entityID || ev.Origin == "" || ev.OriginSeqNr == 0 {
				return fmt.Errorf("topology: %s/%s: a region sent an event of %s/%s from origin %q seqNr %d", e.entityType, e.entityID, ev.EntityType, ev.EntityId, ev.Origin, ev.OriginSeqNr)
			}
			ev.Offset, ev.SeqNr, ev.Slice, ev.TimestampUnixNano = 0, 0, 0, 0
		}
		if _, err := p.j.Append(ctx, chunk...); err != nil {
			return fmt.Errorf("topology: %s/%s: storing events from another region: %w", e.entityType, e.entityID, err)
		}
		events = events[n:]
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return p.fold(e)
}

// Read returns the entity's history as this region's journal holds it:
// eventually consistent, always a prefix of the one history.
func (p *Primary) Read(ctx context.Context, entityType, entityID string) (History, error) {
	t, err := p.singleWriter(entityType, entityID)
	if err != nil {
		return History{}, err
	}
	e := p.entity(t, entityID)
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := p.fold(e); err != nil {
		return History{}, err
	}
	return e.history(AnyVersion), nil
}

// ReadStrong returns the entity's history as its owner has it at some moment
// between the call and its return (linearizable): here if this region owns
// the entity, else from the owner, following handovers. The events received
// are appended to the local journal.
func (p *Primary) ReadStrong(ctx context.Context, entityType, entityID string) (History, error) {
	t, err := p.singleWriter(entityType, entityID)
	if err != nil {
		return History{}, err
	}
	e := p.entity(t, entityID)
	peerHeld := map[string]map[string]uint64{}
	for round := 0; ; {
		e.mu.Lock()
		if err := p.fold(e); err != nil {
			e.mu.Unlock()
			return History{}, err
		}
		if e.effective == p.region {
			h := e.history(AnyVersion)
			e.mu.Unlock()
			return h, nil
		}
		owner := e.effective
		if round >= maxRounds {
			e.mu.Unlock()
			return History{}, &UnavailableError{Region: owner, Why: "reading from the owner", Err: fmt.Errorf("ownership of %s/%s moved %d times during the read; try again", entityType, entityID, round)}
		}
		req := &streamdv1.SyncRequest{EntityType: e.entityType, EntityId: e.entityID, Held: maps.Clone(e.held)}
		resp, err := p.exchange(ctx, e, owner, req, peerHeld, "reading from the owner")
		if err != nil {
			return History{}, err
		}
		if len(resp.Events) == 0 {
			round++
		}
		if resp.Owner == owner && !resp.More {
			e.mu.Lock()
			h := e.history(resp.Version)
			e.mu.Unlock()
			if h.Version < resp.Version {
				return History{}, fmt.Errorf("topology: %s/%s: owner %s has version %d, this region folds only %d from its events (a fork?)", entityType, entityID, owner, resp.Version, h.Version)
			}
			return h, nil
		}
	}
}

// serveSync answers a SyncRequest: stores the caller's events, hands the
// entity over if asked and owned here, and sends what the caller lacks.
func (p *Primary) serveSync(ctx context.Context, req *streamdv1.SyncRequest) (*streamdv1.SyncResponse, error) {
	t, err := p.singleWriter(req.EntityType, req.EntityId)
	if err != nil {
		return nil, err
	}
	if to := req.HandoverTo; to != "" && (to == p.region || p.regions[to] == nil) {
		return nil, fmt.Errorf("%w: handover of %s/%s to %q: region %q does not know it (it is not among %v), so it could neither read its writes nor take the entity back; configure %q as a region (a replication source) of %q",
			ErrInvalidRequest, req.EntityType, req.EntityId, to, p.region, p.regionNames(), to, p.region)
	}
	e := p.entity(t, req.EntityId)
	if err := p.store(ctx, e, req.Events); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := p.fold(e); err != nil {
		return nil, err
	}
	if req.HandoverTo != "" && e.effective == p.region {
		if e.claim { // a failover made this region the owner
			if err := p.appendHandover(ctx, e, p.region, true); err != nil {
				return nil, err
			}
		}
		if err := p.appendHandover(ctx, e, req.HandoverTo, false); err != nil {
			return nil, err
		}
		p.log.Debug("primary: handed over", "entity_type", e.entityType, "entity_id", e.entityID, "to", req.HandoverTo, "version", len(e.chain))
	}
	events, more := e.missing(req.Held, maxAppendEvents, maxAppendBytes)
	return &streamdv1.SyncResponse{Owner: e.effective, Version: uint64(len(e.chain)), Held: maps.Clone(e.held), Events: events, More: more}, nil
}

// sync calls region's Sync, trying its addresses in turn.
func (p *Primary) sync(ctx context.Context, region string, req *streamdv1.SyncRequest, why string) (*streamdv1.SyncResponse, error) {
	var resp *streamdv1.SyncResponse
	err := p.call(ctx, region, why, func(ctx context.Context, c streamdv1.PrimaryServiceClient) (err error) {
		resp, err = c.Sync(ctx, req)
		return err
	})
	return resp, err
}

// forward sends a write to the pinned primary.
func (p *Primary) forward(ctx context.Context, region string, req *streamdv1.WriteRequest) (Written, error) {
	var resp *streamdv1.WriteResponse
	err := p.call(ctx, region, "the pinned primary, forwarding the write", func(ctx context.Context, c streamdv1.PrimaryServiceClient) (err error) {
		resp, err = c.Write(ctx, req)
		return err
	})
	if err != nil {
		return Written{}, err
	}
	return Written{Region: resp.Region, Versions: resp.Versions, Offsets: resp.Offsets, SeqNrs: resp.SeqNrs}, nil
}

// call runs fn against region's addresses in turn, each within the call
// timeout, and turns the remote error into this package's.
func (p *Primary) call(ctx context.Context, region, why string, fn func(context.Context, streamdv1.PrimaryServiceClient) error) error {
	clients := p.regions[region]
	if len(clients) == 0 {
		return &UnavailableError{Region: region, Why: why, Err: errors.New("no address is configured for it")}
	}
	var err error
	for _, c := range clients {
		if c.cc.GetState() == connectivity.TransientFailure {
			// The region was away; it may be back: connect again rather
			// than fail on the connection's last error. (Never a retry: a
			// call that failed may have been applied.)
			c.cc.ResetConnectBackoff()
			p.reconnected(ctx, c.cc)
		}
		cctx, cancel := context.WithTimeout(ctx, p.timeout)
		err = fn(cctx, c.c)
		cancel()
		if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
			break
		}
		c.cc.ResetConnectBackoff() // the next call connects at once
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("topology: region %q (%s): %w", region, why, ctx.Err())
	}
	switch s, _ := status.FromError(err); s.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return &UnavailableError{Region: region, Why: why, Err: errors.New(s.Message())}
	case codes.Aborted:
		return fmt.Errorf("%w: at region %q: %s", ErrVersionConflict, region, s.Message())
	case codes.InvalidArgument:
		return fmt.Errorf("%w: at region %q: %s", ErrInvalidRequest, region, s.Message())
	}
	return fmt.Errorf("topology: region %q (%s): %w", region, why, err)
}

// reconnectWait bounds how long a call waits for a connection that failed
// to come back before it gives up on the address.
const reconnectWait = time.Second

// reconnected waits until cc, whose backoff was just reset, is connected,
// for up to reconnectWait (and the call timeout), and reports whether it is.
func (p *Primary) reconnected(ctx context.Context, cc *grpc.ClientConn) bool {
	ctx, cancel := context.WithTimeout(ctx, min(reconnectWait, p.timeout))
	defer cancel()
	cc.Connect()
	for {
		s := cc.GetState()
		if s == connectivity.Ready {
			return true
		}
		if !cc.WaitForStateChange(ctx, s) {
			return false
		}
	}
}

// singleWriter returns the config of a single-writer entity type.
func (p *Primary) singleWriter(entityType, entityID string) (EntityType, error) {
	if entityType == "" || entityID == "" {
		return EntityType{}, fmt.Errorf("%w: entity type %q and id %q: both are required", ErrInvalidRequest, entityType, entityID)
	}
	t, ok := p.config.Lookup(entityType)
	if !ok {
		return EntityType{}, fmt.Errorf("%w: %q (the config lists %s)", ErrUnknownEntityType, entityType, p.typeNames())
	}
	switch t.Mode {
	case ModeReplicated:
		return EntityType{}, fmt.Errorf("%w: %q is replicated (every region writes it: publish CRDT ops); Primary writes only pinned and request-region types", ErrWrongMode, entityType)
	case ModeLocal:
		return EntityType{}, fmt.Errorf("%w: %q is local (every region appends its own events: publish them); Primary writes only pinned and request-region types", ErrWrongMode, entityType)
	}
	return t, nil
}

func (p *Primary) typeNames() string {
	var names []string
	for _, t := range p.config.EntityTypes {
		names = append(names, t.Name)
	}
	if len(names) == 0 {
		return "none"
	}
	return fmt.Sprint(names)
}

// entity returns the cached state of an entity, making it the most recently
// used. An entry evicted while in use is harmless: the journal's seqNr
// expectations keep two of them from both writing.
func (p *Primary) entity(t EntityType, entityID string) *primaryEntity {
	key := journal.EntityKey(t.Name, entityID)
	p.mu.Lock()
	defer p.mu.Unlock()
	if el, ok := p.entities[key]; ok {
		p.lru.MoveToFront(el)
		return el.Value.(*primaryEntity)
	}
	e := newPrimaryEntity(t.Name, entityID, t.FirstOwner())
	p.entities[key] = p.lru.PushFront(e)
	for p.lru.Len() > p.max {
		old := p.lru.Remove(p.lru.Back()).(*primaryEntity)
		delete(p.entities, journal.EntityKey(old.entityType, old.entityID))
	}
	return e
}

// fold folds e with the failover records of the local journal. Callers
// hold e.mu.
func (p *Primary) fold(e *primaryEntity) error {
	fs, err := p.failovers()
	if err != nil {
		return err
	}
	e.setFailovers(fs)
	return e.fold(p.j)
}

// regionNames lists this region and the others, sorted.
func (p *Primary) regionNames() []string {
	names := slices.Collect(maps.Keys(p.regions))
	names = append(names, p.region)
	slices.Sort(names)
	return names
}

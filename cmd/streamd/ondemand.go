package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
)

// On-demand replication: the events of an entity type with
// `replication: on-demand` reach a region only while it has interest in the
// entity (a Publish, LoadEvent, EntityEvents or State of it there), and
// those of its summary_types always. Each other region of the project then
// has two replications into this one: region-<name>, which excludes the
// on-demand and summary types, and on-demand-<name>, in include mode, with
// `include type=` each summary type and `include entity=ID` with an expiry
// per entity of interest (topology.Interest).

// defaultInactivity is how long an entity of an on-demand type keeps being
// replicated into a region after its last use there, unless inactivity:
// says otherwise.
const defaultInactivity = 10 * time.Minute

// fetchTimeout bounds the copy of an entity's history from one region
// before the call that needed it is answered; a region that has not
// answered by then sends it through the replication.
const fetchTimeout = 5 * time.Second

// onDemandType is an entity type replicated on demand.
type onDemandType struct {
	name       string
	summaries  []string
	inactivity time.Duration
}

// onDemandReplication is the name of the on-demand replication from a
// region of the project.
func onDemandReplication(region string) string { return "on-demand-" + region }

// parseOnDemand reads the replication settings of entity_types; errors
// name the entry.
func parseOnDemand(types []entityTypeConfig, project bool) ([]onDemandType, error) {
	onDemand := map[string]bool{}
	for _, t := range types {
		if t.Replication == "on-demand" {
			onDemand[t.Name] = true
		}
	}
	var out []onDemandType
	for i, t := range types {
		at := fmt.Sprintf("entity_types[%d] (%q)", i, t.Name)
		switch t.Replication {
		case "", "always":
			if len(t.SummaryTypes) > 0 || t.Inactivity != 0 {
				return nil, fmt.Errorf("%s: summary_types and inactivity belong to replication: on-demand", at)
			}
			continue
		case "on-demand":
		default:
			return nil, fmt.Errorf("%s: replication %q: want always (the default) or on-demand", at, t.Replication)
		}
		if !project {
			return nil, fmt.Errorf("%s: replication: on-demand is between the project's regions: list them in regions", at)
		}
		if t.Inactivity < 0 {
			return nil, fmt.Errorf("%s: inactivity %v: want a positive duration (default %v)", at, t.Inactivity, defaultInactivity)
		}
		od := onDemandType{name: t.Name, inactivity: t.Inactivity}
		if od.inactivity == 0 {
			od.inactivity = defaultInactivity
		}
		for j, s := range t.SummaryTypes {
			switch {
			case s == "":
				return nil, fmt.Errorf("%s: summary_types[%d] is empty", at, j)
			case onDemand[s]:
				return nil, fmt.Errorf("%s: summary_types[%d] %q is replicated on demand itself: a summary type is replicated always", at, j, s)
			}
			od.summaries = append(od.summaries, s)
		}
		out = append(out, od)
	}
	return out, nil
}

// onDemandSplit is the replication r from another region of the project
// into region, split when there are on-demand types: r without them and
// their summaries, and the on-demand replication with the summaries and the
// entities of interest.
func onDemandSplit(r topology.ReplicationOptions, region string, types []onDemandType) []topology.ReplicationOptions {
	if len(types) == 0 {
		return []topology.ReplicationOptions{r}
	}
	crit := func(action streamdv1.FilterAction, field streamdv1.FilterField, value string) *streamdv1.FilterCriterion {
		return &streamdv1.FilterCriterion{Action: action, Field: field, Value: value}
	}
	const (
		include, exclude = streamdv1.FilterAction_FILTER_ACTION_INCLUDE, streamdv1.FilterAction_FILTER_ACTION_EXCLUDE
		byType, byOrigin = streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE, streamdv1.FilterField_FILTER_FIELD_ORIGIN
	)
	od := r
	od.Name = onDemandReplication(r.From.Name)
	od.Streams = 1 // summaries and the entities of interest: streams: N is for the bulk
	// The replication excludes this region's own events, so this include
	// matches nothing: it keeps the filter in include mode while no
	// summary type or entity is included.
	od.Filter = []*streamdv1.FilterCriterion{crit(include, byOrigin, region)}
	r.Filter = slices.Clone(r.Filter)
	for _, t := range types {
		r.Filter = append(r.Filter, crit(exclude, byType, t.name))
		for _, s := range t.summaries {
			r.Filter = append(r.Filter, crit(exclude, byType, s))
			od.Filter = append(od.Filter, crit(include, byType, s))
		}
	}
	return []topology.ReplicationOptions{r, od}
}

// onDemand registers this region's interest in the entities of on-demand
// types it reads and writes, with every other region of the project.
type onDemand struct {
	log     *slog.Logger
	j       *journal.Journal
	types   map[string]onDemandType
	sources []*interestSource
	fetches *prometheus.CounterVec
	// serves, in a group of pods sharing the entities, reports whether
	// this pod writes an entity: the pod that does registers the interest
	// (a call of another pod's entity is forwarded there). nil: all.
	serves func(entityID string) bool
}

// interestSource is another region: the on-demand replication from it and
// a connection to each of its addresses, for histories.
type interestSource struct {
	region   string
	interest *topology.Interest
	conns    []*grpc.ClientConn
}

// newOnDemand returns the interest registry of the on-demand types, or nil
// without any; start gives it the replications.
func newOnDemand(log *slog.Logger, types []onDemandType, j *journal.Journal, reg prometheus.Registerer) *onDemand {
	if len(types) == 0 {
		return nil
	}
	od := &onDemand{log: log, j: j, types: map[string]onDemandType{},
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamd_interest_history_fetches_total",
			Help: "Histories of entities of on-demand types copied from a region when this region's interest in them began, by region and result (ok, or error: the replication then asks for the history)."},
			[]string{"region", "result"})}
	for _, t := range types {
		od.types[t.name] = t
	}
	reg.MustRegister(od.fetches, interestCollector{od})
	return od
}

// start steers the on-demand replications among repls (their consumers by
// name in cs), before the server serves.
func (od *onDemand) start(repls []topology.ReplicationOptions, cs *consumers) error {
	for _, r := range repls {
		if !strings.HasPrefix(r.Name, onDemandReplication("")) {
			continue
		}
		c := cs.byName[r.Name]
		if c == nil {
			return fmt.Errorf("on-demand replication %q is not running", r.Name)
		}
		if err := settleSummaries(c, r.Filter); err != nil {
			od.log.Warn("on-demand: the summary types of the config are not yet in the replication's filter; they are when its stream opens again",
				"replication", r.Name, "err", err)
		}
		// The period of each type is given at every use.
		interest, err := topology.NewInterest(c, defaultInactivity, nil)
		if err != nil {
			return err
		}
		src := &interestSource{region: r.From.Name, interest: interest}
		od.sources = append(od.sources, src)
		for _, addr := range r.From.Addrs {
			conn, err := grpc.NewClient(addr, r.DialOptions...)
			if err != nil {
				return fmt.Errorf("regions: %s address %q: %w", r.From.Name, addr, err)
			}
			src.conns = append(src.conns, conn)
		}
	}
	return nil
}

// steered is an on-demand replication the entity group runs over the
// slices this pod writes, as an Interest steers it: the replication that
// runs now, else the last one (their filter is stored under their one
// name, and each new one starts from it).
type steered struct {
	mu sync.Mutex
	c  *consumer.Consumer
}

// made makes the replication that runs next and steers it; s may be nil
// (newReplication alone). A filter update waits for it, so that none
// falls between the new replication reading the stored filter and
// becoming the one steered.
func (s *steered) made(newReplication func() (*consumer.Consumer, error)) (*consumer.Consumer, error) {
	if s == nil {
		return newReplication()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := newReplication()
	if err == nil {
		s.c = c
	}
	return c, err
}

func (s *steered) Filter() []*streamdv1.FilterCriterion {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.Filter()
}

func (s *steered) UpdateFilter(ctx context.Context, add, remove []*streamdv1.FilterCriterion, opts ...consumer.FilterOption) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.c.UpdateFilter(ctx, add, remove, opts...)
}

// settleSummaries makes the stored filter of an on-demand replication
// (which outlives the process) include exactly the summary types of the
// config, base, and keeps its includes of entities.
func settleSummaries(c topology.Steered, base []*streamdv1.FilterCriterion) error {
	same := func(a, b *streamdv1.FilterCriterion) bool {
		return a.GetAction() == b.GetAction() && a.GetField() == b.GetField() && a.GetValue() == b.GetValue()
	}
	current := c.Filter()
	var remove []*streamdv1.FilterCriterion
	for _, f := range current {
		if f.GetField() != streamdv1.FilterField_FILTER_FIELD_ENTITY_ID && !slices.ContainsFunc(base, func(b *streamdv1.FilterCriterion) bool { return same(b, f) }) {
			remove = append(remove, f)
		}
	}
	missing := slices.ContainsFunc(base, func(b *streamdv1.FilterCriterion) bool {
		return !slices.ContainsFunc(current, func(f *streamdv1.FilterCriterion) bool { return same(b, f) })
	})
	if len(remove) == 0 && !missing {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	return c.UpdateFilter(ctx, base, remove)
}

// close closes the connections start opened; od may be nil.
func (od *onDemand) close() {
	if od == nil {
		return
	}
	for _, s := range od.sources {
		for _, c := range s.conns {
			c.Close()
		}
	}
}

// use registers interest in (entityType, entityID), if its type is on
// demand, with every other region at once; when the interest is new, the
// entity's history is copied from each before use returns. A region that
// cannot be reached is logged and counted: its part of the history follows
// through the replication once it can be.
func (od *onDemand) use(ctx context.Context, entityType, entityID string) {
	t, ok := od.types[entityType]
	if !ok || entityID == "" || (od.serves != nil && !od.serves(entityID)) {
		return
	}
	var wg sync.WaitGroup
	for _, src := range od.sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fetch := func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
				defer cancel()
				var errs []error
				for _, conn := range src.conns {
					errs = append(errs, topology.FetchEntity(ctx, conn, src.region, od.j, entityType, entityID))
				}
				return errors.Join(errs...)
			}
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
			defer cancel()
			began, err := src.interest.Use(ctx, entityType, entityID, t.inactivity, fetch)
			if began {
				result := "ok"
				if err != nil {
					result = "error"
				}
				od.fetches.WithLabelValues(src.region, result).Inc()
			}
			if err != nil {
				od.log.Warn("on-demand: interest not registered in full; the entity's events follow through the replication once the region answers",
					"region", src.region, "entity_type", entityType, "entity_id", entityID, "err", err)
			}
		}()
	}
	wg.Wait()
}

// onDemandUse are the calls that use an entity: reads and writes by
// clients of this region.
var onDemandUse = map[string]bool{
	streamdv1.EventStreamService_Publish_FullMethodName:       true,
	streamdv1.EventStreamService_PublishStream_FullMethodName: true,
	streamdv1.EventStreamService_LoadEvent_FullMethodName:     true,
	streamdv1.EventStreamService_EntityEvents_FullMethodName:  true,
	streamdv1.PrimaryService_State_FullMethodName:             true,
}

// pulled reports whether a call is another region copying a history
// (topology.FetchEntity): not a use here.
func pulled(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(topology.PullHeader)) > 0
}

// usesOf registers interest in the entities a request names, before it is
// served.
func (od *onDemand) usesOf(ctx context.Context, req any) {
	switch r := req.(type) {
	case interface{ GetEvents() []*streamdv1.Event }:
		seen := map[[2]string]bool{}
		for _, e := range r.GetEvents() {
			k := [2]string{e.GetEntityType(), e.GetEntityId()}
			if !seen[k] {
				seen[k] = true
				od.use(ctx, k[0], k[1])
			}
		}
	case interface {
		GetEntityType() string
		GetEntityId() string
	}:
		od.use(ctx, r.GetEntityType(), r.GetEntityId())
	}
}

// serverOptions register interest before the calls that use an entity are
// served; they run after authentication.
func (od *onDemand) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if onDemandUse[info.FullMethod] && !pulled(ctx) {
				od.usesOf(ctx, req)
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if onDemandUse[info.FullMethod] && !pulled(ss.Context()) {
				ss = &usingStream{ServerStream: ss, od: od}
			}
			return handler(srv, ss)
		}),
	}
}

// usingStream registers interest in the entities of each message received
// before the handler sees it.
type usingStream struct {
	grpc.ServerStream
	od *onDemand
}

func (s *usingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	s.od.usesOf(s.Context(), m)
	return nil
}

// interests are the entities with interest now, by entity id, merged over
// the regions.
func (od *onDemand) interests() []*streamdv1.EntityInterest {
	var out []*streamdv1.EntityInterest
	for _, src := range od.sources {
		for _, e := range src.interest.Entries() {
			out = append(out, &streamdv1.EntityInterest{EntityId: e.EntityID, EntityTypes: e.EntityTypes, Regions: []string{src.region},
				SinceUnixNano: unixNano(e.Since), ExpiresAtUnixNano: e.Expires.UnixNano()})
		}
	}
	return mergeInterests(out)
}

// mergeInterests merges the interests of one entity id (in several
// regions, or pods): the types and regions of all, the earliest start and
// the latest expiry. Sorted by entity id.
func mergeInterests(list []*streamdv1.EntityInterest) []*streamdv1.EntityInterest {
	byID := map[string]*streamdv1.EntityInterest{}
	for _, e := range list {
		x := byID[e.GetEntityId()]
		if x == nil {
			x = &streamdv1.EntityInterest{EntityId: e.GetEntityId()}
			byID[e.GetEntityId()] = x
		}
		for _, t := range e.GetEntityTypes() {
			if !slices.Contains(x.EntityTypes, t) {
				x.EntityTypes = append(x.EntityTypes, t)
			}
		}
		for _, r := range e.GetRegions() {
			if !slices.Contains(x.Regions, r) {
				x.Regions = append(x.Regions, r)
			}
		}
		if since := e.GetSinceUnixNano(); since != 0 && (x.SinceUnixNano == 0 || since < x.SinceUnixNano) {
			x.SinceUnixNano = since
		}
		x.ExpiresAtUnixNano = max(x.ExpiresAtUnixNano, e.GetExpiresAtUnixNano())
	}
	out := make([]*streamdv1.EntityInterest, 0, len(byID))
	for _, x := range byID {
		slices.Sort(x.EntityTypes)
		slices.Sort(x.Regions)
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b *streamdv1.EntityInterest) int { return strings.Compare(a.EntityId, b.EntityId) })
	return out
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// interestServer serves InterestService.
type interestServer struct {
	streamdv1.UnimplementedInterestServiceServer
	od *onDemand
	// eg, in a group of pods sharing the entities, lists the other pods'
	// interests with this one's; nil: none.
	eg *entityGroup
}

func (s interestServer) ListInterests(ctx context.Context, req *streamdv1.ListInterestsRequest) (*streamdv1.ListInterestsResponse, error) {
	var list []*streamdv1.EntityInterest
	if s.od != nil {
		list = s.od.interests()
	}
	if s.eg == nil || req.GetPod() {
		return &streamdv1.ListInterestsResponse{Interests: list}, nil
	}
	pods, err := s.eg.otherPods()
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "streamd: list the interests of the pods of group %s: %v", s.eg.name, err)
	}
	for _, p := range pods {
		resp, err := streamdv1.NewInterestServiceClient(p.conn).ListInterests(ctx, &streamdv1.ListInterestsRequest{Pod: true})
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "streamd: list the interests of pod %s (%s) of group %s: %v", p.id, p.addr, s.eg.name, err)
		}
		list = append(list, resp.GetInterests()...)
	}
	return &streamdv1.ListInterestsResponse{Interests: mergeInterests(list)}, nil
}

var interestDesc = prometheus.NewDesc("streamd_interest_entities",
	"Entities of on-demand entity types this region has interest in now (replicated here until the interest expires), by entity type.", []string{"entity_type"}, nil)

type interestCollector struct{ od *onDemand }

func (c interestCollector) Describe(ch chan<- *prometheus.Desc) { ch <- interestDesc }

func (c interestCollector) Collect(ch chan<- prometheus.Metric) {
	n := map[string]int{}
	for t := range c.od.types {
		n[t] = 0
	}
	for _, x := range c.od.interests() {
		for _, t := range x.EntityTypes {
			n[t]++
		}
	}
	for t, count := range n {
		ch <- prometheus.MustNewConstMetric(interestDesc, prometheus.GaugeValue, float64(count), t)
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/streamd/streamd/consumer/group"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/publisher"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/primary"
)

// A group of pods sharing the entities (group: in the config file, at the
// top level or on this region's regions entry): the pods of this streamd's
// StatefulSet, each with its own journal, share the journal's 1,024 slices
// through a consumer group with holdings (consumer/group). Each pod writes,
// and answers the entity reads of, only the slices it owns and holds; a
// Publish, LoadEvent or EntityEvents of an entity of another slice is
// forwarded to the pod that owns it. A pod that takes slices first copies
// their whole history from the pod that held them (topology.CopyHistory: its
// local writes and its copies from elsewhere, with their origin seqNrs),
// then records that it holds them (group.Member.Hold) and writes them; a pod
// that gives slices up stops writing them (journal.SetWritable) before the
// group hands them over, and on SIGTERM stays up until the pods that took
// its slices hold them. So each entity's events form one sequence, 1, 2, 3…,
// whichever pods wrote them. All pods' events carry the region as their
// origin (--region).

// entityGroupSettings is a checked group: of the config file.
type entityGroupSettings struct {
	name string
	dial []grpc.DialOption
}

// parseEntityGroup checks the file's group:, if it has one, and what the
// groups of regions (regions[i].group, by region) allow; grouped are the
// replicate: entries with a group: of their own.
func parseEntityGroup(fc fileConfig, grouped []groupedReplication, regionGroups map[string]*entityGroupSettings) (*entityGroupSettings, error) {
	g := fc.Group
	top := g != (entityGroupConfig{})
	if !top && len(regionGroups) == 0 {
		return nil, nil
	}
	where := "group:"
	if !top {
		for _, r := range fc.Regions {
			if r.Group != "" {
				where = fmt.Sprintf("regions entry %q has group %q:", r.Name, r.Group)
				break
			}
		}
	}
	if len(grouped) > 0 {
		return nil, fmt.Errorf("%s with it every replicate: entry follows the group's slices (each pod copies the slices it writes), but replicate entry %q has group %q of its own; leave group: out of the entry", where, grouped[0].opts.Name, grouped[0].group)
	}
	notYet := func(what, why string) error {
		return fmt.Errorf("%s with %s is not built: %s", where, what, why)
	}
	switch {
	case top && len(fc.Regions) > 0:
		return nil, errors.New("group: at the top level is for a streamd of no project: in a project, give group: to the entry of the region whose pods share its entities (regions[i].group)")
	case len(fc.Aggregate) > 0:
		return nil, notYet("aggregate:", "a pod's stages would write results of entities whose slices other pods write")
	case top && (len(fc.EntityTypes) > 0 || fc.DefaultMode != 0 || fc.DefaultPrimary != ""):
		return nil, notYet("entity_types: or default_mode:", "the modes of entity types are the project's regions'")
	}
	if !top {
		return nil, nil // withRegion picks this region's group
	}
	if g.Name == "" {
		return nil, errors.New("group: name is empty (it names the group's Leases <name>-<pod> and its ConfigMap <name>-positions)")
	}
	if err := checkGroup("group.name", g.Name, nil); err != nil {
		return nil, err
	}
	dial, err := replicateConfig{TLS: g.TLS, TokenFile: g.TokenFile}.dialOptions("group")
	if err != nil {
		return nil, err
	}
	return &entityGroupSettings{name: g.Name, dial: dial}, nil
}

// regionGroup checks the group: of the regions entry at; its pods reach
// each other with dial, as the other regions reach them.
func regionGroup(at, name string, dial []grpc.DialOption) (*entityGroupSettings, error) {
	if err := checkGroup(at+".group", name, nil); err != nil {
		return nil, err
	}
	return &entityGroupSettings{name: name, dial: dial}, nil
}

// forwardedBy is the metadata key of a call one pod of a group forwards to
// another: its value names the forwarding pod. A pod that does not serve
// the slice of a forwarded call refuses it rather than forward it again.
const forwardedBy = "streamd-group-forwarded-by"

// entityGroup is this pod's part in the group of the config file.
type entityGroup struct {
	name, self, region string
	log                *slog.Logger
	dial               []grpc.DialOption
	forwarded          *prometheus.CounterVec
	slices             prometheus.Gauge

	mu     sync.Mutex
	j      *journal.Journal // set by start
	member *group.Member    // the current one
	served sliceSet
	conns  map[string]*grpc.ClientConn // by address
	// copying holds a token while a CopyHistory runs: one at a time, as
	// they share their offsets per source journal.
	copying    chan struct{}
	publishers map[*grpc.ClientConn]*publisher.Publisher
	// replications run over the slices this pod writes (replicate:
	// entries), added before the pod joins.
	replications []func(context.Context, offsets.SliceRange) error
}

// replicate adds a replication that run starts over the slices this pod
// writes, once it writes them all.
func (eg *entityGroup) replicate(run func(context.Context, offsets.SliceRange) error) {
	eg.replications = append(eg.replications, run)
}

func newEntityGroup(s *entityGroupSettings, self, region string, log *slog.Logger, reg prometheus.Registerer) *entityGroup {
	eg := &entityGroup{name: s.name, self: self, region: region, log: log.With("group", s.name), dial: s.dial,
		conns: map[string]*grpc.ClientConn{}, publishers: map[*grpc.ClientConn]*publisher.Publisher{}, copying: make(chan struct{}, 1)}
	eg.forwarded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "streamd_group_forwarded_total",
		Help: "Calls this pod forwarded to the pod of its group that owns the entity's slice, by call (publish, load_event, entity_events, and primary_write, primary_sync and the other PrimaryService calls of one entity, pin or failover).",
	}, []string{"call"})
	eg.slices = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "streamd_group_slices",
		Help: "Slices this pod writes and serves the entity reads of, of the 1,024 its group shares.",
	})
	reg.MustRegister(eg.forwarded, eg.slices)
	return eg
}

// sliceSet is a set of the journal's slices.
type sliceSet [journal.Slices / 64]uint64

func (s *sliceSet) add(r offsets.SliceRange) {
	for i := r.First; i <= r.Last; i++ {
		s[i/64] |= 1 << (i % 64)
	}
}

func (s sliceSet) has(slice uint32) bool { return s[slice/64]&(1<<(slice%64)) != 0 }

func (s sliceSet) and(o sliceSet) sliceSet {
	for i := range s {
		s[i] &= o[i]
	}
	return s
}

func (s sliceSet) count() int {
	n := 0
	for _, w := range s {
		n += bits.OnesCount64(w)
	}
	return n
}

// serves reports whether this pod writes slice now.
func (eg *entityGroup) serves(slice uint32) bool {
	eg.mu.Lock()
	defer eg.mu.Unlock()
	return eg.served.has(slice)
}

// serve makes next the slices this pod writes and serves: the slices it
// stops writing first, in the journal's order (appends queued before are
// durable once SetWritable returns, later ones refused), then the others.
func (eg *entityGroup) serve(ctx context.Context, next sliceSet) error {
	eg.mu.Lock()
	keep := eg.served.and(next)
	eg.served = keep
	eg.mu.Unlock()
	if err := eg.j.SetWritable(ctx, keep.has); err != nil {
		return err
	}
	if err := eg.j.SetWritable(ctx, next.has); err != nil {
		return err
	}
	eg.mu.Lock()
	eg.served = next
	eg.mu.Unlock()
	eg.slices.Set(float64(next.count()))
	return nil
}

// start makes j the journal of this pod: it writes no slice until the
// group gives it some.
func (eg *entityGroup) start(ctx context.Context, j *journal.Journal) error {
	eg.j = j
	return eg.serve(ctx, sliceSet{})
}

// run is what this pod's member runs over the slices part it owns: serve
// at once those it holds, hold and serve those nobody held (no history
// anywhere), copy the others from their holders and then hold and serve
// them; on the end of ctx (the slices move, the pod leaves or is fenced)
// stop writing them before returning, so that the group hands them over
// with nothing written after.
func (eg *entityGroup) run(ctx context.Context, part offsets.SliceRange) error {
	defer func() {
		if err := eg.serve(context.WithoutCancel(ctx), sliceSet{}); err != nil && !errors.Is(err, journal.ErrClosed) {
			eg.log.Error("group: stop writing the slices given up", "slices", part.String(), "err", err)
		}
	}()
	var holders []group.Holding
	if err := retry(ctx, eg.log, "read who holds the slices", func() (err error) {
		holders, err = eg.currentMember().Holders(ctx, part)
		return err
	}); err != nil {
		return nil // ctx ended
	}
	var copies []group.Holding
	for _, h := range holders {
		if h.Identity != eg.self {
			copies = append(copies, h)
		}
	}
	// The slices this pod holds, or nobody does (no history anywhere), are
	// held before they are written: a crash after a write and before the
	// Hold would leave history no holder names.
	if err := retry(ctx, eg.log, "hold the slices", func() error { return eg.holdUncopied(ctx, part, copies) }); err != nil {
		return nil
	}
	served := uncopied(part, copies)
	if err := eg.serve(ctx, served); err != nil {
		return ctxOr(ctx, err)
	}
	for _, h := range copies {
		if err := eg.copyFrom(ctx, h); err != nil {
			return nil // ctx ended
		}
		if err := retry(ctx, eg.log, "hold the slices copied", func() error { return eg.currentMember().Hold(ctx, h.Slices) }); err != nil {
			return nil
		}
		served.add(h.Slices)
		if err := eg.serve(ctx, served); err != nil {
			return ctxOr(ctx, err)
		}
	}
	eg.log.Info("group: writing slices", "slices", part.String())
	var wg sync.WaitGroup
	for _, r := range eg.replications {
		wg.Go(func() { eg.replicateOver(ctx, part, r) })
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}

// replicateOver runs a replication over part until ctx ends, again after
// a backoff (1s, doubling up to 1m) when it stops with an error.
func (eg *entityGroup) replicateOver(ctx context.Context, part offsets.SliceRange, run func(context.Context, offsets.SliceRange) error) {
	wait := rejoinBackoff[0]
	for {
		err := run(ctx, part)
		if ctx.Err() != nil {
			return
		}
		eg.log.Error("group: a replication over this pod's slices stopped; it starts again after a backoff", "slices", part.String(), "backoff", wait.String(), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, rejoinBackoff[1])
	}
}

// uncopied is the set of part's slices that need no copy: those not in
// copies (held by this pod, or by none).
func uncopied(part offsets.SliceRange, copies []group.Holding) sliceSet {
	var s, c sliceSet
	s.add(part)
	for _, h := range copies {
		c.add(h.Slices)
	}
	for i := range s {
		s[i] &^= c[i]
	}
	return s
}

// holdUncopied records that this pod holds the slices of part that need
// no copy, each maximal range with one Hold.
func (eg *entityGroup) holdUncopied(ctx context.Context, part offsets.SliceRange, copies []group.Holding) error {
	s := uncopied(part, copies)
	for first := part.First; first <= part.Last; first++ {
		if !s.has(first) {
			continue
		}
		last := first
		for last < part.Last && s.has(last+1) {
			last++
		}
		if err := eg.currentMember().Hold(ctx, offsets.SliceRange{First: first, Last: last}); err != nil {
			return err
		}
		first = last
	}
	return nil
}

// ctxOr is nil once ctx ended (the slices move: not an error), else err.
func ctxOr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// retry calls f until it succeeds or ctx ends, logging each failure and
// waiting a second, then up to 10 s, between calls.
func retry(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	wait := time.Second
	for {
		err := f()
		if err == nil || ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("group: "+what+" failed; trying again", "in", wait.String(), "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 10*time.Second)
	}
}

// copyFrom copies the history of h's slices from the pod that holds them,
// waiting for that pod while it is unreachable (its Lease gone: it crashed
// and comes back on its volume). It returns nil once copied, or ctx's
// error.
func (eg *entityGroup) copyFrom(ctx context.Context, h group.Holding) error {
	first := true
	return retry(ctx, eg.log, "copy the history of slices "+h.Slices.String()+" from pod "+h.Identity, func() error {
		// The address on the holder's Lease now: the one Holders read
		// goes stale once that Lease is gone (another pod may get it).
		addr := eg.currentMember().Status().Addresses[h.Identity]
		if first && addr == "" {
			addr = h.Address
		}
		first = false
		if addr == "" {
			return fmt.Errorf("pod %s, which holds the history of slices %s, is not in the group: they wait for it to come back (if its volume is lost for good, remove holds.%s from the ConfigMap %s-positions, accepting that their history is gone)",
				h.Identity, h.Slices, h.Identity, eg.name)
		}
		return eg.copyHistory(ctx, h, addr, "copied the history of slices")
	})
}

// copyHistory copies the history of h's slices from the pod at addr, and
// logs done when it has.
func (eg *entityGroup) copyHistory(ctx context.Context, h group.Holding, addr, done string) error {
	select { // a copy that waits for its holder must not hold up the Warm its member stops
	case eg.copying <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-eg.copying }()
	start := time.Now()
	err := topology.CopyHistory(ctx, topology.ReplicationOptions{
		From: topology.Region{Name: eg.region, Addrs: []string{addr}}, Member: true, Slices: h.Slices,
		Journal: eg.j, DialOptions: eg.dial, Logger: eg.log,
	})
	if err == nil {
		eg.log.Info("group: "+done, "slices", h.Slices.String(), "from", h.Identity, "took", time.Since(start).String())
	}
	return err
}

// warm is group.Options.Warm: it copies the history of slices r that
// another pod holds, before this pod owns them, while that pod still
// writes them; the copy after the hand-off (run) then takes only what it
// wrote since. A holder that is gone (no Lease) is left to run, which
// waits for it.
func (eg *entityGroup) warm(ctx context.Context, r offsets.SliceRange) error {
	return retry(ctx, eg.log, "copy ahead the history of slices "+r.String(), func() error {
		holders, err := eg.currentMember().Holders(ctx, r)
		if err != nil {
			return err
		}
		for _, h := range holders {
			if h.Identity == eg.self || h.Address == "" {
				continue
			}
			if err := eg.copyHistory(ctx, h, h.Address, "copied ahead the history of slices"); err != nil {
				return err
			}
		}
		return nil
	})
}

// sharedTypes are the entity types whose events every pod of the group
// holds: the pins of primaries and the failover records, which every
// pod's Primary folds whatever entity it writes. The pod that writes
// their slice writes them, as any entity's; share copies them into the
// others.
var sharedTypes = []string{primary.PinEntityType, primary.FailoverEntityType}

// share copies the events of sharedTypes from every other pod of the
// group into this pod's journal until ctx ends: a replication from each
// pod at the address on its Lease, started again when that changes.
func (eg *entityGroup) share(ctx context.Context) {
	type copying struct {
		addr string
		stop context.CancelFunc
		done chan struct{}
	}
	running := map[string]*copying{}
	defer func() {
		for _, c := range running {
			c.stop()
			<-c.done
		}
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		var addrs map[string]string
		if m := eg.currentMember(); m != nil {
			addrs = m.Status().Addresses
		}
		for id, c := range running {
			if addrs[id] != c.addr {
				c.stop()
				<-c.done
				delete(running, id)
			}
		}
		for id, addr := range addrs {
			if id == eg.self || addr == "" || running[id] != nil {
				continue
			}
			cctx, stop := context.WithCancel(ctx)
			c := &copying{addr: addr, stop: stop, done: make(chan struct{})}
			running[id] = c
			go func() {
				defer close(c.done)
				eg.shareFrom(cctx, id, addr)
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// shareFrom copies the events of sharedTypes from the pod id at addr
// until ctx ends. Its offsets are kept per journal of that pod (the name
// holds the journal id): a pod whose volume was replaced is copied from
// its earliest event, and what this journal holds already is dropped.
func (eg *entityGroup) shareFrom(ctx context.Context, id, addr string) {
	var filter []*streamdv1.FilterCriterion
	for _, t := range sharedTypes {
		filter = append(filter, &streamdv1.FilterCriterion{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE, Value: t})
	}
	retry(ctx, eg.log, "copy the pins and failover records of pod "+id, func() error {
		conn, err := eg.conn(addr)
		if err != nil {
			return err
		}
		info, err := streamdv1.NewEventStreamServiceClient(conn).JournalInfo(ctx, &streamdv1.JournalInfoRequest{})
		if err != nil {
			return err
		}
		c, err := topology.NewReplication(topology.ReplicationOptions{
			From: topology.Region{Name: eg.region, Addrs: []string{addr}}, Member: true, Filter: filter,
			Name: fmt.Sprintf("group-shared-%x", info.GetJournalId()), Journal: eg.j, DialOptions: eg.dial, Logger: eg.log,
		})
		if err != nil {
			return err
		}
		return c.Run(ctx)
	})
}

// groupPod is another pod of the group, at the address on its Lease.
type groupPod struct {
	id, addr string
	conn     *grpc.ClientConn
}

// otherPods are the other pods of the group as this pod's member last saw
// them; an error if it has not joined yet, or a pod has no address yet.
func (eg *entityGroup) otherPods() ([]groupPod, error) {
	m := eg.currentMember()
	if m == nil {
		return nil, fmt.Errorf("pod %s has not joined group %s yet: its pods are not known; retry", eg.self, eg.name)
	}
	var out []groupPod
	for id, addr := range m.Status().Addresses {
		if id == eg.self {
			continue
		}
		if addr == "" {
			return nil, fmt.Errorf("pod %s of group %s has no address on its Lease yet; retry", id, eg.name)
		}
		conn, err := eg.conn(addr)
		if err != nil {
			return nil, fmt.Errorf("pod %s of group %s at %s: %w", id, eg.name, addr, err)
		}
		out = append(out, groupPod{id: id, addr: addr, conn: conn})
	}
	return out, nil
}

// primaryPods is primary.Options.Pods: the PrimaryService of the other
// pods of the group.
func (eg *entityGroup) primaryPods() ([]streamdv1.PrimaryServiceClient, error) {
	pods, err := eg.otherPods()
	if err != nil {
		return nil, err
	}
	out := make([]streamdv1.PrimaryServiceClient, len(pods))
	for i, p := range pods {
		out[i] = podClient{streamdv1.NewPrimaryServiceClient(p.conn), p.id + " (" + p.addr + ")"}
	}
	return out, nil
}

// podClient is the PrimaryService of another pod, named (its String) in
// the Primary's errors.
type podClient struct {
	streamdv1.PrimaryServiceClient
	name string
}

func (c podClient) String() string { return c.name }

func (eg *entityGroup) currentMember() *group.Member {
	eg.mu.Lock()
	defer eg.mu.Unlock()
	return eg.member
}

// options are the group.Options of this pod's member, at address addr.
func (eg *entityGroup) options(p pod, addr string, holdWait time.Duration) group.Options {
	return group.Options{
		Client: p.client, Namespace: p.namespace, Group: eg.name, Identity: p.name, LeaseDuration: p.leaseDuration,
		Runner: eg.run, Warm: eg.warm, Address: addr, Holds: true, HoldWait: holdWait, Logger: eg.log,
	}
}

// join returns a new member of the group for this pod, at address addr.
func (eg *entityGroup) join(p pod, addr string, holdWait time.Duration) (*group.Member, error) {
	m, err := group.New(eg.options(p, addr, holdWait))
	if err == nil {
		eg.mu.Lock()
		eg.member = m
		eg.mu.Unlock()
	}
	return m, err
}

// owner is the pod that owns slice, and its address, as this pod's member
// last saw them ("" if none).
func (eg *entityGroup) owner(slice uint32) (string, string) {
	m := eg.currentMember()
	if m == nil {
		return "", ""
	}
	st := m.Status()
	for id, r := range st.Owners {
		if r.First <= slice && slice <= r.Last {
			return id, st.Addresses[id]
		}
	}
	return "", ""
}

// routeWait bounds how long a call for a slice that is moving (no pod
// owns it yet, this pod copies its history, the owner's address is not
// known yet) waits for it to settle before it is refused with Unavailable.
const routeWait = 5 * time.Second

// errServedHere: the slice a call waited for is written here now.
var errServedHere = errors.New("streamd: the slice is written here now")

// forwardTo returns a connection to the pod that writes slice now, with
// ctx for the call; errServedHere if this pod writes it now; or the
// Unavailable status saying why there is none, after up to routeWait.
func (eg *entityGroup) forwardTo(ctx context.Context, slice uint32) (*grpc.ClientConn, context.Context, error) {
	if by := metadata.ValueFromIncomingContext(ctx, forwardedBy); len(by) > 0 {
		return nil, nil, status.Errorf(codes.Unavailable, "streamd: pod %s of group %s does not write slice %d now (pod %s forwarded the call here as its owner): the group is moving it; retry", eg.self, eg.name, slice, by[0])
	}
	wait := time.NewTimer(routeWait)
	defer wait.Stop()
	for {
		id, addr := eg.owner(slice)
		var why error
		switch {
		case eg.serves(slice):
			return nil, nil, errServedHere
		case id == "":
			why = status.Errorf(codes.Unavailable, "streamd: no pod of group %s owns slice %d now: the group is moving it; retry", eg.name, slice)
		case id == eg.self:
			why = status.Errorf(codes.Unavailable, "streamd: pod %s is copying the history of slice %d from the pod that held it; retry", eg.self, slice)
		case addr == "":
			why = status.Errorf(codes.Unavailable, "streamd: pod %s owns slice %d but has no address on its Lease yet; retry", id, slice)
		default:
			conn, err := eg.conn(addr)
			if err != nil {
				return nil, nil, status.Errorf(codes.Unavailable, "streamd: reach pod %s (%s), which owns slice %d: %v", id, addr, slice, err)
			}
			kv := []string{forwardedBy, eg.self}
			if metadata.ValueFromIncomingContext(ctx, topology.PullHeader) != nil { // another region copying a history: not a use
				kv = append(kv, topology.PullHeader, eg.region)
			}
			return conn, metadata.AppendToOutgoingContext(ctx, kv...), nil
		}
		select {
		case <-ctx.Done():
			return nil, nil, why
		case <-wait.C:
			return nil, nil, why
		case <-time.After(50 * time.Millisecond): // the member's view moves at its steps
		}
	}
}

func (eg *entityGroup) conn(addr string) (*grpc.ClientConn, error) {
	eg.mu.Lock()
	defer eg.mu.Unlock()
	if c, ok := eg.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, eg.dial...)
	if err != nil {
		return nil, err
	}
	eg.conns[addr] = c
	return c, nil
}

// close closes the streams and connections to the other pods.
func (eg *entityGroup) close() {
	eg.mu.Lock()
	pubs, conns := eg.publishers, eg.conns
	eg.publishers, eg.conns = map[*grpc.ClientConn]*publisher.Publisher{}, map[string]*grpc.ClientConn{}
	eg.mu.Unlock()
	for _, p := range pubs {
		p.Close()
	}
	for _, c := range conns {
		c.Close()
	}
}

// Routes is producer.Router's: the events of slices this pod does not
// write go to Publish.
func (eg *entityGroup) Routes(e *streamdv1.Event) (bool, error) {
	return !eg.serves(journal.SliceOf(e.GetEntityId())), nil
}

// Publish forwards the events of one publish, all of one slice, to the pod
// that writes it.
func (eg *entityGroup) Publish(ctx context.Context, events []*streamdv1.Event) ([]*streamdv1.Appended, error) {
	slice := journal.SliceOf(events[0].GetEntityId())
	for i, e := range events[1:] {
		if s := journal.SliceOf(e.GetEntityId()); s != slice {
			return nil, status.Errorf(codes.InvalidArgument, "streamd: event %d is of slice %d and event 0 of slice %d: in a group of pods one publish is appended by the pod that writes its slice, so its entities must be of one slice; publish them separately (or with separate_appends)", i+1, s, slice)
		}
	}
	conn, ctx, err := eg.forwardTo(ctx, slice)
	if errors.Is(err, errServedHere) {
		return nil, status.Errorf(codes.Unavailable, "streamd: this pod started writing slice %d meanwhile; retry", slice)
	}
	if err != nil {
		return nil, err
	}
	eg.forwarded.WithLabelValues("publish").Inc()
	if len(events) > 1 { // one append: one Publish
		resp, err := streamdv1.NewEventStreamServiceClient(conn).Publish(ctx, &streamdv1.PublishRequest{Events: events})
		if err != nil {
			return nil, err
		}
		return resp.GetAppended(), nil
	}
	// The single events forwarded to a pod at once go together, each its
	// own append, over one PublishStream: about 1.5 times the events/s of a
	// Publish each (BenchmarkEntityGroupPublish).
	pub, err := eg.publisher(conn)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "streamd: open a publish stream to the pod that writes slice %d: %v", slice, err)
	}
	a, err := pub.Publish(ctx, events[0])
	if err != nil {
		if pub.Err() != nil {
			eg.dropPublisher(conn, pub)
		}
		return nil, err
	}
	return []*streamdv1.Appended{{Offset: a.Offset, SeqNr: a.SeqNr, Region: a.Region, Version: a.Version}}, nil
}

// publisher is the stream that forwards single events to the pod at conn,
// opened on first use and again after it failed.
func (eg *entityGroup) publisher(conn *grpc.ClientConn) (*publisher.Publisher, error) {
	eg.mu.Lock()
	p, ok := eg.publishers[conn]
	eg.mu.Unlock()
	if ok {
		return p, nil
	}
	p, err := publisher.New(metadata.AppendToOutgoingContext(context.Background(), forwardedBy, eg.self), conn, publisher.Options{})
	if err != nil {
		return nil, err
	}
	eg.mu.Lock()
	q, ok := eg.publishers[conn]
	if !ok {
		eg.publishers[conn] = p
	}
	eg.mu.Unlock()
	if ok { // another call opened one meanwhile
		p.Close()
		return q, nil
	}
	return p, nil
}

// dropPublisher forgets pub, which failed, so that the next forward to its
// pod opens another.
func (eg *entityGroup) dropPublisher(conn *grpc.ClientConn, pub *publisher.Publisher) {
	eg.mu.Lock()
	if eg.publishers[conn] == pub {
		delete(eg.publishers, conn)
	}
	eg.mu.Unlock()
	pub.Close()
}

// groupRouter is producer.Router in a group: the events of slices this
// pod does not write go to the pod that does (eg), the others by their
// entity type's mode (next, the region's Primary).
type groupRouter struct {
	eg   *entityGroup
	next producer.Router
}

func (r groupRouter) Routes(e *streamdv1.Event) (bool, error) {
	if r.eg.serves(journal.SliceOf(e.GetEntityId())) {
		return r.next.Routes(e)
	}
	return true, nil
}

func (r groupRouter) Publish(ctx context.Context, events []*streamdv1.Event) ([]*streamdv1.Appended, error) {
	if r.eg.serves(journal.SliceOf(events[0].GetEntityId())) {
		if routed, err := r.next.Routes(events[0]); err != nil || routed {
			return r.next.Publish(ctx, events)
		}
	}
	// A slice another pod writes; or one this pod started writing since
	// Routes, which eg refuses with Unavailable (retry).
	return r.eg.Publish(ctx, events)
}

// routedCalls name, by method, the unary calls that concern one entity,
// forwarded to the pod that writes its slice, and their label in
// streamd_group_forwarded_total.
var routedCalls = map[string]string{
	streamdv1.EventStreamService_LoadEvent_FullMethodName: "load_event",
	streamdv1.PrimaryService_Write_FullMethodName:         "primary_write",
	streamdv1.PrimaryService_Sync_FullMethodName:          "primary_sync",
	streamdv1.PrimaryService_Takeover_FullMethodName:      "primary_takeover",
	streamdv1.PrimaryService_State_FullMethodName:         "primary_state",
	streamdv1.PrimaryService_SetPrimary_FullMethodName:    "primary_set",
	streamdv1.PrimaryService_GetPrimary_FullMethodName:    "primary_get",
	streamdv1.PrimaryService_Failover_FullMethodName:      "primary_failover",
}

// routeKey is the id of the entity whose slice's pod serves req: the
// entity's own, a pin's (its entity type names the pin entity) or the
// failover records'; "" when any pod serves it (GetPrimary of a type:
// every pod holds the pins, and answers as it knows them).
func routeKey(req any) string {
	switch r := req.(type) {
	case *streamdv1.SetPrimaryRequest:
		return r.GetEntityType()
	case *streamdv1.FailoverRequest:
		return primary.FailoverEntityID
	case interface{ GetEntityId() string }:
		return r.GetEntityId()
	}
	return ""
}

// newResponse is a new response message of the unary method fullMethod.
func newResponse(fullMethod string) (proto.Message, error) {
	name := protoreflect.FullName(strings.ReplaceAll(strings.TrimPrefix(fullMethod, "/"), "/", "."))
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	if err != nil {
		return nil, err
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return nil, fmt.Errorf("%s is not a method", name)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		return nil, err
	}
	return mt.New().Interface(), nil
}

// serverOptions forward the calls that concern one entity (routedCalls,
// EntityEvents) of slices this pod does not write to the pod that does.
func (eg *entityGroup) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			label, routed := routedCalls[info.FullMethod]
			key := routeKey(req)
			if !routed || key == "" || eg.serves(journal.SliceOf(key)) {
				return handler(ctx, req)
			}
			conn, fctx, err := eg.forwardTo(ctx, journal.SliceOf(key))
			if errors.Is(err, errServedHere) {
				return handler(ctx, req)
			}
			if err != nil {
				return nil, err
			}
			resp, err := newResponse(info.FullMethod)
			if err != nil {
				return nil, status.Errorf(codes.Internal, "streamd: forward %s: %v", info.FullMethod, err)
			}
			eg.forwarded.WithLabelValues(label).Inc()
			if err := conn.Invoke(fctx, info.FullMethod, req, resp); err != nil {
				return nil, err
			}
			return resp, nil
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if info.FullMethod != streamdv1.EventStreamService_EntityEvents_FullMethodName {
				return handler(srv, ss)
			}
			req := new(streamdv1.EntityEventsRequest)
			if err := ss.RecvMsg(req); err != nil {
				return err
			}
			if req.GetEntityId() == "" || eg.serves(journal.SliceOf(req.GetEntityId())) {
				return handler(srv, &receivedStream{ServerStream: ss, first: req})
			}
			conn, fctx, err := eg.forwardTo(ss.Context(), journal.SliceOf(req.GetEntityId()))
			if errors.Is(err, errServedHere) {
				return handler(srv, &receivedStream{ServerStream: ss, first: req})
			}
			if err != nil {
				return err
			}
			eg.forwarded.WithLabelValues("entity_events").Inc()
			fctx, cancel := context.WithCancel(fctx)
			defer cancel()
			cs, err := streamdv1.NewEventStreamServiceClient(conn).EntityEvents(fctx, req)
			if err != nil {
				return err
			}
			for {
				m, err := cs.Recv()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if err := ss.SendMsg(m); err != nil {
					return err
				}
			}
		}),
	}
}

// receivedStream is a server stream whose first message an interceptor
// has read already.
type receivedStream struct {
	grpc.ServerStream
	first proto.Message
}

func (s *receivedStream) RecvMsg(m any) error {
	if s.first == nil {
		return s.ServerStream.RecvMsg(m)
	}
	proto.Merge(m.(proto.Message), s.first)
	s.first = nil
	return nil
}

// podAddress is how the other pods reach this one: --pod-address, else the
// listener's address when it is a specific IP.
func podAddress(flag string, lis net.Addr) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if a, ok := lis.(*net.TCPAddr); ok && !a.IP.IsUnspecified() {
		return a.String(), nil
	}
	return "", fmt.Errorf("--config group: the other pods of the group reach this one at --pod-address (in Kubernetes $(POD_IP):7070); --listen %s does not say it", lis)
}

package group

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/offsets"
)

// Names on the Kubernetes objects.
const (
	// LabelGroup is on every member's Lease; its value is the group.
	LabelGroup = "streamd.io/consumer-group"
	// AnnotationSlices on a member's Lease is the slice range it owns
	// ("first-last", "" for none): informational, for kubectl; the
	// ConfigMap's owner entries are what members go by.
	AnnotationSlices = "streamd.io/slices"
	// AnnotationAddress on a member's Lease is Options.Address, how the
	// other members reach it (host:port): Holders and Status.Addresses
	// report it.
	AnnotationAddress = "streamd.io/address"
	// AnnotationLeaving is "true" on the Lease of a member that left with
	// Options.Holds and waits for its holdings to be taken over: the Lease
	// is alive (renewed, its owner entry stands) but not a member for the
	// assignment.
	AnnotationLeaving = "streamd.io/leaving"
	// AnnotationWarm on the Lease of a member with Options.Warm lists the
	// parts of its target, owned by other members, that it has warmed
	// (Warm returned for them): they may give them up.
	AnnotationWarm = "streamd.io/warm"
)

// DefaultLeaseDuration is the default of Options.LeaseDuration.
const DefaultLeaseDuration = 15 * time.Second

// DefaultHoldWait is the default of Options.HoldWait.
const DefaultHoldWait = 30 * time.Second

// ErrInvalidOptions is wrapped by every error of Options.Validate.
var ErrInvalidOptions = errors.New("group: invalid options")

// ErrNotOwner is wrapped by the error of Hold when the group's ConfigMap
// does not say that this member (its current Lease) owns the slices: it
// may hold only slices it owns.
var ErrNotOwner = errors.New("group: this member does not own the slices")

// errNoChange from a ConfigMap update function: nothing to write.
var errNoChange = errors.New("group: no change")

// errLost: the member's claim is gone (its lease was deleted as expired).
var errLost = errors.New("group: this member's lease or claim was taken away")

// errImport: handed-off offsets could not be stored.
var errImport = errors.New("group: import handed-off offsets")

// errBusy: slices to take are still owned by a live member.
var errBusy = errors.New("group: slices still owned by another member")

// Options configures New.
type Options struct {
	// Client reaches the Kubernetes API. Required.
	Client kubernetes.Interface
	// Namespace of the Leases and the ConfigMap. Required.
	Namespace string
	// Group names the consumer group: Leases "<Group>-<Identity>" labelled
	// LabelGroup=<Group>, ConfigMap "<Group>-positions". Required; a DNS
	// label of at most 50 characters.
	Group string
	// Identity of this member, unique in the group: the pod name. Required.
	Identity string
	// LeaseDuration D (default 15s): a member renews its Lease every D/3,
	// stops consuming when it could not renew for 2D/3, and others take a
	// Lease they saw unchanged for D as expired.
	LeaseDuration time.Duration
	// Consumer is the consumer each member runs over the slices it owns.
	// Slices must be zero: the group sets them. Name and Store are
	// required as for consumer.New; the Store is this member's own. The
	// group hands its offsets over between members.
	Consumer consumer.Options
	// Runner, instead of Consumer, is what each member runs over the
	// slices it owns, until ctx ends (then it returns after saving its
	// own positions). The group hands no offsets over: a member that
	// takes slices starts them wherever its Runner left them, which is
	// what it stored when it last owned them, or the beginning. This is
	// for work whose results stay with the member, such as a replication
	// into the member's own journal (topology.ReplicationOptions.Slices):
	// there another member's offset would skip history this member's
	// journal does not hold.
	Runner func(ctx context.Context, slices offsets.SliceRange) error
	// Address is how the other members reach this one (host:port), written
	// on its Lease as AnnotationAddress. Required with Holds.
	Address string
	// Holds (with a Runner and an Address) makes the ConfigMap also record
	// which member's journal holds the whole history of each slice (Hold,
	// Holders), and makes a member that leaves keep its Lease, marked
	// AnnotationLeaving, until the members that took its slices hold them,
	// for at most HoldWait: see the package documentation, Holdings.
	Holds bool
	// HoldWait (default 30s) bounds how long a member leaving with Holds
	// waits for its holdings to be taken over before it deletes its Lease,
	// and with Warm how long a member keeps slices for the members taking
	// them to warm.
	HoldWait time.Duration
	// Warm (with Holds) is what a member runs over each part of its target
	// that other members own, before they give it up: a copy of the part's
	// history while its holder still writes it, so that the copy after the
	// hand-off is only what came since. It returns nil once done, or ctx's
	// error when the member's target changes or it stops. A member giving
	// slices up (its target shrank, or it leaves) keeps them, its Runner
	// running, until each member taking a part of them says it is warm for
	// it (AnnotationWarm), for at most HoldWait. nil: slices are given up
	// at once.
	Warm func(ctx context.Context, slices offsets.SliceRange) error
	// Clock defaults to the real clock.
	Clock clock.WithTickerAndDelayedExecution
	// Logger defaults to Consumer.Logger, then slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.LeaseDuration == 0 {
		o.LeaseDuration = DefaultLeaseDuration
	}
	if o.HoldWait == 0 {
		o.HoldWait = DefaultHoldWait
	}
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Logger == nil && o.Runner == nil {
		o.Logger = o.Consumer.Logger
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Validate reports every unusable field of o, joined; each error wraps
// ErrInvalidOptions.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...))
	}
	if o.Client == nil {
		bad("Options.Client is nil (kubernetes.NewForConfig(rest.InClusterConfig()))")
	}
	if o.Namespace == "" {
		bad("Options.Namespace is empty")
	}
	switch {
	case o.Group == "":
		bad("Options.Group is empty (name the consumer group)")
	case len(o.Group) > 50:
		bad("Options.Group %q is %d characters, above 50", o.Group, len(o.Group))
	default:
		if errs := validation.IsDNS1123Label(o.Group); len(errs) > 0 {
			bad("Options.Group %q: %s", o.Group, strings.Join(errs, "; "))
		}
	}
	if o.Identity == "" {
		bad("Options.Identity is empty (give the pod name)")
	} else {
		if errs := validation.IsDNS1123Subdomain(o.Group + "-" + o.Identity); o.Group != "" && len(errs) > 0 {
			bad("Options.Identity %q: the Lease name %s-%s: %s", o.Identity, o.Group, o.Identity, strings.Join(errs, "; "))
		}
		if errs := validation.IsConfigMapKey(ownerKeyPrefix + o.Identity); len(errs) > 0 {
			bad("Options.Identity %q: %s", o.Identity, strings.Join(errs, "; "))
		}
	}
	if o.LeaseDuration < 3*time.Second {
		bad("Options.LeaseDuration %s is below 3s", o.LeaseDuration)
	}
	if o.Address != "" {
		if _, _, err := net.SplitHostPort(o.Address); err != nil {
			bad("Options.Address %q: want host:port (%v)", o.Address, err)
		}
	}
	if o.Holds && o.Runner == nil {
		bad("Options.Holds is set without Options.Runner: holdings are for work whose data stays with the member")
	}
	if o.Holds && o.Address == "" {
		bad("Options.Holds is set without Options.Address: the members that take this member's slices copy their history from it")
	}
	if o.Warm != nil && !o.Holds {
		bad("Options.Warm is set without Options.Holds: a member warms for slices by copying from their holders")
	}
	if o.HoldWait < 0 {
		bad("Options.HoldWait %s is negative", o.HoldWait)
	}
	if o.Runner != nil {
		if c := o.Consumer; c.Name != "" || c.Store != nil || len(c.Producers) > 0 {
			bad("Options.Consumer and Options.Runner are both set: set one (Runner keeps its own positions)")
		}
		return errors.Join(errs...)
	}
	if o.Consumer.Slices != (offsets.SliceRange{}) {
		bad("Options.Consumer.Slices is %s: the group assigns the slices, leave it zero", o.Consumer.Slices)
	}
	c := o.Consumer
	c.Slices = offsets.AllSlices
	if err := c.Validate(); err != nil {
		bad("Options.Consumer: %w", err)
	}
	return errors.Join(errs...)
}

// Status is what a member knows and does.
type Status struct {
	// Members are the identities of the live members, sorted; the index of
	// this member in it picks its Target.
	Members []string
	// Target is the slice range this member should own (None: nothing).
	Target offsets.SliceRange
	// Owned is the slice range this member owns in the group's ConfigMap.
	Owned offsets.SliceRange
	// Consuming is the range its consumer runs over now (None: stopped).
	Consuming offsets.SliceRange
	// Fenced: it could not renew its Lease for 2/3 of LeaseDuration and
	// does not consume until it can.
	Fenced bool
	// Owners are the owner entries of the live Leases (leaving ones
	// included) as this member last read them from the ConfigMap:
	// identity → owned slices. With Options.Holds it reads them every
	// step; otherwise when a step writes the ConfigMap.
	Owners map[string]offsets.SliceRange
	// Addresses: identity → AnnotationAddress ("" if none) of every Lease
	// of the group in the last list, leaving ones included.
	Addresses map[string]string
}

// Member is one consumer instance of a group.
type Member struct {
	opts     Options
	log      *slog.Logger
	clock    clock.WithTickerAndDelayedExecution
	leases   string // name of this member's Lease
	cmName   string
	interval time.Duration // D/3
	// consume runs the consumer over slices until ctx ends (a test
	// replaces it).
	consume func(ctx context.Context, slices offsets.SliceRange) error
	// ticked, if set, is called after every tick (tests).
	ticked func(now time.Time, st Status)
	// waiting, if set, is called at every step of awaitWarm and
	// awaitTakeOver (tests).
	waiting func(now time.Time)

	started  atomic.Bool
	mu       sync.Mutex
	status   Status
	leaseUID types.UID // of lease, for Hold ("": none)

	// Owned by Run's goroutine.
	lease     *coordinationv1.Lease // as last written; nil: none
	lastRenew time.Time             // start of the last successful write of it
	seen      map[types.UID]observed
	owned     offsets.SliceRange // in the ConfigMap
	mirror    offsets.SliceRange // the annotation of the Lease
	run       *run
	published string // offsets last published, encoded
	watchdog  clock.Timer
	leaving   bool                 // the Lease says AnnotationLeaving
	warming   *warming             // the Warm of the current target (Options.Warm)
	keptSince time.Time            // since when slices are kept for their takers to warm (zero: none)
	warmed    []offsets.SliceRange // for AnnotationWarm; guarded by mu
	owners    map[string]owner     // as last read from the ConfigMap
	readOnce  bool                 // this step read the ConfigMap
}

type observed struct {
	resourceVersion string
	at              time.Time
}

// warming is Options.Warm running, or done, over the parts of target
// other members own.
type warming struct {
	target offsets.SliceRange
	cancel context.CancelFunc
	done   chan struct{}
}

// run is a consumer running over slices.
type run struct {
	slices offsets.SliceRange
	cancel context.CancelFunc
	done   chan struct{}
	err    error // set before done closes
}

// New checks o and returns a Member; Run makes it join.
func New(o Options) (*Member, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	o = o.withDefaults()
	m := &Member{
		opts:     o,
		log:      o.Logger.With("group", o.Group, "member", o.Identity),
		clock:    o.Clock,
		leases:   o.Group + "-" + o.Identity,
		cmName:   o.Group + "-positions",
		interval: o.LeaseDuration / 3,
		seen:     map[types.UID]observed{},
		owned:    None,
		mirror:   None,
		status:   Status{Target: None, Owned: None, Consuming: None},
	}
	m.consume = m.runConsumer
	if o.Runner != nil {
		m.consume = o.Runner
	}
	return m, nil
}

func (m *Member) runConsumer(ctx context.Context, slices offsets.SliceRange) error {
	o := m.opts.Consumer
	o.Slices = slices
	c, err := consumer.New(o)
	if err != nil {
		return err
	}
	return c.Run(ctx)
}

// Status returns what the member knows and does, as of its last step: a
// copy, the caller's to keep.
func (m *Member) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.status
	st.Members = slices.Clone(st.Members)
	st.Owners = maps.Clone(st.Owners)
	st.Addresses = maps.Clone(st.Addresses)
	return st
}

// Run joins the group and consumes the slices assigned to this member,
// moving them as members come and go, until ctx ends; then it stops the
// consumer, hands its slices off with their offsets and deletes its
// Lease (with Options.Holds, once the members that took its slices hold
// them, or after HoldWait). It returns nil then, or the consumer's error
// (after the same hand-off, without waiting). Run may be called once.
func (m *Member) Run(ctx context.Context) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("group: Run called twice")
	}
	ticker := m.clock.NewTicker(m.interval)
	defer ticker.Stop()
	err := m.tick(ctx)
	for err == nil {
		var done <-chan struct{}
		if m.run != nil {
			done = m.run.done
		}
		select {
		case <-ctx.Done():
			m.leave(ctx, true, ticker.C())
			return nil
		case <-ticker.C():
			err = m.tick(ctx)
		case <-done:
			err = m.ended()
		}
	}
	m.leave(ctx, !errors.Is(err, errImport), nil)
	return err
}

// ended handles a consumer that returned by itself (an error) or because
// the watchdog fenced it.
func (m *Member) ended() error {
	r := m.run
	m.run = nil
	m.setStatus(func(st *Status) { st.Consuming = None })
	if m.fenced() {
		m.log.Warn("group: stopped consuming: the lease was not renewed in time", "slices", r.slices.String())
		return nil
	}
	if r.err == nil {
		r.err = errors.New("consumer.Run returned")
	}
	return fmt.Errorf("group: consumer over slices %s: %w", r.slices, r.err)
}

func (m *Member) fenced() bool {
	return m.lastRenew.IsZero() || m.clock.Since(m.lastRenew) >= 2*m.opts.LeaseDuration/3
}

// call bounds one API request.
func (m *Member) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, m.interval)
}

// tick is one step: renew, see who is alive, release what is no longer
// this member's, take what is, publish offsets. Its error is fatal.
func (m *Member) tick(ctx context.Context) error {
	now := m.clock.Now()
	defer func() {
		if m.ticked != nil {
			m.ticked(now, m.Status())
		}
	}()
	m.readOnce = false
	if err := m.renew(ctx, m.mirror); err != nil {
		m.log.Warn("group: renew the lease", "error", err)
	}
	fenced := m.fenced()
	m.setStatus(func(st *Status) { st.Fenced = fenced })
	if fenced {
		m.stop()
		if m.lease == nil { // still expire the leases of the departed (our own name's too)
			if _, err := m.members(ctx, now); err != nil {
				m.log.Warn("group: list the members", "error", err)
			}
		}
		return nil
	}
	ro, err := m.members(ctx, now)
	if err != nil {
		m.log.Warn("group: list the members", "error", err)
		return nil
	}
	members, alive := ro.members, ro.alive
	target := None
	if i := slices.Index(members, m.opts.Identity); i >= 0 {
		target = Assign(i, len(members))
	}
	m.setStatus(func(st *Status) { st.Members, st.Target, st.Addresses = members, target, ro.addresses })
	defer m.noteOwners(ctx, alive) // before ticked: its Status shows them
	m.warmFor(target)

	kept := false // runs on over all it owns until the takers are warm
	switch {
	case within(m.owned, target):
		m.keptSince = time.Time{} // nothing to give up (any more)
	case m.keep(members, ro.warm, intersect(m.owned, target), now):
		kept = true
	default:
		if err := m.release(ctx, intersect(m.owned, target)); err != nil {
			m.log.Warn("group: release slices", "keep", formatRange(intersect(m.owned, target)), "error", err)
			return nil
		}
	}
	switch {
	case kept:
	case !isNone(target) && m.owned != target:
		err := m.take(ctx, target, alive)
		switch {
		case errors.Is(err, errBusy):
			m.log.Debug("group: waiting for slices to be released", "target", target.String())
		case errors.Is(err, errImport):
			return err
		case err != nil:
			m.log.Warn("group: take slices", "target", target.String(), "error", err)
		}
	case m.run != nil:
		if err := m.publishOffsets(ctx); err != nil {
			m.log.Warn("group: publish offsets", "error", err)
		}
	}
	if m.mirror != m.owned {
		if err := m.renew(ctx, m.owned); err != nil {
			m.log.Warn("group: publish the owned slices on the lease", "error", err)
			return nil
		}
	}
	if !isNone(m.owned) && m.mirror == m.owned && m.run == nil {
		m.start(m.owned)
	}
	return nil
}

// warmFor runs Options.Warm over the parts of target this member does not
// own (other members may), once per target: a new target stops the Warm
// of the last one.
func (m *Member) warmFor(target offsets.SliceRange) {
	if m.opts.Warm == nil || (m.warming != nil && m.warming.target == target) {
		return
	}
	m.stopWarming()
	ctx, cancel := context.WithCancel(context.Background())
	w := &warming{target: target, cancel: cancel, done: make(chan struct{})}
	m.warming = w
	gains := subtract(target, m.owned)
	if isNone(target) || len(gains) == 0 {
		close(w.done)
		return
	}
	go func() {
		defer close(w.done)
		for _, r := range gains {
			if err := m.opts.Warm(ctx, r); err != nil {
				if ctx.Err() == nil {
					m.log.Warn("group: warm for slices (they are copied after the hand-off instead)", "slices", r.String(), "error", err)
				}
				return
			}
		}
		m.mu.Lock()
		m.warmed = gains
		m.mu.Unlock()
		m.log.Info("group: warm for slices", "slices", formatRanges(gains))
	}()
}

// stopWarming stops the Warm under way and forgets what it warmed.
func (m *Member) stopWarming() {
	if w := m.warming; w != nil {
		w.cancel()
		<-w.done
		m.warming = nil
	}
	m.mu.Lock()
	m.warmed = nil
	m.mu.Unlock()
}

// keep reports whether this member keeps the slices it owns outside keep
// for now, with Options.Warm: while a member whose target (of members)
// takes a part of them is not warm for it (warm), for at most HoldWait
// from the first step that kept them.
func (m *Member) keep(members []string, warm map[string][]offsets.SliceRange, keep offsets.SliceRange, now time.Time) bool {
	if m.opts.Warm == nil {
		return false
	}
	if m.keptSince.IsZero() {
		m.keptSince = now
	}
	cold := coldTakers(members, warm, subtract(m.owned, keep), m.opts.Identity)
	switch {
	case len(cold) == 0:
	case now.Sub(m.keptSince) >= m.opts.HoldWait:
		m.log.Warn("group: giving slices up to members not warm for them after HoldWait", "members", strings.Join(cold, ","), "waited", m.opts.HoldWait.String())
	default:
		return true
	}
	m.keptSince = time.Time{}
	return false
}

// coldTakers are the members (but self) whose target takes a part of
// giving they are not warm for.
func coldTakers(members []string, warm map[string][]offsets.SliceRange, giving []offsets.SliceRange, self string) []string {
	var cold []string
	for k, id := range members {
		if id == self {
			continue
		}
		t := Assign(k, len(members))
		for _, g := range giving {
			// warm[id] is merged (parseRanges): a part it covers is
			// within one of its ranges.
			if part := intersect(g, t); !isNone(part) && !slices.ContainsFunc(warm[id], func(w offsets.SliceRange) bool { return within(part, w) }) {
				cold = append(cold, id)
				break
			}
		}
	}
	return cold
}

// renew writes this member's Lease with the annotation slices, creating it
// if it has none. A Lease deleted or replaced by another member means the
// member lost its claim: it stops consuming and starts over.
func (m *Member) renew(ctx context.Context, slices offsets.SliceRange) error {
	start := m.clock.Now()
	cctx, cancel := m.call(ctx)
	defer cancel()
	leases := m.opts.Client.CoordinationV1().Leases(m.opts.Namespace)
	if m.lease == nil {
		secs := int32((m.opts.LeaseDuration + time.Second - 1) / time.Second)
		l := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{
				Name: m.leases, Namespace: m.opts.Namespace,
				Labels:      map[string]string{LabelGroup: m.opts.Group},
				Annotations: m.annotate(nil, slices),
			},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity: &m.opts.Identity, LeaseDurationSeconds: &secs,
				AcquireTime: &metav1.MicroTime{Time: start}, RenewTime: &metav1.MicroTime{Time: start},
			},
		}
		created, err := leases.Create(cctx, l, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("lease %s exists (a previous instance of %s?): waiting for it to expire", m.leases, m.opts.Identity)
		}
		if err != nil {
			return err
		}
		m.renewed(created, start)
		return nil
	}
	l := m.lease.DeepCopy()
	l.Annotations = m.annotate(l.Annotations, slices)
	l.Spec.RenewTime = &metav1.MicroTime{Time: start}
	updated, err := leases.Update(cctx, l, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		// Our own write landed but its answer was lost? Same UID: still ours.
		cur, gerr := leases.Get(cctx, m.leases, metav1.GetOptions{})
		if gerr == nil && cur.UID == m.lease.UID {
			m.setLease(cur)
			return fmt.Errorf("lease %s changed under us, retrying: %w", m.leases, err)
		}
		if gerr != nil && !apierrors.IsNotFound(gerr) {
			return gerr
		}
		err = apierrors.NewNotFound(coordinationv1.Resource("leases"), m.leases)
	}
	if apierrors.IsNotFound(err) {
		m.lose()
		return fmt.Errorf("lease %s was deleted as expired: %w", m.leases, errLost)
	}
	if err != nil {
		return err
	}
	m.renewed(updated, start)
	return nil
}

// annotate sets the annotations of this member's Lease on a (nil: a new
// map): the slices it owns, its address, whether it is leaving.
func (m *Member) annotate(a map[string]string, slices offsets.SliceRange) map[string]string {
	if a == nil {
		a = map[string]string{}
	}
	a[AnnotationSlices] = formatRange(slices)
	if m.opts.Address != "" {
		a[AnnotationAddress] = m.opts.Address
	}
	if m.leaving {
		a[AnnotationLeaving] = "true"
	} else {
		delete(a, AnnotationLeaving)
	}
	m.mu.Lock()
	warmed := m.warmed
	m.mu.Unlock()
	if len(warmed) > 0 && !m.leaving {
		a[AnnotationWarm] = formatRanges(warmed)
	} else {
		delete(a, AnnotationWarm)
	}
	return a
}

func (m *Member) renewed(l *coordinationv1.Lease, start time.Time) {
	m.setLease(l)
	m.mirror, _ = parseRange(l.Annotations[AnnotationSlices])
	m.lastRenew = start
	if m.watchdog != nil {
		m.watchdog.Stop()
	}
	// Fence: stop consuming 2D/3 after this renewal unless another comes.
	// Others take the slices only after seeing the Lease unchanged for D.
	if r := m.run; r != nil {
		m.watchdog = m.clock.AfterFunc(start.Add(2*m.opts.LeaseDuration/3).Sub(m.clock.Now()), r.cancel)
	}
}

// lose forgets the member's claim after its Lease was deleted: stop (no
// hand-off: others take the slices from the offsets last published).
func (m *Member) lose() {
	m.stop()
	m.stopWarming()
	m.setLease(nil)
	m.owned, m.mirror, m.published = None, None, ""
	m.lastRenew = time.Time{}
	m.setStatus(func(st *Status) { st.Owned = None })
}

// setLease sets lease, and the UID that Hold reads from another goroutine.
func (m *Member) setLease(l *coordinationv1.Lease) {
	m.lease = l
	var uid types.UID
	if l != nil {
		uid = l.UID
	}
	m.mu.Lock()
	m.leaseUID = uid
	m.mu.Unlock()
}

// roster is what a list of the group's Leases says.
type roster struct {
	members   []string                        // identities of the live members, sorted
	alive     map[types.UID]bool              // every Lease still there
	addresses map[string]string               // identity → AnnotationAddress, every Lease still there
	warm      map[string][]offsets.SliceRange // identity → AnnotationWarm, of the members
}

// members lists the group's Leases, deletes those seen unchanged for their
// duration, and returns the identities of the live ones that are not
// leaving (sorted), the UIDs of every Lease still there, and their
// addresses.
func (m *Member) members(ctx context.Context, now time.Time) (roster, error) {
	cctx, cancel := m.call(ctx)
	defer cancel()
	leases := m.opts.Client.CoordinationV1().Leases(m.opts.Namespace)
	list, err := leases.List(cctx, metav1.ListOptions{LabelSelector: LabelGroup + "=" + m.opts.Group})
	if err != nil {
		return roster{}, err
	}
	var members []string
	alive := map[types.UID]bool{}
	addresses := map[string]string{}
	warm := map[string][]offsets.SliceRange{}
	seen := map[types.UID]observed{}
	for _, l := range list.Items {
		o, ok := m.seen[l.UID]
		if !ok || o.resourceVersion != l.ResourceVersion {
			o = observed{resourceVersion: l.ResourceVersion, at: now}
		}
		seen[l.UID] = o
		mine := m.lease != nil && l.UID == m.lease.UID
		d := m.opts.LeaseDuration
		if l.Spec.LeaseDurationSeconds != nil {
			d = max(d, time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second)
		}
		if !mine && now.Sub(o.at) >= d {
			// Expired: delete it, unless it changed meanwhile. Once gone,
			// its holder cannot renew and has fenced itself (after 2D/3).
			uid, rv := l.UID, l.ResourceVersion
			err := leases.Delete(cctx, l.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
			switch {
			case err == nil || apierrors.IsNotFound(err):
				m.log.Info("group: deleted an expired lease", "lease", l.Name, "unchanged_for", now.Sub(o.at).String())
				delete(seen, l.UID)
				continue
			case apierrors.IsConflict(err):
				seen[l.UID] = observed{at: now} // it moved: alive
			default:
				m.log.Warn("group: delete an expired lease", "lease", l.Name, "error", err)
			}
			alive[l.UID] = true
			if l.Spec.HolderIdentity != nil {
				addresses[*l.Spec.HolderIdentity] = l.Annotations[AnnotationAddress]
			}
			continue // expired or unknown: not a member for the assignment
		}
		alive[l.UID] = true
		if l.Spec.HolderIdentity == nil {
			continue
		}
		addresses[*l.Spec.HolderIdentity] = l.Annotations[AnnotationAddress]
		// A leaving member is alive (its owner entry stands) but gets no
		// slices: the others take its slices at once.
		if (mine || l.Name != m.leases) && l.Annotations[AnnotationLeaving] != "true" {
			members = append(members, *l.Spec.HolderIdentity)
			if rs, err := parseRanges(l.Annotations[AnnotationWarm]); err == nil && len(rs) > 0 {
				warm[*l.Spec.HolderIdentity] = rs
			}
		}
	}
	m.seen = seen
	slices.Sort(members)
	return roster{members: slices.Compact(members), alive: alive, addresses: addresses, warm: warm}, nil
}

// release stops the consumer and gives up the owned slices outside keep:
// the Lease annotation shrinks first, then, in one write of the ConfigMap,
// the offsets of the released slices (exact: the consumer has stopped)
// and the smaller claim.
func (m *Member) release(ctx context.Context, keep offsets.SliceRange) error {
	m.stop()
	if !within(m.mirror, keep) {
		if err := m.renew(ctx, keep); err != nil {
			return err
		}
	}
	owned := m.owned
	err := m.updateRun(ctx, func(s *state) error {
		if err := m.checkClaim(s); err != nil {
			return err
		}
		for _, r := range subtract(owned, keep) {
			if err := m.exportOffsets(s, r); err != nil {
				return err
			}
		}
		if isNone(keep) {
			delete(s.owners, m.opts.Identity)
		} else {
			s.owners[m.opts.Identity] = owner{slices: keep, uid: m.lease.UID}
		}
		return nil
	})
	if errors.Is(err, errLost) {
		m.lose()
	}
	if err != nil {
		return err
	}
	m.log.Info("group: released slices", "released", fmt.Sprint(subtract(owned, keep)), "keep", formatRange(keep))
	m.owned, m.published = keep, ""
	m.setStatus(func(st *Status) { st.Owned = keep })
	return nil
}

// take claims target in the ConfigMap if no live member owns any of its
// slices this member does not own yet, and imports their handed-off
// offsets into the member's store.
func (m *Member) take(ctx context.Context, target offsets.SliceRange, alive map[types.UID]bool) error {
	want := subtract(target, m.owned)
	var imported []map[string][]fragment
	err := m.updateRun(ctx, func(s *state) error {
		if err := m.checkClaim(s); err != nil {
			return err
		}
		for id, o := range s.owners {
			switch {
			case id == m.opts.Identity:
			case !alive[o.uid]:
				delete(s.owners, id) // its Lease is gone: void
			case overlapsAny(o.slices, want):
				return fmt.Errorf("%w: %s owns %s", errBusy, id, o.slices)
			}
		}
		s.owners[m.opts.Identity] = owner{slices: target, uid: m.lease.UID}
		imported = imported[:0]
		for _, r := range want {
			if m.opts.Runner == nil { // a Runner starts from its own positions
				imported = append(imported, s.within(r))
			}
		}
		return nil
	})
	if errors.Is(err, errLost) {
		m.lose()
	}
	if err != nil {
		return err
	}
	m.stop()
	m.owned, m.published = target, ""
	m.setStatus(func(st *Status) { st.Owned = target })
	// Its own now: nobody waits for this member to warm, and a Warm still
	// under way (its giver did not wait for it) would only hold up the
	// copy the Runner makes.
	m.stopWarming()
	for _, byJournal := range imported {
		if err := importOffsets(m.opts.Consumer.Store, m.opts.Consumer.Name, byJournal); err != nil {
			// Without them the consumer would start wrong: stop, leave
			// without handing anything off, and let the others take the
			// slices from the offsets in the ConfigMap.
			return fmt.Errorf("%w: %w", errImport, err)
		}
	}
	m.log.Info("group: took slices", "target", target.String(), "taken", fmt.Sprint(want))
	return nil
}

// exportOffsets puts the stored offsets of the slices r into s, for a
// Consumer; a Runner hands nothing over.
func (m *Member) exportOffsets(s *state, r offsets.SliceRange) error {
	if m.opts.Runner != nil {
		return nil
	}
	return exportOffsets(s, m.opts.Consumer.Store, m.opts.Consumer.Name, r)
}

func overlapsAny(r offsets.SliceRange, rs []offsets.SliceRange) bool {
	for _, x := range rs {
		if r.Overlaps(x) {
			return true
		}
	}
	return false
}

// checkClaim fails with errLost if the ConfigMap does not hold this
// member's claim (made under its current Lease) while it owns slices. An
// entry of an earlier Lease of the same identity is void: that Lease is
// gone, or this one could not have been created.
func (m *Member) checkClaim(s *state) error {
	if m.lease == nil {
		return errLost
	}
	if isNone(m.owned) {
		return nil
	}
	if o, ok := s.owners[m.opts.Identity]; !ok || o.uid != m.lease.UID || !within(m.owned, o.slices) {
		return fmt.Errorf("%w: the ConfigMap no longer says this member owns %s", errLost, m.owned)
	}
	return nil
}

// publishOffsets writes the stored offsets of the owned slices to the
// ConfigMap (when they moved), so that a member taking them after a crash
// of this one re-applies at most what came after.
func (m *Member) publishOffsets(ctx context.Context) error {
	if m.opts.Runner != nil {
		return nil // nothing to publish: a Runner keeps its own positions
	}
	probe := &state{offsets: map[string][]fragment{}}
	if err := m.exportOffsets(probe, m.owned); err != nil {
		return err
	}
	enc := probe.encode(nil)
	flat := fmt.Sprint(enc)
	if flat == m.published {
		return nil
	}
	err := m.updateRun(ctx, func(s *state) error {
		if err := m.checkClaim(s); err != nil {
			return err
		}
		return m.exportOffsets(s, m.owned)
	})
	if errors.Is(err, errLost) {
		m.lose()
	}
	if err == nil {
		m.published = flat
	}
	return err
}

// updateRun is update from Run's goroutine: it also keeps the owner
// entries it last read (or wrote) for Status.
func (m *Member) updateRun(ctx context.Context, fn func(*state) error) error {
	var read, wrote map[string]owner
	err := m.update(ctx, func(s *state) error {
		read, wrote = maps.Clone(s.owners), nil
		if err := fn(s); err != nil {
			return err
		}
		wrote = s.owners
		return nil
	})
	switch {
	case err == nil && wrote != nil:
		m.owners, m.readOnce = wrote, true
	case read != nil:
		m.owners, m.readOnce = read, true
	}
	return err
}

// readState reads the group's ConfigMap (none yet: an empty state).
func (m *Member) readState(ctx context.Context) (*state, error) {
	_, s, err := m.getState(ctx)
	return s, err
}

// getState gets the group's ConfigMap (nil: none yet) and decodes it.
func (m *Member) getState(ctx context.Context) (*corev1.ConfigMap, *state, error) {
	cctx, cancel := m.call(ctx)
	defer cancel()
	cm, err := m.opts.Client.CoreV1().ConfigMaps(m.opts.Namespace).Get(cctx, m.cmName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm, err = nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	s, err := decodeState(cm)
	return cm, s, err
}

// noteOwners shows in Status the owner entries of the live Leases, reading
// the ConfigMap first with Options.Holds if this step did not.
func (m *Member) noteOwners(ctx context.Context, alive map[types.UID]bool) {
	if m.opts.Holds && !m.readOnce {
		s, err := m.readState(ctx)
		if err != nil {
			m.log.Warn("group: read the owners", "error", err)
			return
		}
		m.owners, m.readOnce = s.owners, true
	}
	owners := map[string]offsets.SliceRange{}
	for id, o := range m.owners {
		if alive[o.uid] {
			owners[id] = o.slices
		}
	}
	m.setStatus(func(st *Status) { st.Owners = owners })
}

// update applies fn to the group's ConfigMap with compare-and-swap,
// retrying on conflicts; fn returning errNoChange ends it without a
// write. It is safe from any goroutine.
func (m *Member) update(ctx context.Context, fn func(*state) error) error {
	cms := m.opts.Client.CoreV1().ConfigMaps(m.opts.Namespace)
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		cm, s, err := m.getState(ctx)
		if err != nil {
			return err
		}
		switch err := fn(s); {
		case errors.Is(err, errNoChange):
			return nil
		case err != nil:
			return err
		}
		cctx, cancel := m.call(ctx)
		if cm == nil {
			cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: m.cmName, Namespace: m.opts.Namespace, Labels: map[string]string{LabelGroup: m.opts.Group}}}
			cm.Data = s.encode(nil)
			_, err = cms.Create(cctx, cm, metav1.CreateOptions{})
		} else {
			cm = cm.DeepCopy()
			cm.Data = s.encode(cm.Data)
			_, err = cms.Update(cctx, cm, metav1.UpdateOptions{})
		}
		cancel()
		if (apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)) && attempt < 20 {
			continue
		}
		return err
	}
}

// start runs the consumer over slices.
func (m *Member) start(slices offsets.SliceRange) {
	m.stop()
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{slices: slices, cancel: cancel, done: make(chan struct{})}
	m.run = r
	m.watchdog = m.clock.AfterFunc(m.lastRenew.Add(2*m.opts.LeaseDuration/3).Sub(m.clock.Now()), cancel)
	go func() {
		defer close(r.done)
		r.err = m.consume(ctx, slices)
	}()
	m.log.Info("group: consuming", "slices", slices.String())
	m.setStatus(func(st *Status) { st.Consuming = slices })
}

// stop stops the consumer and waits until it saved its offsets.
func (m *Member) stop() {
	r := m.run
	if r == nil {
		return
	}
	m.run = nil
	r.cancel()
	<-r.done
	if r.err != nil && !errors.Is(r.err, context.Canceled) {
		m.log.Warn("group: the consumer ended with an error when stopped", "slices", r.slices.String(), "error", r.err)
	}
	m.setStatus(func(st *Status) { st.Consuming = None })
}

// leaveAttempts bounds the hand-off attempts on leaving.
const leaveAttempts = 3

// leave hands every owned slice off (if handOff) and deletes the Lease.
// Given ticks (ctx ended) and with Options.Holds, it keeps the Lease
// between the two, marked leaving, while the members that took its slices
// have not taken its holdings over (awaitTakeOver).
func (m *Member) leave(ctx context.Context, handOff bool, ticks <-chan time.Time) {
	base := context.WithoutCancel(ctx)
	m.stopWarming()
	var deadline clock.Timer
	if m.opts.Holds && ticks != nil && m.lease != nil {
		// Set before the Lease says leaving: HoldWait counts from here.
		deadline = m.clock.NewTimer(m.opts.HoldWait)
		defer deadline.Stop()
		m.leaving = true // the next renewal marks the Lease
		if handOff && m.opts.Warm != nil {
			m.awaitWarm(base, ticks, deadline.C())
		}
	}
	ctx, cancel := context.WithTimeout(base, m.opts.LeaseDuration)
	defer cancel()
	m.stop()
	if m.watchdog != nil {
		m.watchdog.Stop()
	}
	if m.lease == nil {
		return
	}
	// A hand-off that fails for a passing reason (an API call timed out)
	// is tried again, a few times while the Lease is still this member's:
	// without it the others take the slices from the offsets last
	// published.
	for attempt := 1; handOff && !isNone(m.owned) && m.lease != nil; attempt++ {
		err := m.release(ctx, None)
		if err == nil {
			break
		}
		if attempt == leaveAttempts || m.lease == nil || ctx.Err() != nil {
			m.log.Warn("group: hand the slices off on leaving (others take them from the offsets last published)", "error", err)
			break
		}
		m.log.Info("group: hand-off on leaving failed, trying again", "error", err)
	}
	// Still owning slices (the hand-off failed), the Lease would keep the
	// others from taking them: delete it at once.
	if deadline != nil && m.lease != nil && isNone(m.owned) {
		m.awaitTakeOver(base, ticks, deadline.C())
	}
	if m.lease == nil {
		return
	}
	uid := m.lease.UID
	cctx, ccancel := m.call(base)
	defer ccancel()
	err := m.opts.Client.CoordinationV1().Leases(m.opts.Namespace).Delete(cctx, m.leases, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		m.log.Warn("group: delete the lease on leaving (it expires by itself)", "error", err)
	}
	m.setLease(nil)
	m.log.Info("group: left")
}

// awaitWarm keeps the slices this leaving member owns, its Runner running
// and its Lease marked leaving and renewed at every tick, until the
// members taking them are warm for them (Options.Warm), or until deadline.
func (m *Member) awaitWarm(ctx context.Context, ticks, deadline <-chan time.Time) {
	for !isNone(m.owned) && m.lease != nil {
		now := m.clock.Now()
		if err := m.renew(ctx, m.mirror); err != nil {
			m.log.Warn("group: renew the lease while leaving", "error", err)
		}
		ro, err := m.members(ctx, now)
		if err != nil {
			m.log.Warn("group: list the members while leaving", "error", err)
		}
		if m.waiting != nil {
			m.waiting(now)
		}
		if err == nil && (len(ro.members) == 0 || len(coldTakers(ro.members, ro.warm, []offsets.SliceRange{m.owned}, m.opts.Identity)) == 0) {
			return
		}
		select {
		case <-deadline:
			m.log.Warn("group: handing slices off to members not warm for them", "slices", m.owned.String(), "waited", m.opts.HoldWait.String())
			return
		case <-ticks:
		}
	}
}

// awaitTakeOver keeps the Lease, marked leaving and renewed at every tick,
// while the ConfigMap names this member holder of slices, until deadline:
// the members that took its slices copy their history from it meanwhile.
func (m *Member) awaitTakeOver(ctx context.Context, ticks, deadline <-chan time.Time) {
	if m.lease.Annotations[AnnotationLeaving] != "true" {
		if err := m.renew(ctx, None); err != nil {
			m.log.Warn("group: mark the lease leaving", "error", err)
			if m.lease == nil {
				return
			}
		}
	}
	var held []offsets.SliceRange
	for {
		now := m.clock.Now()
		s, err := m.readState(ctx)
		if err == nil {
			held = s.holds[m.opts.Identity]
		}
		if m.waiting != nil {
			m.waiting(now)
		}
		switch {
		case err != nil:
			m.log.Warn("group: read the holdings while leaving", "error", err)
		case len(held) == 0:
			return
		default:
			// Nobody to take them over (the last member leaves, or the only
			// one restarts): waiting would only hold the pod up.
			if ro, err := m.members(ctx, now); err == nil && len(ro.members) == 0 {
				m.log.Info("group: left holding slices, with no member to take them over: the next member to own them copies them from this pod once it is back",
					"slices", formatRanges(held))
				return
			}
		}
		select {
		case <-deadline:
			if held == nil { // every read failed
				m.log.Warn("group: left without knowing whether its holdings were taken over: if not, they wait for this pod to come back", "waited", m.opts.HoldWait.String())
				return
			}
			m.log.Warn("group: left holding slices nobody has taken over: they wait for this pod to come back",
				"slices", formatRanges(held), "waited", m.opts.HoldWait.String())
			return
		case <-ticks:
			if err := m.renew(ctx, None); err != nil {
				m.log.Warn("group: renew the lease while leaving", "error", err)
				if m.lease == nil {
					return // deleted as expired: nothing left to keep
				}
			}
		}
	}
}

// Holding is a part of the slices that a member's journal holds the whole
// history of: where the member taking them copies it from.
type Holding struct {
	// Identity of the holder (its pod name).
	Identity string
	// Slices it holds, a contiguous range.
	Slices offsets.SliceRange
	// Address of the holder (AnnotationAddress on its Lease, leaving or
	// not), or "" when it has no Lease: it crashed or left, and its
	// holdings wait for it to come back.
	Address string
}

// errNoHolds: Hold and Holders without Options.Holds.
var errNoHolds = errors.New("group: Hold and Holders need Options.Holds (with a Runner and an Address)")

// Holders reads the group's ConfigMap and returns who holds which part of
// r, sorted by slice and clipped to r. Slices nobody holds are absent:
// their history was never written anywhere, and the first member to own
// them holds them by calling Hold. It needs Options.Holds and may be called
// from any goroutine.
func (m *Member) Holders(ctx context.Context, r offsets.SliceRange) ([]Holding, error) {
	if !m.opts.Holds {
		return nil, errNoHolds
	}
	if err := r.Validate(); err != nil {
		return nil, fmt.Errorf("group: Holders: %w", err)
	}
	s, err := m.readState(ctx)
	if err != nil {
		return nil, fmt.Errorf("group: read the holdings: %w", err)
	}
	var out []Holding
	for id, held := range s.holds {
		for _, h := range held {
			if c := intersect(h, r); !isNone(c) {
				out = append(out, Holding{Identity: id, Slices: c})
			}
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Slices.First < out[j].Slices.First })
	cctx, cancel := m.call(ctx)
	defer cancel()
	list, err := m.opts.Client.CoordinationV1().Leases(m.opts.Namespace).List(cctx, metav1.ListOptions{LabelSelector: LabelGroup + "=" + m.opts.Group})
	if err != nil {
		return nil, fmt.Errorf("group: list the members for the holders' addresses: %w", err)
	}
	addresses := map[string]string{}
	for _, l := range list.Items {
		if l.Spec.HolderIdentity != nil {
			addresses[*l.Spec.HolderIdentity] = l.Annotations[AnnotationAddress]
		}
	}
	for i := range out {
		out[i].Address = addresses[out[i].Identity]
	}
	return out, nil
}

// Hold records in the group's ConfigMap, in one compare-and-swap, that
// this member's journal holds the whole history of the slices r: no other
// member holds them any more. Call it once that history is copied into
// this member's journal (from the holders Holders names), typically from
// the Runner. It fails with an error wrapping ErrNotOwner, changing
// nothing, unless the ConfigMap says this member, under its current Lease,
// owns all of r. It needs Options.Holds and may be called from any
// goroutine.
func (m *Member) Hold(ctx context.Context, r offsets.SliceRange) error {
	if !m.opts.Holds {
		return errNoHolds
	}
	if err := r.Validate(); err != nil {
		return fmt.Errorf("group: Hold: %w", err)
	}
	m.mu.Lock()
	uid := m.leaseUID
	m.mu.Unlock()
	changed := false
	err := m.update(ctx, func(s *state) error {
		o, ok := s.owners[m.opts.Identity]
		if uid == "" || !ok || o.uid != uid || !within(r, o.slices) {
			owns := "nothing"
			if ok && o.uid == uid {
				owns = o.slices.String()
			}
			return fmt.Errorf("%w: %s does not own all of %s in ConfigMap %s (it owns %s)", ErrNotOwner, m.opts.Identity, r, m.cmName, owns)
		}
		if changed = s.hold(m.opts.Identity, r); !changed {
			return errNoChange
		}
		return nil
	})
	if err != nil {
		return err
	}
	if changed {
		m.log.Info("group: holds slices", "slices", r.String())
	}
	return nil
}

func (m *Member) setStatus(f func(*Status)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f(&m.status)
}

package primary_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology/primary"
)

// A history checker for single-writer entities: clients record every
// operation with its invoke and return time and result; checkRun compares
// them with the final history of each entity.

type opKind int

const (
	opWrite      opKind = iota
	opRead              // local, eventually consistent
	opStrongRead        // linearizable
)

// op is one recorded operation of one client.
type op struct {
	client    int
	region    string
	entity    string // type/id
	kind      opKind
	value     string // written (one event per write)
	call, ret int64  // ns since the run started
	err       error
	version   uint64   // an acknowledged write's version
	values    []string // what a read returned (payloads, handovers left out)
}

// finalEvent is one version of a final history; handovers have no value.
type finalEvent struct {
	version  uint64
	value    string
	handover bool
}

// final is an entity's history after convergence, the same in every region.
type final struct {
	events  []finalEvent
	outside int // events not in the history: a fork
}

func finalOf(h primary.History) final {
	f := final{outside: len(h.Outside)}
	for _, e := range h.Events {
		f.events = append(f.events, finalEvent{version: primary.Version(e), value: string(e.Payload), handover: e.EventType == primary.HandoverEventType})
	}
	return f
}

func (f final) values() []string {
	var out []string
	for _, e := range f.events {
		if !e.handover {
			out = append(out, e.value)
		}
	}
	return out
}

// checkRun returns every violation of: each entity's history is one
// sequence 1..n with no fork; every acknowledged write is in it exactly
// once, at its version, and no write is in it twice; every local read is a
// prefix of it; writes and strong reads of the entities in linear are
// linearizable (a log appended to). A write that failed may still have been
// applied: if its value is in the final history it is taken as applied at
// some time after its call, otherwise as never applied (every client has
// returned and every region converged before the final history is read).
func checkRun(ops []op, finals map[string]final, linear map[string]bool) []error {
	var errs []error
	for entity, f := range finals {
		for i, e := range f.events {
			if e.version != uint64(i+1) {
				errs = append(errs, fmt.Errorf("%s: event %d has version %d: a gap", entity, i, e.version))
			}
		}
		if f.outside > 0 {
			errs = append(errs, fmt.Errorf("%s: %d events outside the history: a fork", entity, f.outside))
		}
		seen := map[string]bool{}
		for _, v := range f.values() {
			if seen[v] {
				errs = append(errs, fmt.Errorf("%s: write %q is in the history twice", entity, v))
			}
			seen[v] = true
		}
	}
	for _, o := range ops {
		f := finals[o.entity]
		switch {
		case o.err != nil:
		case o.kind == opWrite:
			if o.version == 0 || o.version > uint64(len(f.events)) || f.events[o.version-1].value != o.value || f.events[o.version-1].handover {
				errs = append(errs, fmt.Errorf("%s: acknowledged write %q (client %d in %s) at version %d is not there in the final history", o.entity, o.value, o.client, o.region, o.version))
			}
		case o.kind == opRead:
			if all := f.values(); len(o.values) > len(all) || !slices.Equal(o.values, all[:len(o.values)]) {
				errs = append(errs, fmt.Errorf("%s: local read in %s returned %v, not a prefix of the history %v", o.entity, o.region, o.values, all))
			}
		}
	}
	// What linearizability of a log implies, checked directly for clear
	// messages: a strong read returns a prefix of the history, including
	// every write acknowledged before it was called, nothing written after
	// it returned, and no less than a strong read that returned before it
	// was called.
	var reads, writes []op
	for _, o := range ops {
		switch {
		case !linear[o.entity] || o.err != nil:
		case o.kind == opStrongRead:
			reads = append(reads, o)
		case o.kind == opWrite:
			writes = append(writes, o)
		}
	}
	calls := map[[2]string]int64{}
	for _, o := range ops {
		if o.kind == opWrite {
			calls[[2]string{o.entity, o.value}] = o.call
		}
	}
	for _, r := range reads {
		if all := finals[r.entity].values(); len(r.values) > len(all) || !slices.Equal(r.values, all[:len(r.values)]) {
			errs = append(errs, fmt.Errorf("%s: strong read in %s returned %v, not a prefix of the history %v", r.entity, r.region, r.values, all))
		}
		for _, v := range r.values {
			if at, ok := calls[[2]string{r.entity, v}]; ok && at > r.ret {
				errs = append(errs, fmt.Errorf("%s: strong read in %s [%d, %d] returned %q, written only from %d", r.entity, r.region, r.call, r.ret, v, at))
			}
		}
		for _, w := range writes {
			if w.entity == r.entity && w.ret < r.call && !slices.Contains(r.values, w.value) {
				errs = append(errs, fmt.Errorf("%s: strong read in %s [%d, %d] misses %q acknowledged at %d", r.entity, r.region, r.call, r.ret, w.value, w.ret))
			}
		}
		for _, r2 := range reads {
			if r2.entity == r.entity && r2.ret < r.call && len(r2.values) > len(r.values) {
				errs = append(errs, fmt.Errorf("%s: strong read in %s [%d, %d] returned %d values, fewer than one in %s that returned at %d", r.entity, r.region, r.call, r.ret, len(r.values), r2.region, r2.ret))
			}
		}
	}
	if len(errs) > 0 {
		return errs
	}

	if err := checkLinearizable(ops, finals, linear); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// checkLinearizable checks with porcupine that the writes and strong reads
// of the entities in linear are linearizable as an append-only log per
// entity (see checkRun for failed writes).
func checkLinearizable(ops []op, finals map[string]final, linear map[string]bool) error {
	// A failed write in the final history was applied before the first
	// read that returned it: that bounds its interval (a sound narrowing
	// that keeps the search small).
	observed := map[[2]string]int64{}
	for _, o := range ops {
		if (o.kind == opRead || o.kind == opStrongRead) && o.err == nil {
			for _, v := range o.values {
				if k := [2]string{o.entity, v}; observed[k] == 0 || o.ret < observed[k] {
					observed[k] = o.ret
				}
			}
		}
	}
	var history []porcupine.Operation
	for _, o := range ops {
		if !linear[o.entity] || o.kind == opRead || (o.kind == opStrongRead && o.err != nil) {
			continue
		}
		p := porcupine.Operation{ClientId: o.client, Call: o.call, Return: o.ret,
			Input: logInput{entity: o.entity, write: o.kind == opWrite, value: o.value}, Output: strings.Join(o.values, ",")}
		if o.err != nil {
			if !slices.Contains(finals[o.entity].values(), o.value) {
				continue // never applied: the final history holds every applied write
			}
			p.Return = math.MaxInt64 // applied, at some time after its call
			if at, ok := observed[[2]string{o.entity, o.value}]; ok {
				p.Return = at
			}
		}
		history = append(history, p)
	}
	res, info := porcupine.CheckOperationsVerbose(logModel(finals), history, time.Minute)
	if res == porcupine.Ok {
		return nil
	}
	msg := fmt.Sprintf("writes and strong reads are not linearizable (porcupine: %s)", res)
	for _, part := range info.PartialLinearizationsOperations() {
		if len(part) > 0 && len(part[0]) > 0 {
			msg += fmt.Sprintf("; %s: longest linearizable prefix %d ops", part[0][0].Input.(logInput).entity, len(part[0]))
		}
	}
	return errors.New(msg)
}

type logInput struct {
	entity string
	write  bool
	value  string
}

// logModel is an append-only log per entity: a write appends its value, a
// strong read returns every value so far (joined with commas). The final
// strong read fixes the order of the appends, so the state is how many of
// the final history's values are appended and a write must be the next one:
// the same answer as a model keeping the values, found without trying the
// orders the final read rules out.
func logModel(finals map[string]final) porcupine.Model {
	values := map[string][]string{}
	for entity, f := range finals {
		values[entity] = f.values()
	}
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			by := map[string][]porcupine.Operation{}
			for _, o := range history {
				e := o.Input.(logInput).entity
				by[e] = append(by[e], o)
			}
			var out [][]porcupine.Operation
			for _, ops := range by {
				out = append(out, ops)
			}
			return out
		},
		Init: func() any { return 0 },
		Step: func(state, input, output any) (bool, any) {
			in, n := input.(logInput), state.(int)
			all := values[in.entity]
			if in.write {
				return n < len(all) && all[n] == in.value, n + 1
			}
			return output.(string) == strings.Join(all[:n], ","), n
		},
		DescribeOperation: func(input, output any) string {
			if in := input.(logInput); in.write {
				return "append " + in.value
			}
			return "read " + output.(string)
		},
	}
}

// The checker accepts a correct run and rejects each kind of bad one.
func TestHistoryCheckerRejectsBadRuns(t *testing.T) {
	good := func() ([]op, map[string]final) {
		return []op{
				{client: 0, entity: "a", kind: opWrite, value: "x", call: 0, ret: 10, version: 2},
				{client: 1, entity: "a", kind: opStrongRead, call: 5, ret: 6, values: nil},
				{client: 1, entity: "a", kind: opStrongRead, call: 11, ret: 12, values: []string{"x"}},
				{client: 2, entity: "a", kind: opWrite, value: "y", call: 11, ret: 20, err: errors.New("unavailable")},
				{client: 1, entity: "a", kind: opStrongRead, call: 21, ret: 22, values: []string{"x"}},
				{client: 0, entity: "a", kind: opRead, call: 30, ret: 31, values: []string{"x"}},
				{client: 1, entity: "a", kind: opStrongRead, call: 40, ret: 41, values: []string{"x", "y"}},
			}, map[string]final{"a": {events: []finalEvent{
				{version: 1, handover: true}, {version: 2, value: "x"}, {version: 3, value: "y"},
			}}}
	}
	linear := map[string]bool{"a": true}
	ops, finals := good()
	if errs := checkRun(ops, finals, linear); len(errs) > 0 {
		t.Fatalf("a correct run is rejected: %v", errs)
	}
	for name, c := range map[string]struct {
		spoil func([]op, map[string]final) ([]op, map[string]final)
		says  string
	}{
		"acknowledged write lost": {func(o []op, f map[string]final) ([]op, map[string]final) {
			f["a"] = final{events: []finalEvent{{version: 1, handover: true}, {version: 2, value: "y"}}}
			return o, f
		}, "acknowledged write"},
		"write at another version": {func(o []op, f map[string]final) ([]op, map[string]final) {
			o[0].version = 3
			return o, f
		}, "at version 3"},
		"fork": {func(o []op, f map[string]final) ([]op, map[string]final) {
			fe := f["a"]
			fe.outside = 1
			f["a"] = fe
			return o, f
		}, "fork"},
		"gap": {func(o []op, f map[string]final) ([]op, map[string]final) {
			f["a"].events[2].version = 4
			return o, f
		}, "gap"},
		"write twice": {func(o []op, f map[string]final) ([]op, map[string]final) {
			fe := f["a"]
			fe.events = append(fe.events, finalEvent{version: 4, value: "x"})
			f["a"] = fe
			return o, f
		}, "twice"},
		"stale strong read": {func(o []op, f map[string]final) ([]op, map[string]final) {
			o[2].values = nil // after the write returned, the read misses it
			return o, f
		}, "misses"},
		"read goes back": {func(o []op, f map[string]final) ([]op, map[string]final) {
			o = append(o, op{client: 3, entity: "a", kind: opStrongRead, call: 50, ret: 51, values: []string{"x"}})
			return o, f
		}, "fewer"},
		"local read not a prefix": {func(o []op, f map[string]final) ([]op, map[string]final) {
			o[5].values = []string{"y"}
			return o, f
		}, "not a prefix"},
	} {
		ops, finals := good()
		ops, finals = c.spoil(ops, finals)
		errs := checkRun(ops, finals, linear)
		if !strings.Contains(fmt.Sprint(errs), c.says) {
			t.Errorf("%s: checker says %v; want an error saying %q", name, errs, c.says)
		}
		// Porcupine on its own rejects what breaks linearizability.
		if c.says == "misses" || c.says == "fewer" {
			if err := checkLinearizable(ops, finals, linear); err == nil || !strings.Contains(err.Error(), "not linearizable") {
				t.Errorf("%s: porcupine says %v", name, err)
			}
		}
	}
	// A failed write that the history holds counts as applied; one it
	// does not hold, as never applied.
	ops, finals = good()
	finals["a"] = final{events: finals["a"].events[:2]}
	ops = ops[:len(ops)-1] // no read saw y
	if err := checkLinearizable(ops, finals, linear); err != nil {
		t.Errorf("a failed write that never applied: %v", err)
	}
	ops, finals = good()
	ops[4].values = []string{"x", "y"} // y (failed) seen at 22: applied before
	if err := checkLinearizable(ops, finals, linear); err != nil {
		t.Errorf("a failed write that applied: %v", err)
	}
}

// recorder keeps the operations of a run.
type recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []op
}

func (r *recorder) now() int64 { return int64(time.Since(r.start)) }

func (r *recorder) add(o op) {
	r.mu.Lock()
	r.ops = append(r.ops, o)
	r.mu.Unlock()
}

// writeFunc writes value as the one event of entity typ/eid and returns
// its version.
type writeFunc func(ctx context.Context, typ, eid, value string) (uint64, error)

// runOps is a client in region: it writes to the entities through write,
// and reads them (locally or strongly) from its region's Primary, half
// writes and half reads, recording each operation, until stop. seed and id
// choose its operations.
func (pw *primaryWorld) runOps(rec *recorder, id int, seed uint64, region string, write writeFunc, entities []string, stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(uint64(id), seed))
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		entity := entities[rng.IntN(len(entities))]
		typ, eid, _ := strings.Cut(entity, "/")
		o := op{client: id, region: region, entity: entity}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		o.call = rec.now()
		var h primary.History
		switch r := rng.IntN(4); {
		case r < 2:
			o.kind, o.value = opWrite, fmt.Sprintf("%s-%d-%d", region, id, n)
			o.version, o.err = write(ctx, typ, eid, o.value)
		case r == 2:
			o.kind = opRead
			h, o.err = pw.primary(region).Read(ctx, typ, eid)
		default:
			o.kind = opStrongRead
			h, o.err = pw.primary(region).ReadStrong(ctx, typ, eid)
		}
		o.ret = rec.now()
		cancel()
		o.values = values(h)
		rec.add(o)
		if o.err != nil {
			time.Sleep(5 * time.Millisecond) // pacing: a client does not spin on a cut link
		}
	}
}

// runClient is a client of region's Primary: odd ids publish through it,
// as a service does, even ids write through it.
func (pw *primaryWorld) runClient(rec *recorder, id int, region string, entities []string, stop <-chan struct{}) {
	write := func(ctx context.Context, typ, eid, value string) (uint64, error) {
		if id%2 == 1 {
			e := ev(value)
			e.EntityType, e.EntityId = typ, eid
			appended, err := pw.primary(region).Publish(ctx, []*streamdv1.Event{e})
			if err != nil {
				return 0, err
			}
			return appended[0].Version, nil
		}
		w, err := pw.primary(region).Write(ctx, typ, eid, primary.AnyVersion, ev(value))
		if err != nil {
			return 0, err
		}
		return w.Versions[0], nil
	}
	pw.runOps(rec, id, 9, region, write, entities, stop)
}

// Many clients in three regions write (half through Write, half through
// Publish) and read the same few entities of both single-writer modes while links are cut and restored, regions
// restart and the pinned primary changes; the run is then checked.
func TestPrimaryHistoryUnderFaults(t *testing.T) {
	pw := newPrimaryWorld(t, testConfig, "eu", "us", "ap")
	pw.StartAll()
	entities := []string{"account/a1", "account/a2", "order/o1", "order/o2"}
	regions := []string{"eu", "us", "ap"}
	rec := &recorder{start: time.Now()}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 9 {
		wg.Go(func() { pw.runClient(rec, i, regions[i%3], entities, stop) })
	}
	phase := func(d time.Duration, what string) {
		t.Logf("%v: %s", time.Since(rec.start).Round(time.Millisecond), what)
		time.Sleep(d) // the nemesis's schedule, not synchronisation
	}
	phase(400*time.Millisecond, "all links up")
	pw.cut("eu", "us")
	phase(500*time.Millisecond, "eu-us cut")
	pw.restore("eu", "us")
	pw.cut("ap", "eu")
	phase(500*time.Millisecond, "ap-eu cut")
	pw.restore("ap", "eu")
	pw.restart("us")
	phase(400*time.Millisecond, "us restarted")
	if err := pw.primary("ap").SetPrimary(context.Background(), "order", "us"); err != nil {
		t.Fatal(err)
	}
	phase(400*time.Millisecond, "order pinned to us")
	pw.restart("eu")
	pw.cut("us", "ap")
	phase(500*time.Millisecond, "eu restarted, us-ap cut")
	pw.restore("us", "ap")
	pw.restart("ap")
	phase(400*time.Millisecond, "ap restarted")
	close(stop)
	wg.Wait()

	finals := pw.converge(rec, entities, regions)
	if counts := summarize(t, rec, finals); counts["write"] == 0 || counts["strong read"] == 0 {
		t.Fatalf("no write or strong read succeeded: %v", counts)
	}
	for _, err := range checkRun(rec.ops, finals, map[string]bool{"account/a1": true, "account/a2": true, "order/o1": true, "order/o2": true}) {
		t.Error(err)
	}
}

// converge waits until every region folds the same history of each entity,
// then records a final strong read in us, and returns what it read.
func (pw *primaryWorld) converge(rec *recorder, entities, regions []string) map[string]final {
	t := pw.T
	t.Helper()
	finals := map[string]final{}
	for _, entity := range entities {
		typ, id, _ := strings.Cut(entity, "/")
		deadline := time.Now().Add(30 * time.Second)
		for {
			var got []string
			for _, n := range regions {
				got = append(got, describe(mustRead(t, pw.primary(n), typ, id, false)))
			}
			if !slices.ContainsFunc(got, func(h string) bool { return h != got[0] }) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not converge: %q", entity, got)
			}
			time.Sleep(20 * time.Millisecond)
		}
		o := op{client: 99, region: "us", entity: entity, kind: opStrongRead, call: rec.now()}
		h := mustRead(t, pw.primary("us"), typ, id, true)
		o.ret, o.values = rec.now(), values(h)
		rec.add(o)
		finals[entity] = finalOf(h)
	}
	return finals
}

// summarize logs the operations of a run by kind, their errors and the
// final histories, and returns the counts by kind ("write", "write
// failed", ...).
func summarize(t testing.TB, rec *recorder, finals map[string]final) map[string]int {
	t.Helper()
	counts := map[string]int{}
	errs := map[string]int{}
	for _, o := range rec.ops {
		k := [...]string{"write", "read", "strong read"}[o.kind]
		if o.err != nil {
			k += " failed"
			msg := o.err.Error()
			errs[msg[:min(len(msg), 90)]]++
		}
		counts[k]++
	}
	t.Logf("errors: %v", errs)
	t.Logf("%d operations: %v; final versions (handovers): %v", len(rec.ops), counts, func() map[string]string {
		m := map[string]string{}
		for e, f := range finals {
			m[e] = fmt.Sprintf("%d (%d)", len(f.events), len(f.events)-len(f.values()))
		}
		return m
	}())
	return counts
}

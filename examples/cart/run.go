package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// result is what a run shows.
type result struct {
	// carts are the scripted conflicts' cart (with a partition), then the
	// users' carts.
	carts []string
	// partitioned is every cart in every region at the end of the
	// partition, just before the link came back; nil without a partition.
	partitioned snapshot
	// converged is how long after the edits stopped every region held every
	// event of every cart.
	converged time.Duration
	final     snapshot
	// conflict is the scripted conflicts, nil unless they were made.
	conflict *conflict
}

// run lets the users edit for opts.duration, cuts opts.isolate off during
// the partition (after the scripted conflicts' cart is prepared; they are
// made as it starts), waits for the regions to converge and returns every
// cart as every region sees it. When ctx ends the edits stop early; the
// regions still converge.
func (w *world) run(ctx context.Context, out io.Writer) (*result, error) {
	o := w.opts
	out = &lockedWriter{w: out} // progress lines come from another goroutine
	users := userCarts(o.carts)
	res := &result{carts: users}
	for _, r := range w.regions {
		fmt.Fprintf(out, "region %-6s %s  %d users, %g edits/s each, carts %s..%s (-seed %d)\n", r.name, r.addr, o.users, o.rate, users[0], users[len(users)-1], o.seed)
	}
	var c *conflict
	if o.cutFor > 0 {
		c = w.newConflict()
		if err := c.prepare(ctx, w); err != nil {
			return nil, err
		}
		res.carts = append([]string{conflictCart}, users...)
		fmt.Fprintf(out, "%s: %s added %s×%d and set the address %q; every region has it\n",
			conflictCart, c.isolated.name, conflictSKU, c.initialGiftCards, c.initialAddress)
	}

	start := time.Now()
	edits, stopEdits := context.WithCancel(ctx)
	defer stopEdits()
	usersDone := make(chan error, 1)
	go func() {
		err := w.runUsers(edits, users)
		stopEdits() // a failed user ends the run
		usersDone <- err
	}()
	var progress sync.WaitGroup
	if o.progress > 0 {
		progress.Go(func() { w.printProgress(edits, out, start, res.carts) })
	}
	err := w.timeline(edits, out, start, c, res)
	stopEdits()
	err = errors.Join(err, <-usersDone)
	progress.Wait()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "%5.1fs  edits stopped (%s); waiting for the regions to converge\n", since(start), w.editCounts())

	stopped := context.WithoutCancel(ctx)
	if res.converged, err = w.converge(stopped, res.carts, o.convergeTimeout); err != nil {
		return nil, err
	}
	if res.final, err = w.snapshot(stopped, res.carts); err != nil {
		return nil, err
	}
	if c != nil && c.done {
		res.conflict = c
	}
	return res, nil
}

// timeline cuts the link and restores it at their times and makes the
// scripted conflicts, then waits for the end of the edits.
func (w *world) timeline(ctx context.Context, out io.Writer, start time.Time, c *conflict, res *result) error {
	o := w.opts
	if c != nil {
		if !until(ctx, start.Add(o.cutAfter)) {
			return nil
		}
		others := w.others(o.isolate)
		w.cut(o.isolate)
		defer w.restore(o.isolate) // also when the run ends early
		fmt.Fprintf(out, "%5.1fs  partition: %s cut off from %s\n", since(start), o.isolate, strings.Join(others, ","))
		if err := c.run(context.WithoutCancel(ctx), w); err != nil {
			return err
		}
		fmt.Fprintf(out, "%5.1fs  %s: %s removed %s and set the address %q; at the same time %s added %s×%d and set %q\n",
			since(start), conflictCart, c.isolated.name, conflictSKU, c.addressIsolated, c.other.name, conflictSKU, c.addedByOther, c.addressOther)
		if !until(ctx, start.Add(o.cutAfter+o.cutFor)) {
			return nil
		}
		snap, err := w.snapshot(context.WithoutCancel(ctx), res.carts)
		if err != nil {
			return err
		}
		res.partitioned = snap
		fmt.Fprintf(out, "%5.1fs  the carts at the end of the partition (%d of %d differ between regions):\n", since(start), snap.differing(), len(res.carts))
		snap.table(out, w.names(), res.carts)
		w.restore(o.isolate)
		fmt.Fprintf(out, "%5.1fs  link restored\n", since(start))
	}
	until(ctx, start.Add(o.duration))
	return nil
}

// printProgress prints a line every opts.progress until ctx is done: the
// edits acknowledged per region and how many carts differ between regions
// at that moment (in flight, or held back by the partition).
func (w *world) printProgress(ctx context.Context, out io.Writer, start time.Time, carts []string) {
	t := time.NewTicker(w.opts.progress)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		snap, err := w.snapshot(context.WithoutCancel(ctx), carts)
		if err != nil {
			fmt.Fprintf(out, "%5.1fs  %v\n", since(start), err)
			continue
		}
		link := "links up"
		if w.isCut.Load() {
			link = w.opts.isolate + " cut off"
		}
		fmt.Fprintf(out, "%5.1fs  %s | %s | not yet copied: %s | carts differing now: %d/%d\n",
			since(start), w.editCounts(), link, w.behind(), snap.differing(), len(carts))
	}
}

// behind shows, per replication, how many offsets of its source it has not
// processed yet: "eu→us 120, us→eu 98".
func (w *world) behind() string {
	var parts []string
	for _, l := range w.links {
		st := l.repl.Status()[0]
		parts = append(parts, fmt.Sprintf("%s→%s %d", l.from.name, l.to.name, l.from.prod.Journal().LastOffset()-min(st.Offset, l.from.prod.Journal().LastOffset())))
	}
	return strings.Join(parts, ", ")
}

// editCounts shows the acknowledged edits per region: "eu 41 edits, us 39 edits".
func (w *world) editCounts() string {
	var parts []string
	for _, r := range w.regions {
		parts = append(parts, fmt.Sprintf("%s %d edits", r.name, w.ledger.edits(r.name)))
	}
	return strings.Join(parts, ", ")
}

// names are the regions' names, in order.
func (w *world) names() []string {
	var out []string
	for _, r := range w.regions {
		out = append(out, r.name)
	}
	return out
}

// others are the names of the regions other than name.
func (w *world) others(name string) []string {
	var out []string
	for _, r := range w.regions {
		if r.name != name {
			out = append(out, r.name)
		}
	}
	return out
}

// waitFor polls cond every 10ms until it holds, a replication fails, ctx
// ends or timeout passes.
func (w *world) waitFor(ctx context.Context, what string, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if ok, err := cond(); err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-w.failed:
			return err
		case <-deadline.C:
			return fmt.Errorf("cart: timed out after %v waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// until waits until t and reports true, or false if ctx ends first.
func until(ctx context.Context, t time.Time) bool {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func since(start time.Time) float64 { return time.Since(start).Seconds() }

// lockedWriter serialises Writes: a line or a table is one Write.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

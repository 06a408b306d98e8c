package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/offsets"
)

// ErrUnknownConsumer is returned for a consumer name the Registry does not
// run.
var ErrUnknownConsumer = errors.New("admin: unknown consumer")

// ErrGroupMember is returned for moving the offsets or changing the filter
// of a consumer registered with AddMember: its group decides which process
// consumes which slices, and its offsets are this process's own positions
// over the slices it owns now.
var ErrGroupMember = errors.New("admin: the consumer is run by this process's member of consumer group")

// Registry runs consumers and serves the AdminService over them. Its
// methods are safe for concurrent use.
type Registry struct {
	log *slog.Logger

	mu      sync.Mutex
	byName  map[string]*entry
	names   []string // in Add order
	running bool     // Run is running: pause requests go to the loops
	readers Readers  // nil: the process serves no journal
	stopped chan struct{}
}

// entry is one consumer and the state of its loop.
type entry struct {
	pause chan pauseRequest
	group string // set for a consumer a group member runs (AddMember)

	mu      sync.Mutex
	c       *consumer.Consumer // replaced as a group member's slices move
	running bool
	err     error // why it stopped on its own; nil while running
}

// pauseRequest asks a loop to stop its consumer, run fn and start it again.
type pauseRequest struct {
	fn   func() error
	done chan error
}

// NewRegistry returns an empty Registry logging to log (nil: slog.Default()).
func NewRegistry(log *slog.Logger) *Registry {
	if log == nil {
		log = slog.Default()
	}
	return &Registry{log: log, byName: map[string]*entry{}}
}

// Add registers c under its Options().Name. Names are unique. Consumers
// added while Run runs are started at its next call only.
func (r *Registry) Add(c *consumer.Consumer) error {
	name := c.Options().Name
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running {
		return fmt.Errorf("admin: add consumer %q: the registry is running", name)
	}
	if _, ok := r.byName[name]; ok {
		return fmt.Errorf("admin: add consumer %q: a consumer of that name is registered", name)
	}
	r.byName[name] = &entry{c: c, pause: make(chan pauseRequest)}
	r.names = append(r.names, name)
	return nil
}

// Member is a consumer registered with AddMember, run by this process's
// member of a consumer group: a new consumer over the slices it owns each
// time they move.
type Member struct{ e *entry }

// AddMember registers c under its Options().Name as the consumer that this
// process's member of the consumer group called group runs. The Registry
// shows it in States, not running and over no slices until Running; it
// does not run it, and refuses to move its offsets or change its filter
// (ErrGroupMember). c stands for it until then: its name, stream, mode and
// filter are those of every consumer Running records.
func (r *Registry) AddMember(c *consumer.Consumer, group string) (*Member, error) {
	if group == "" {
		return nil, fmt.Errorf("admin: add consumer %q: the group is empty", c.Options().Name)
	}
	if err := r.Add(c); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.byName[c.Options().Name]
	e.group = group
	return &Member{e: e}, nil
}

// Running records c (of the registered name) as the consumer the member
// runs now, over c.Options().Slices.
func (m *Member) Running(c *consumer.Consumer) {
	m.e.mu.Lock()
	m.e.c, m.e.running, m.e.err = c, true, nil
	m.e.mu.Unlock()
}

// Stopped records that the member runs no consumer now; err is why (nil:
// it owns no slices, or they are moving).
func (m *Member) Stopped(err error) { m.e.setState(false, err) }

// Run runs every registered consumer until ctx is done, then returns after
// each has stopped (and saved its offset). A consumer stopping on an error
// does not stop the others; Run returns nil.
func (r *Registry) Run(ctx context.Context) error {
	r.mu.Lock()
	if r.running {
		r.mu.Unlock()
		return errors.New("admin: the registry is already running")
	}
	r.running, r.stopped = true, make(chan struct{})
	entries := r.entriesLocked()
	r.mu.Unlock()

	var wg sync.WaitGroup
	for _, e := range entries {
		if e.group == "" { // a group member's runs it
			wg.Go(func() { e.loop(ctx, r.log) })
		}
	}
	wg.Wait()
	r.mu.Lock()
	r.running = false
	close(r.stopped)
	r.mu.Unlock()
	return nil
}

func (r *Registry) entriesLocked() []*entry {
	out := make([]*entry, len(r.names))
	for i, n := range r.names {
		out[i] = r.byName[n]
	}
	return out
}

// entries returns the consumer called name, or every consumer for "".
func (r *Registry) entries(name string) ([]*entry, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if name == "" {
		return r.entriesLocked(), nil
	}
	e, ok := r.byName[name]
	if !ok {
		return nil, fmt.Errorf("%w %q (running: %v)", ErrUnknownConsumer, name, r.names)
	}
	return []*entry{e}, nil
}

// whileStopped runs fn while e's consumer is not running.
func (r *Registry) whileStopped(ctx context.Context, e *entry, fn func() error) error {
	r.mu.Lock()
	if !r.running {
		// Holding mu keeps Run from starting the consumer meanwhile.
		defer r.mu.Unlock()
		return fn()
	}
	stopped := r.stopped
	r.mu.Unlock()
	req := pauseRequest{fn: fn, done: make(chan error, 1)}
	select {
	case e.pause <- req:
	case <-stopped:
		return r.whileStopped(ctx, e, fn)
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-req.done
}

// loop runs e's consumer until ctx is done, stopping it for pause requests.
// A consumer that stops on its own error waits for a pause request (an
// operator's fix) before it runs again.
func (e *entry) loop(ctx context.Context, log *slog.Logger) {
	for {
		runCtx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		e.setState(true, nil)
		go func() { done <- e.c.Run(runCtx) }()
		var (
			req    pauseRequest
			paused bool
			err    error
		)
		select {
		case err = <-done:
		case req = <-e.pause:
			paused = true
			cancel()
			err = <-done
		}
		cancel()
		if ctx.Err() != nil {
			e.setState(false, nil)
			return
		}
		if !paused {
			e.setState(false, err)
			log.Error("consumer stopped; it starts again when an operator moves its offsets", "consumer", e.c.Options().Name, "err", err)
			select {
			case <-ctx.Done():
				return
			case req = <-e.pause:
			}
		} else if err != nil {
			log.Warn("consumer stopped for an operator", "consumer", e.c.Options().Name, "err", err)
		}
		req.done <- req.fn()
	}
}

// steerable refuses a group member's consumer: its offsets and filter are
// those of its group's work on this process.
func (e *entry) steerable() error {
	if e.group == "" {
		return nil
	}
	return fmt.Errorf("%w %q: consumer %q runs over the slices its group gives this process now, from this process's own positions, and the group moves slices between processes; its offsets and filter are not changed by hand (change its configuration, in streamd its replicate: entry, and restart)",
		ErrGroupMember, e.group, e.consumer().Options().Name)
}

func (e *entry) consumer() *consumer.Consumer {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.c
}

func (e *entry) setState(running bool, err error) {
	e.mu.Lock()
	e.running, e.err = running, err
	e.mu.Unlock()
}

// State is a registered consumer and whether its loop runs it.
type State struct {
	Consumer *consumer.Consumer
	Running  bool
	// Err is why it stopped on its own (nil while running or never run).
	Err error
	// Group is the consumer group whose member runs it (AddMember), or "".
	Group string
	// Slices are those it consumes: Consumer.Options().Slices, or for a
	// group member none (Len 0) while it runs no consumer.
	Slices offsets.SliceRange
}

func (e *entry) state() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	st := State{Consumer: e.c, Running: e.running, Err: e.err, Group: e.group, Slices: e.c.Options().Slices}
	if e.group != "" && !e.running {
		st.Slices = offsets.SliceRange{First: 1, Last: 0}
	}
	return st
}

// States returns the consumer called name, or every consumer for "", in
// the order they were added.
func (r *Registry) States(name string) ([]State, error) {
	es, err := r.entries(name)
	if err != nil {
		return nil, err
	}
	out := make([]State, len(es))
	for i, e := range es {
		out[i] = e.state()
	}
	return out, nil
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// options size the example.
type options struct {
	regions []string      // edge regions, each with its own cars
	cars    int           // per edge region
	rate    float64       // readings per car per second of simulated time
	window  time.Duration // summary window, in sample time
	speed   float64       // simulated seconds per real second
	epoch   time.Time     // sample time of the first tick
	dir     string        // the regions' data live below it
	// async acknowledges appends and commits before their fsync (safe
	// against a process crash, not an OS crash): for tests on a busy disk.
	async bool
	// now is the clock of filter expiry: the edge producers enforce
	// expiries with it and the cloud computes ttl= with it.
	now func() time.Time
	log *slog.Logger
}

func (o options) validate() error {
	switch {
	case len(o.regions) == 0:
		return errors.New("telemetry: no edge region")
	case o.cars <= 0:
		return fmt.Errorf("telemetry: cars is %d, want > 0", o.cars)
	case o.rate <= 0:
		return fmt.Errorf("telemetry: rate is %g, want > 0", o.rate)
	case o.window < time.Millisecond || o.window%time.Millisecond != 0:
		return fmt.Errorf("telemetry: window %v is not a whole number of milliseconds", o.window)
	case o.speed <= 0:
		return fmt.Errorf("telemetry: speed is %g, want > 0", o.speed)
	}
	for i, r := range o.regions {
		if r == "" || r == cloudName || slices.Contains(o.regions[:i], r) || strings.ContainsAny(r, "/-") {
			return fmt.Errorf("telemetry: %q cannot name an edge region (names are unique, not %q, without / or -)", r, cloudName)
		}
	}
	return nil
}

// edge is a region with cars: a simulator publishing raw telemetry and an
// aggregator writing summaries of it.
type edge struct {
	*region
	sim *simulator
	agg *aggregator
	// aggregator is the aggregator's consumer; tests replace it to restart it.
	aggregator *consumer.Consumer
}

// system is the whole example: the edge regions and the cloud.
type system struct {
	opts  options
	edges []*edge
	cloud *cloud
	meter *linkMeter
}

// openSystem opens every region and starts their servers; nothing else runs
// before run.
func openSystem(o options) (_ *system, err error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	s := &system{opts: o, meter: newLinkMeter()}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.close())
		}
	}()
	var addrs []string
	for _, name := range o.regions {
		r, err := openRegion(name, o, producer.ServerOptions{Logger: o.log, Now: o.now})
		if err != nil {
			return nil, err
		}
		e := &edge{region: r}
		s.edges = append(s.edges, e)
		if err := r.serve(); err != nil {
			return nil, err
		}
		addrs = append(addrs, r.addr)
		e.sim = newSimulator(name, o.cars, o.rate, o.speed, o.epoch, func(ctx context.Context, evs ...*streamdv1.Event) error {
			_, err := r.prod.Publish(ctx, evs...)
			return err
		})
		e.agg = &aggregator{region: name, length: o.window, append: r.prod.Publish, load: r.prod.Journal().Load}
		if e.aggregator, err = newAggregatorConsumer(name, r.addr, r.store, e.agg.handle, o.log); err != nil {
			return nil, err
		}
	}
	r, err := openRegion(cloudName, o, producer.ServerOptions{Logger: o.log})
	if err != nil {
		return nil, err
	}
	if s.cloud, err = newCloud(r, addrs, s.meter, o.now, o.log); err != nil {
		return nil, errors.Join(err, r.close())
	}
	if err := r.serve(); err != nil {
		return nil, err // s.close closes the cloud
	}
	return s, nil
}

// runSims runs every edge's car simulator until ctx is done.
func (s *system) runSims(ctx context.Context) error {
	var fns []func(context.Context) error
	for _, e := range s.edges {
		fns = append(fns, e.sim.Run)
	}
	return runAll(ctx, fns...)
}

// runConsumers runs the aggregators and the cloud's consumer until ctx is
// done.
func (s *system) runConsumers(ctx context.Context) error {
	fns := []func(context.Context) error{s.cloud.run}
	for _, e := range s.edges {
		fns = append(fns, e.aggregator.Run)
	}
	return runAll(ctx, fns...)
}

// published is the raw telemetry published so far in every edge.
func (s *system) published() traffic {
	var t traffic
	for _, e := range s.edges {
		t.Events += e.sim.events.Load()
		t.Bytes += e.sim.bytes.Load()
	}
	return t
}

// close closes the cloud, then the edges. Stop run first.
func (s *system) close() error {
	var errs []error
	if s.cloud != nil {
		errs = append(errs, s.cloud.close())
	}
	for _, e := range s.edges {
		errs = append(errs, e.close())
	}
	return errors.Join(errs...)
}

// runAll runs fns concurrently until ctx is done or one of them fails,
// which stops the others; it returns when all have returned, with the
// first error.
func runAll(ctx context.Context, fns ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(fns))
	for _, f := range fns {
		go func() { errs <- f(ctx) }()
	}
	var first error
	for range fns {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

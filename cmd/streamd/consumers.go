package main

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/streamd/streamd/admin"
	"github.com/streamd/streamd/consumer/group"
	"github.com/streamd/streamd/internal/metrics"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/topology"
)

// consumers are the consumers streamd runs (its replications) and the
// registry the admin API serves.
type consumers struct {
	log      *slog.Logger
	registry *admin.Registry
	// byName are the replications an on-demand Interest may steer, by
	// name: a consumer, or for one run by the entity group over the slices
	// this pod writes, what stands for them in turn.
	byName map[string]topology.Steered
	cancel context.CancelFunc
	done   chan struct{}
}

// startConsumers starts cfg's replications into j: those of the registry,
// and the grouped ones, each as this pod's member of its consumer group, or
// with a top-level group: run by it over the slices this pod writes.
// Their offsets live in j itself, committed with the events they copied: a
// new journal starts with new offsets.
func startConsumers(log *slog.Logger, cfg config, j *journal.Journal) (*consumers, error) {
	cs := &consumers{log: log, registry: admin.NewRegistry(log), byName: map[string]topology.Steered{}, done: make(chan struct{})}
	if len(cfg.replications) == 0 && len(cfg.grouped) == 0 {
		close(cs.done)
		cs.cancel = func() {}
		return cs, nil
	}
	links := newLinkBytes(cfg.metrics.Registry(), cfg.aggregates)
	for _, opts := range cfg.replications {
		opts.Journal, opts.Logger = j, log
		opts.DialOptions = append(slices.Clip(opts.DialOptions), links.dialOption(opts.Name, opts.From.Name))
		c, err := topology.NewReplication(opts)
		if err == nil {
			err = cs.registry.Add(c)
		}
		if err != nil {
			return nil, fmt.Errorf("replication %q: %w", opts.Name, err)
		}
		cs.byName[opts.Name] = c
	}
	joins := make([]func() (*group.Member, error), len(cfg.grouped))
	regs := make([]*admin.Member, len(cfg.grouped))
	for i, g := range cfg.grouped {
		g.opts.DialOptions = append(slices.Clip(g.opts.DialOptions), links.dialOption(g.opts.Name, g.opts.From.Name))
		c, err := g.replication(log, j, offsets.SliceRange{})
		if err == nil {
			regs[i], err = cs.registry.AddMember(c, g.group)
		}
		switch {
		case err != nil:
		case cfg.entityGroup != nil && g.group == cfg.entityGroup.name:
			// Over the slices the pod writes, by the entity group (run).
			s := &steered{c: c}
			cs.byName[g.opts.Name] = s
			cfg.entityGroup.replicate(g.runner(log, j, regs[i], s))
		default:
			run := g.runner(log, j, regs[i], nil)
			joins[i] = func() (*group.Member, error) { return cfg.pod.newMember(log, g, run) }
		}
		if err != nil {
			return nil, fmt.Errorf("replication %q (group %q): %w", g.opts.Name, g.group, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cs.cancel = cancel
	var wg sync.WaitGroup
	wg.Go(func() { cs.registry.Run(ctx) })
	for i, g := range cfg.grouped {
		if joins[i] == nil {
			continue // the entity group's
		}
		wg.Go(func() {
			runMember(ctx, log.With("consumer", g.opts.Name), g.group, joins[i], regs[i].Stopped, rejoinBackoff)
		})
	}
	go func() {
		defer close(cs.done)
		wg.Wait()
	}()
	return cs, nil
}

// metrics lists each consumer's streams for the metrics collector.
func (cs *consumers) metrics() []metrics.ConsumerProducer {
	states, _ := cs.registry.States("")
	var out []metrics.ConsumerProducer
	for _, st := range states {
		name := st.Consumer.Options().Name
		for _, p := range st.Consumer.Status() {
			out = append(out, metrics.ConsumerProducer{Consumer: name, Producer: p.Addr, Lag: p.Lag, Connected: p.Connected, Running: st.Running})
		}
	}
	return out
}

// stop stops the consumers (they save their offsets). It is idempotent.
func (cs *consumers) stop() {
	cs.cancel()
	<-cs.done
}

package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/streamd/streamd/aggregate"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/producer"
)

// aggregateConfig is one entry of the config file's aggregate: list, an
// aggregation stage (package aggregate) over streamd's own journal.
type aggregateConfig struct {
	Name string `yaml:"name"`
	// Stream names one of the file's streams: (its entity types and
	// filter); Filter narrows it further.
	Stream         string           `yaml:"stream"`
	Filter         []string         `yaml:"filter"`
	Window         time.Duration    `yaml:"window"`
	Grace          time.Duration    `yaml:"grace"`
	TimeField      string           `yaml:"time_field"`
	GroupBy        []string         `yaml:"group_by"`
	Values         []aggregateValue `yaml:"values"`
	Output         aggregateOutput  `yaml:"output"`
	MaxOpenWindows int              `yaml:"max_open_windows"`
}

type aggregateValue struct {
	Field string   `yaml:"field"`
	Ops   []string `yaml:"ops"`
}

type aggregateOutput struct {
	EntityType string `yaml:"entity_type"`
	EventType  string `yaml:"event_type"`
	EntityID   string `yaml:"entity_id"`
}

// parseAggregates checks the aggregate: entries against the file's
// streams; errors name the entry. The stages' journal is set at start.
func parseAggregates(entries []aggregateConfig, streams []producer.StreamDef, now time.Time) ([]aggregate.Options, error) {
	var out []aggregate.Options
	names := map[string]bool{}
	for i, a := range entries {
		at := fmt.Sprintf("aggregate[%d]", i)
		if a.Name != "" {
			at += " (" + a.Name + ")"
		}
		if names[a.Name] {
			return nil, fmt.Errorf("%s: a second stage named %q (give each a name of its own)", at, a.Name)
		}
		names[a.Name] = true
		crits, err := parseFilter(at, a.Filter, now)
		if err != nil {
			return nil, err
		}
		o := aggregate.Options{
			Name: a.Name, Filter: crits, Window: a.Window, Grace: a.Grace, TimeField: a.TimeField, GroupBy: a.GroupBy,
			Output:         aggregate.Output{EntityType: a.Output.EntityType, EventType: a.Output.EventType, EntityID: a.Output.EntityID},
			MaxOpenWindows: a.MaxOpenWindows,
		}
		if a.Stream != "" {
			s, ok := findStream(streams, a.Stream)
			if !ok {
				return nil, fmt.Errorf("%s: stream %q is not one of the streams: of the file", at, a.Stream)
			}
			o.EntityTypes, o.Filter = s.EntityTypes, append(append(o.Filter[:0:0], s.Filter...), crits...)
		}
		for _, v := range a.Values {
			val := aggregate.Value{Field: v.Field}
			for _, op := range v.Ops {
				val.Ops = append(val.Ops, aggregate.Op(op))
			}
			o.Values = append(o.Values, val)
		}
		if err := o.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", at, err)
		}
		out = append(out, o)
	}
	return out, nil
}

// findStream finds a stream by name; without streams, the default one.
func findStream(streams []producer.StreamDef, name string) (producer.StreamDef, bool) {
	if len(streams) == 0 {
		return producer.StreamDef{Name: producer.DefaultStream}, name == producer.DefaultStream
	}
	for _, s := range streams {
		if s.Name == name {
			return s, true
		}
	}
	return producer.StreamDef{}, false
}

// aggregates are the aggregation stages streamd runs.
type aggregates struct {
	set    *aggregate.Set
	cancel context.CancelFunc
	done   chan struct{}
}

// startAggregates starts the stages of cfg on j and serves the
// AggregateService on g (also with none, so streamctl aggregates list
// answers).
func startAggregates(log *slog.Logger, cfg config, j *journal.Journal, g *grpc.Server) (*aggregates, error) {
	var stages []*aggregate.Stage
	for _, o := range cfg.aggregates {
		o.Journal, o.Logger = j, log
		s, err := aggregate.New(o)
		if err != nil {
			return nil, fmt.Errorf("aggregate %q: %w", o.Name, err)
		}
		stages = append(stages, s)
	}
	set, err := aggregate.NewSet(log, stages...)
	if err != nil {
		return nil, err
	}
	set.Register(g)
	if cfg.metrics != nil {
		cfg.metrics.Registry().MustRegister(aggregateCollector{set})
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &aggregates{set: set, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(a.done)
		set.Run(ctx)
	}()
	return a, nil
}

// stop stops the stages (they save their positions). It is idempotent.
func (a *aggregates) stop() {
	a.cancel()
	<-a.done
}

var (
	aggregateEventsDesc = prometheus.NewDesc("streamd_aggregate_events_total",
		"Events an aggregation stage read (that passed its filter), by outcome: aggregated, late, not_json, missing_field, not_number, too_many_windows.",
		[]string{"aggregate", "outcome"}, nil)
	aggregateSummariesDesc = prometheus.NewDesc("streamd_aggregate_summaries_total",
		"Summaries an aggregation stage wrote.", []string{"aggregate"}, nil)
	aggregateLagDesc = prometheus.NewDesc("streamd_aggregate_lag_events",
		"Events in the journal an aggregation stage has not read yet.", []string{"aggregate"}, nil)
	aggregateRunningDesc = prometheus.NewDesc("streamd_aggregate_running",
		"1 while an aggregation stage runs, 0 after an error stopped it (it is started again after a backoff).", []string{"aggregate"}, nil)
)

// aggregateCollector exports the stages' counters (kept in their
// checkpoints, so they survive restarts).
type aggregateCollector struct{ set *aggregate.Set }

func (c aggregateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- aggregateEventsDesc
	ch <- aggregateSummariesDesc
	ch <- aggregateLagDesc
	ch <- aggregateRunningDesc
}

func (c aggregateCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.set.Stages() {
		st := s.Status()
		n := st.Counters
		for outcome, v := range map[string]uint64{"aggregated": n.Aggregated, "late": n.Late, "not_json": n.NotJSON,
			"missing_field": n.MissingField, "not_number": n.NotNumber, "too_many_windows": n.TooManyWindows} {
			ch <- prometheus.MustNewConstMetric(aggregateEventsDesc, prometheus.CounterValue, float64(v), st.Name, outcome)
		}
		ch <- prometheus.MustNewConstMetric(aggregateSummariesDesc, prometheus.CounterValue, float64(n.Summaries), st.Name)
		ch <- prometheus.MustNewConstMetric(aggregateLagDesc, prometheus.GaugeValue, float64(st.Lag), st.Name)
		running := 0.0
		if st.Running {
			running = 1
		}
		ch <- prometheus.MustNewConstMetric(aggregateRunningDesc, prometheus.GaugeValue, running, st.Name)
	}
}

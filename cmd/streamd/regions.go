package main

import (
	"context"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology/primary"
)

// publishRouter routes Publish and PublishStream by entity type mode
// through the region's Primary; it is made before the journal opens and
// given the Primary (p) before the server serves.
type publishRouter struct{ p *primary.Primary }

func (r *publishRouter) Routes(e *streamdv1.Event) (bool, error) { return r.p.Routes(e) }

func (r *publishRouter) Publish(ctx context.Context, events []*streamdv1.Event) ([]*streamdv1.Appended, error) {
	appended, err := r.p.Publish(ctx, events)
	return appended, primary.ToStatus(err)
}

// regionMetrics counts the multi-region writes per entity type
// (primary.Observer) and the conflicts of failovers
// (primary.ConflictObserver), and reports replication lag per source
// region.
type regionMetrics struct {
	forwards, takeovers, crdtOps, conflicts *prometheus.CounterVec
}

func newRegionMetrics(reg prometheus.Registerer, lags func() map[string]uint64) *regionMetrics {
	m := &regionMetrics{
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamd_primary_forwards_total", Help: "Writes of pinned entity types forwarded from this region to their primary."}, []string{"entity_type"}),
		takeovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamd_primary_takeovers_total", Help: "Entities this region took over from their owner to write them."}, []string{"entity_type"}),
		crdtOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamd_crdt_ops_total", Help: "CRDT operations published in this region to replicated entity types (each merges into the entity's state in every region)."}, []string{"entity_type"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamd_primary_conflicts_total", Help: "Events a failover fenced out of every history (written by the failed-over region after the failover point; streamctl primary conflicts lists them)."}, []string{"from", "entity_type"}),
	}
	reg.MustRegister(m.forwards, m.takeovers, m.crdtOps, m.conflicts, regionLagCollector(lags))
	return m
}

func (m *regionMetrics) Forwarded(entityType string) { m.forwards.WithLabelValues(entityType).Inc() }
func (m *regionMetrics) TookOver(entityType string)  { m.takeovers.WithLabelValues(entityType).Inc() }

var _ primary.ConflictObserver = (*regionMetrics)(nil)

func (m *regionMetrics) Conflict(from, entityType string) {
	m.conflicts.WithLabelValues(from, entityType).Inc()
}
func (m *regionMetrics) CRDTOps(entityType string, ops int) {
	m.crdtOps.WithLabelValues(entityType).Add(float64(ops))
}

var regionLagDesc = prometheus.NewDesc("streamd_region_replication_lag_events",
	"Per region of the project (regions:): events of its journal not yet replicated here (the most over its addresses).", []string{"region"}, nil)

type regionLagCollector func() map[string]uint64

func (c regionLagCollector) Describe(ch chan<- *prometheus.Desc) { ch <- regionLagDesc }

func (c regionLagCollector) Collect(ch chan<- prometheus.Metric) {
	for region, lag := range c() {
		ch <- prometheus.MustNewConstMetric(regionLagDesc, prometheus.GaugeValue, float64(lag), region)
	}
}

// regionLags is the lag of each replication from a region of the project.
func (cs *consumers) regionLags() map[string]uint64 {
	lags := map[string]uint64{}
	for _, c := range cs.metrics() {
		if region, ok := strings.CutPrefix(c.Consumer, regionReplication("")); ok {
			lags[region] = max(lags[region], c.Lag)
		}
	}
	return lags
}

// regionProgress is primary.ProgressFunc: how far the replication from a
// region of the project has applied its journals (one per pod when its
// pods share the entities), one entry per address that reaches a journal:
// the last offset applied and the last one known the journal holds (the
// Primary merges the entries of one journal). Addresses whose journal id
// is not known yet (no Hello received) are left out: their offsets belong
// to no journal. ok false without a replication from the region.
func (cs *consumers) regionProgress(region string) (journals []primary.JournalProgress, ok bool) {
	states, _ := cs.registry.States("")
	for _, st := range states {
		if st.Consumer.Options().Name != regionReplication(region) {
			continue
		}
		ok = true
		for _, p := range st.Consumer.Status() {
			if len(p.JournalID) > 0 {
				journals = append(journals, primary.JournalProgress{JournalID: p.JournalID, Applied: p.Offset, Known: p.Offset + p.Lag})
			}
		}
	}
	return journals, ok
}

package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/streamd/streamd/internal/buildinfo"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/producer"
)

// Metrics observes a journal and its streams. Create it with New, pass it as
// journal.Options.Observer and producer.ServerOptions.Observer, then call
// WatchJournal once the journal is open.
type Metrics struct {
	reg *prometheus.Registry

	appends, events, fsyncBatches, retentionDeleted prometheus.Counter
	fsync                                           prometheus.Histogram
	open                                            *prometheus.GaugeVec
	sent, bytes, filtered, refused                  *prometheus.CounterVec

	mu sync.Mutex
	// labels are the consumer names used as label values so far, at most
	// ConsumerLabelLimit; later names are counted as OtherConsumers.
	labels map[string]bool
	// consumers holds, per open (stream, consumer), how many streams are open
	// and the last offset sent or reported to it, for the lag gauge.
	consumers map[consumerKey]*position
}

// ConsumerLabelLimit bounds the consumer label values of the stream
// metrics: consumer names come from clients, and every name would be a
// series forever. Names beyond the first ConsumerLabelLimit are counted
// under the consumer label OtherConsumers.
const ConsumerLabelLimit = 100

// OtherConsumers is the consumer label of the names beyond
// ConsumerLabelLimit.
const OtherConsumers = "_other"

type consumerKey struct{ stream, consumer string }

type position struct {
	open   int
	offset uint64
	known  bool
}

var (
	_ journal.Observer        = (*Metrics)(nil)
	_ producer.StreamObserver = (*Metrics)(nil)
)

// New returns Metrics registered, with the Go and process collectors, in a
// registry of their own.
func New() *Metrics {
	streamLabels := []string{"stream", "consumer"}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		appends: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamd_journal_appends_total", Help: "Appends (publish calls) committed to the journal."}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamd_journal_events_appended_total", Help: "Events committed to the journal."}),
		fsyncBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamd_journal_fsync_batches_total", Help: "Group commits (one fsync each with sync durability)."}),
		fsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "streamd_journal_fsync_seconds", Help: "Time to fsync one group commit (sync durability only).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		retentionDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "streamd_journal_retention_deleted_events_total", Help: "Events deleted by retention."}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "streamd_streams_open", Help: "Subscribe streams open."}, []string{"stream"}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamd_stream_events_sent_total", Help: "Events sent to consumers."}, streamLabels),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamd_stream_bytes_sent_total", Help: "Encoded event bytes sent to consumers."}, streamLabels),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamd_stream_events_filtered_total", Help: "Events read for a consumer but filtered away."}, streamLabels),
		refused:   newRefused(),
		consumers: map[consumerKey]*position{},
		labels:    map[string]bool{},
	}
	for _, r := range Reasons {
		m.refused.WithLabelValues(r) // 0, not absent, so that rate() sees the first refusal
	}
	build := buildinfo.Read()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "streamd_build_info", Help: "Always 1; its labels say which build of streamd runs.",
		ConstLabels: prometheus.Labels{"version": build.Version, "revision": build.Revision, "goversion": build.GoVersion}})
	buildInfo.Set(1)
	m.reg.MustRegister(m.appends, m.events, m.fsyncBatches, m.fsync, m.retentionDeleted,
		m.open, m.sent, m.bytes, m.filtered, m.refused, buildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the daemon registers further collectors, such as the
// gRPC server metrics.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition formats.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// WatchJournal registers the gauges read from info at scrape time: journal
// size and bounds, and each consumer's lag behind the last offset. Call it
// once.
func (m *Metrics) WatchJournal(info func() journal.Info) {
	m.reg.MustRegister(&journalCollector{m: m, info: info})
}

// ConsumerProducer is the state of one stream of a consumer the process
// runs (a replication), for WatchConsumers.
type ConsumerProducer struct {
	Consumer, Producer string
	Lag                uint64
	Connected, Running bool
}

// WatchConsumers registers gauges of the consumers the process runs, read
// from states at scrape time: lag in events and whether each stream is
// connected and its consumer running. Call it once.
func (m *Metrics) WatchConsumers(states func() []ConsumerProducer) {
	m.reg.MustRegister(consumersCollector(states))
}

var (
	consumerLagDesc = prometheus.NewDesc("streamd_consumer_lag_events",
		"For the consumers streamd runs (replications): the producer's last known offset minus the consumer's.", []string{"consumer", "producer"}, nil)
	consumerConnectedDesc = prometheus.NewDesc("streamd_consumer_connected",
		"1 while the consumer's stream from the producer is open.", []string{"consumer", "producer"}, nil)
	consumerRunningDesc = prometheus.NewDesc("streamd_consumer_running",
		"1 while the consumer runs; 0 after it stopped on an error, until an operator moves its offsets (a grouped replication: until its pod rejoins the group, after a backoff).", []string{"consumer", "producer"}, nil)
)

type consumersCollector func() []ConsumerProducer

func (c consumersCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- consumerLagDesc
	ch <- consumerConnectedDesc
	ch <- consumerRunningDesc
}

func (c consumersCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c() {
		ch <- prometheus.MustNewConstMetric(consumerLagDesc, prometheus.GaugeValue, float64(s.Lag), s.Consumer, s.Producer)
		ch <- prometheus.MustNewConstMetric(consumerConnectedDesc, prometheus.GaugeValue, boolValue(s.Connected), s.Consumer, s.Producer)
		ch <- prometheus.MustNewConstMetric(consumerRunningDesc, prometheus.GaugeValue, boolValue(s.Running), s.Consumer, s.Producer)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Committed implements journal.Observer.
func (m *Metrics) Committed(appends, events int, bytes int64, fsync time.Duration) {
	m.appends.Add(float64(appends))
	m.events.Add(float64(events))
	m.fsyncBatches.Inc()
	if fsync > 0 {
		m.fsync.Observe(fsync.Seconds())
	}
}

// RetentionDeleted implements journal.Observer.
func (m *Metrics) RetentionDeleted(events int) { m.retentionDeleted.Add(float64(events)) }

// label is the consumer label value of name: name itself for the first
// ConsumerLabelLimit names, OtherConsumers after them. m.mu is held.
func (m *Metrics) labelLocked(name string) string {
	if m.labels[name] {
		return name
	}
	if len(m.labels) >= ConsumerLabelLimit {
		return OtherConsumers
	}
	m.labels[name] = true
	return name
}

func (m *Metrics) label(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.labelLocked(name)
}

// StreamOpened implements producer.StreamObserver.
func (m *Metrics) StreamOpened(stream, consumer string) {
	m.open.WithLabelValues(stream).Inc()
	m.mu.Lock()
	defer m.mu.Unlock()
	k := consumerKey{stream, m.labelLocked(consumer)}
	p := m.consumers[k]
	if p == nil {
		p = &position{}
		m.consumers[k] = p
	}
	p.open++
}

// StreamClosed implements producer.StreamObserver.
func (m *Metrics) StreamClosed(stream, consumer string) {
	m.open.WithLabelValues(stream).Dec()
	m.mu.Lock()
	defer m.mu.Unlock()
	k := consumerKey{stream, m.labelLocked(consumer)}
	if p := m.consumers[k]; p != nil {
		if p.open--; p.open <= 0 {
			delete(m.consumers, k) // a gone consumer has no lag
		}
	}
}

// Sent implements producer.StreamObserver.
func (m *Metrics) Sent(stream, consumer string, events, bytes, filtered int) {
	if events == 0 && filtered == 0 {
		return
	}
	consumer = m.label(consumer)
	if events > 0 {
		m.sent.WithLabelValues(stream, consumer).Add(float64(events))
		m.bytes.WithLabelValues(stream, consumer).Add(float64(bytes))
	}
	if filtered > 0 {
		m.filtered.WithLabelValues(stream, consumer).Add(float64(filtered))
	}
}

// Progressed implements producer.StreamObserver: it records the last offset
// sent or reported (Progress) to an open stream's consumer, from which
// streamd_stream_lag_events is computed.
func (m *Metrics) Progressed(stream, consumer string, offset uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.consumers[consumerKey{stream, m.labelLocked(consumer)}]; p != nil && (!p.known || offset > p.offset) {
		p.offset, p.known = offset, true
	}
}

var (
	bytesDesc = prometheus.NewDesc("streamd_journal_bytes", "Bytes of events held by the journal.", nil, nil)
	firstDesc = prometheus.NewDesc("streamd_journal_first_offset", "First offset that may be read (the retention floor).", nil, nil)
	lastDesc  = prometheus.NewDesc("streamd_journal_last_offset", "Last committed offset.", nil, nil)
	lagDesc   = prometheus.NewDesc("streamd_stream_lag_events",
		"Journal last offset minus the last offset sent or reported to the consumer.", []string{"stream", "consumer"}, nil)
)

// journalCollector reads the journal's bounds and the consumers' offsets
// at scrape time.
type journalCollector struct {
	m    *Metrics
	info func() journal.Info
}

func (c *journalCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bytesDesc
	ch <- firstDesc
	ch <- lastDesc
	ch <- lagDesc
}

func (c *journalCollector) Collect(ch chan<- prometheus.Metric) {
	info := c.info()
	ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.GaugeValue, float64(info.Bytes))
	ch <- prometheus.MustNewConstMetric(firstDesc, prometheus.GaugeValue, float64(info.FirstOffset))
	ch <- prometheus.MustNewConstMetric(lastDesc, prometheus.GaugeValue, float64(info.LastOffset))
	c.m.mu.Lock()
	defer c.m.mu.Unlock()
	for k, p := range c.m.consumers {
		if !p.known {
			continue
		}
		lag := uint64(0)
		if info.LastOffset > p.offset {
			lag = info.LastOffset - p.offset
		}
		ch <- prometheus.MustNewConstMetric(lagDesc, prometheus.GaugeValue, float64(lag), k.stream, k.consumer)
	}
}

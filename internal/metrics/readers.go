package metrics

import (
	"cmp"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamd/streamd/producer"
)

// OtherReaders is the consumer label under which the readers beyond the
// named ones are summed.
const OtherReaders = "_other"

// WatchReaders registers the lag gauges of the consumers reading from the
// process, read from readers at scrape time. Each consumer name is one
// series (the largest lag over its slice ranges); at most named names get
// their own, those with the largest lag in events; the rest are summed
// under consumer="_other" (the seconds gauge takes their largest). Call it
// once.
func (m *Metrics) WatchReaders(readers func() []producer.Reader, named int) {
	m.reg.MustRegister(&readersCollector{readers: readers, named: named})
}

var (
	readerLagDesc = prometheus.NewDesc("streamd_reader_lag_events",
		"For the consumers reading from this streamd: the journal's last offset minus the offset each last reported as stored.", []string{"consumer"}, nil)
	readerLagSecondsDesc = prometheus.NewDesc("streamd_reader_lag_seconds",
		"For the consumers reading from this streamd: how long ago the first event after the offset each stored was committed.", []string{"consumer"}, nil)
)

type readersCollector struct {
	readers func() []producer.Reader
	named   int
}

func (c *readersCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- readerLagDesc
	ch <- readerLagSecondsDesc
}

type readerLag struct {
	consumer string
	events   uint64
	seconds  float64
}

func (c *readersCollector) Collect(ch chan<- prometheus.Metric) {
	by := map[string]*readerLag{}
	var lags []*readerLag
	for _, r := range c.readers() {
		l := by[r.Consumer]
		if l == nil {
			l = &readerLag{consumer: r.Consumer}
			by[r.Consumer] = l
			lags = append(lags, l)
		}
		l.events, l.seconds = max(l.events, r.Lag), max(l.seconds, r.LagTime.Seconds())
	}
	slices.SortFunc(lags, func(a, b *readerLag) int {
		return cmp.Or(cmp.Compare(b.events, a.events), cmp.Compare(a.consumer, b.consumer))
	})
	var other *readerLag
	for i, l := range lags {
		if i < c.named {
			ch <- prometheus.MustNewConstMetric(readerLagDesc, prometheus.GaugeValue, float64(l.events), l.consumer)
			ch <- prometheus.MustNewConstMetric(readerLagSecondsDesc, prometheus.GaugeValue, l.seconds, l.consumer)
			continue
		}
		if other == nil {
			other = &readerLag{consumer: OtherReaders}
		}
		other.events += l.events
		other.seconds = max(other.seconds, l.seconds)
	}
	if other != nil {
		ch <- prometheus.MustNewConstMetric(readerLagDesc, prometheus.GaugeValue, float64(other.events), other.consumer)
		ch <- prometheus.MustNewConstMetric(readerLagSecondsDesc, prometheus.GaugeValue, other.seconds, other.consumer)
	}
}

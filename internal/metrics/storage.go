package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/streamd/streamd/internal/diskspace"
)

var (
	diskBytesDesc = prometheus.NewDesc("streamd_journal_disk_bytes",
		"Bytes the files under --data-dir (tables, value logs, WAL) take on disk: their allocated blocks, so a sparse value log counts what is written in it, not its length.", nil, nil)
	diskFreeDesc = prometheus.NewDesc("streamd_disk_free_bytes",
		"Free bytes of the file system of --data-dir available to streamd.", nil, nil)
	diskSizeDesc = prometheus.NewDesc("streamd_disk_size_bytes",
		"Size in bytes of the file system of --data-dir.", nil, nil)
	minFreeDesc = prometheus.NewDesc("streamd_journal_min_free_bytes",
		"Free bytes the journal keeps (--min-free-bytes): below it publishes are refused with reason disk_full.", nil, nil)
	failedDesc = prometheus.NewDesc("streamd_journal_failed",
		"1 once the journal has failed (health NOT_SERVING, publishes refused); a restart recovers it.", nil, nil)
)

// WatchStorage registers gauges of the journal's storage, read at scrape
// time: the bytes the files under dir take on disk, the free and total space of its
// file system, the free space publishes need (minFree), and whether the
// journal failed (failed returns non-nil). Call it once.
func (m *Metrics) WatchStorage(dir string, minFree int64, failed func() error) {
	m.reg.MustRegister(&storageCollector{dir: dir, minFree: minFree, failed: failed})
}

type storageCollector struct {
	dir     string
	minFree int64
	failed  func() error
}

func (c *storageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- diskBytesDesc
	ch <- diskFreeDesc
	ch <- diskSizeDesc
	ch <- minFreeDesc
	ch <- failedDesc
}

func (c *storageCollector) Collect(ch chan<- prometheus.Metric) {
	if n, err := diskspace.Used(c.dir); err == nil {
		ch <- prometheus.MustNewConstMetric(diskBytesDesc, prometheus.GaugeValue, float64(n))
	}
	if n, err := diskspace.Free(c.dir); err == nil {
		ch <- prometheus.MustNewConstMetric(diskFreeDesc, prometheus.GaugeValue, float64(n))
	}
	if n, err := diskspace.Size(c.dir); err == nil {
		ch <- prometheus.MustNewConstMetric(diskSizeDesc, prometheus.GaugeValue, float64(n))
	}
	ch <- prometheus.MustNewConstMetric(minFreeDesc, prometheus.GaugeValue, float64(c.minFree))
	ch <- prometheus.MustNewConstMetric(failedDesc, prometheus.GaugeValue, boolValue(c.failed() != nil))
}

package metrics

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/streamd/streamd/internal/buildinfo"
	"github.com/streamd/streamd/journal"
)

func TestObserverCounts(t *testing.T) {
	m := New()
	info := journal.Info{FirstOffset: 3, LastOffset: 10, Bytes: 1234}
	m.WatchJournal(func() journal.Info { return info })

	m.Committed(2, 5, 500, 3*time.Millisecond)
	m.Committed(1, 1, 100, 0) // async: no fsync observed
	m.RetentionDeleted(2)
	m.StreamOpened("all", "c1")
	m.Sent("all", "c1", 4, 400, 1)
	m.Sent("all", "c1", 0, 0, 2)
	m.Progressed("all", "c1", 7)
	m.Progressed("all", "c1", 6) // offsets only move forward

	for name, want := range map[string]float64{
		"streamd_journal_appends_total":                  3,
		"streamd_journal_events_appended_total":          6,
		"streamd_journal_fsync_batches_total":            2,
		"streamd_journal_retention_deleted_events_total": 2,
	} {
		if got := gather(t, m, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	want := `
# HELP streamd_stream_events_filtered_total Events read for a consumer but filtered away.
# TYPE streamd_stream_events_filtered_total counter
streamd_stream_events_filtered_total{consumer="c1",stream="all"} 3
# HELP streamd_stream_events_sent_total Events sent to consumers.
# TYPE streamd_stream_events_sent_total counter
streamd_stream_events_sent_total{consumer="c1",stream="all"} 4
# HELP streamd_stream_lag_events Journal last offset minus the last offset sent or reported to the consumer.
# TYPE streamd_stream_lag_events gauge
streamd_stream_lag_events{consumer="c1",stream="all"} 3
# HELP streamd_streams_open Subscribe streams open.
# TYPE streamd_streams_open gauge
streamd_streams_open{stream="all"} 1
# HELP streamd_journal_last_offset Last committed offset.
# TYPE streamd_journal_last_offset gauge
streamd_journal_last_offset 10
# HELP streamd_journal_first_offset First offset that may be read (the retention floor).
# TYPE streamd_journal_first_offset gauge
streamd_journal_first_offset 3
# HELP streamd_journal_bytes Bytes of events held by the journal.
# TYPE streamd_journal_bytes gauge
streamd_journal_bytes 1234
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want),
		"streamd_stream_events_filtered_total", "streamd_stream_events_sent_total", "streamd_stream_lag_events",
		"streamd_streams_open", "streamd_journal_last_offset", "streamd_journal_first_offset", "streamd_journal_bytes"); err != nil {
		t.Fatal(err)
	}
	if n, err := testutil.GatherAndCount(m.Registry(), "streamd_journal_fsync_seconds"); err != nil || n != 1 {
		t.Fatalf("fsync histogram: %d series, %v", n, err)
	}

	m.StreamClosed("all", "c1")
	if n, _ := testutil.GatherAndCount(m.Registry(), "streamd_stream_lag_events"); n != 0 {
		t.Fatalf("a closed consumer still has %d lag series", n)
	}
	if got := gather(t, m, "streamd_streams_open"); got != 0 {
		t.Fatalf("streams_open after close = %v", got)
	}
}

// gather returns the value of the single series of a counter or gauge.
func gather(t *testing.T, m *Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			ms := mf.GetMetric()
			if len(ms) != 1 {
				t.Fatalf("%s: %d series", name, len(ms))
			}
			if c := ms[0].GetCounter(); c != nil {
				return c.GetValue()
			}
			return ms[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("%s not gathered", name)
	return 0
}

func TestBuildInfo(t *testing.T) {
	b := buildinfo.Read()
	want := fmt.Sprintf(`
# HELP streamd_build_info Always 1; its labels say which build of streamd runs.
# TYPE streamd_build_info gauge
streamd_build_info{goversion=%q,revision=%q,version=%q} 1
`, b.GoVersion, b.Revision, b.Version)
	if err := testutil.GatherAndCompare(New().Registry(), strings.NewReader(want), "streamd_build_info"); err != nil {
		t.Fatal(err)
	}
}

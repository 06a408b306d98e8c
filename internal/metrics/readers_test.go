package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/streamd/streamd/producer"
)

// The named consumers with the largest lag get their own series (the
// largest over their slice ranges); the rest are summed under _other.
func TestReaderLagCardinality(t *testing.T) {
	m := New()
	m.WatchReaders(func() []producer.Reader {
		return []producer.Reader{
			{Consumer: "billing", First: 0, Last: 511, Lag: 10, LagTime: 2 * time.Second},
			{Consumer: "billing", First: 512, Last: 1023, Lag: 30, LagTime: time.Second},
			{Consumer: "audit", Lag: 20, LagTime: 5 * time.Second},
			{Consumer: "mail", Lag: 3, LagTime: 7 * time.Second},
			{Consumer: "sms", Lag: 4, LagTime: time.Second},
		}
	}, 2)
	want := `
# HELP streamd_reader_lag_events For the consumers reading from this streamd: the journal's last offset minus the offset each last reported as stored.
# TYPE streamd_reader_lag_events gauge
streamd_reader_lag_events{consumer="_other"} 7
streamd_reader_lag_events{consumer="audit"} 20
streamd_reader_lag_events{consumer="billing"} 30
# HELP streamd_reader_lag_seconds For the consumers reading from this streamd: how long ago the first event after the offset each stored was committed.
# TYPE streamd_reader_lag_seconds gauge
streamd_reader_lag_seconds{consumer="_other"} 7
streamd_reader_lag_seconds{consumer="audit"} 5
streamd_reader_lag_seconds{consumer="billing"} 2
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "streamd_reader_lag_events", "streamd_reader_lag_seconds"); err != nil {
		t.Fatal(err)
	}
}

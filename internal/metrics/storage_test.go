package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/streamd/streamd/journal"
)

func TestWatchStorage(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "wal"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, size := range map[string]int{"MANIFEST": 100, "wal/000001.wal": 500} {
		if err := os.WriteFile(filepath.Join(dir, name), bytes.Repeat([]byte{1}, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A value log as Badger leaves it: 1 GiB long, 4 KiB written.
	vlog, err := os.Create(filepath.Join(dir, "000001.vlog"))
	if err != nil {
		t.Fatal(err)
	}
	if err := vlog.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	if _, err := vlog.WriteAt(bytes.Repeat([]byte{1}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := vlog.Close(); err != nil {
		t.Fatal(err)
	}
	var failure error
	m := New()
	m.WatchStorage(dir, 128<<20, func() error { return failure })

	// The files' allocated blocks: at least the 4,696 bytes written, far
	// less than the value log's length.
	if got := gather(t, m, "streamd_journal_disk_bytes"); got < 4096+600 || got >= 1<<20 {
		t.Errorf("streamd_journal_disk_bytes = %v, want the blocks of 4,696 bytes written, under 1 MiB", got)
	}
	free, size := gather(t, m, "streamd_disk_free_bytes"), gather(t, m, "streamd_disk_size_bytes")
	if free <= 0 || size < free {
		t.Errorf("streamd_disk_free_bytes %v, streamd_disk_size_bytes %v: want 0 < free <= size", free, size)
	}
	if got := gather(t, m, "streamd_journal_min_free_bytes"); got != 128<<20 {
		t.Errorf("streamd_journal_min_free_bytes = %v", got)
	}
	if got := gather(t, m, "streamd_journal_failed"); got != 0 {
		t.Errorf("streamd_journal_failed = %v before a failure", got)
	}
	failure = errors.New("journal: write failed")
	if got := gather(t, m, "streamd_journal_failed"); got != 1 {
		t.Errorf("streamd_journal_failed = %v after a failure", got)
	}
}

// TestConsumerLabelsAreBounded: consumer names come from clients; past
// ConsumerLabelLimit they share one label value.
func TestConsumerLabelsAreBounded(t *testing.T) {
	m := New()
	m.WatchJournal(func() (info journalInfo) { info.LastOffset = 100; return info })
	extra := 30
	for i := range ConsumerLabelLimit + extra {
		name := fmt.Sprintf("client-%d", i)
		m.StreamOpened("all", name)
		m.Sent("all", name, 1, 10, 0)
		m.Progressed("all", name, 90)
	}
	if n := testutilCount(t, m, "streamd_stream_events_sent_total"); n != ConsumerLabelLimit+1 {
		t.Errorf("%d series of streamd_stream_events_sent_total, want %d", n, ConsumerLabelLimit+1)
	}
	if n := testutilCount(t, m, "streamd_stream_lag_events"); n != ConsumerLabelLimit+1 {
		t.Errorf("%d series of streamd_stream_lag_events, want %d", n, ConsumerLabelLimit+1)
	}
	if got := m.sentValue("all", OtherConsumers); got != float64(extra) {
		t.Errorf("events sent to %s = %v, want %d", OtherConsumers, got, extra)
	}
	// A known name keeps its own label.
	m.Sent("all", "client-0", 1, 10, 0)
	if got := m.sentValue("all", "client-0"); got != 2 {
		t.Errorf("events sent to client-0 = %v, want 2", got)
	}
}

type journalInfo = journal.Info

func testutilCount(t *testing.T, m *Metrics, name string) int {
	t.Helper()
	n, err := testutil.GatherAndCount(m.Registry(), name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (m *Metrics) sentValue(stream, consumer string) float64 {
	return testutil.ToFloat64(m.sent.WithLabelValues(stream, consumer))
}

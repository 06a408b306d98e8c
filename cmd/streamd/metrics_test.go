package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMetrics(t *testing.T) {
	d := startDaemon(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := streamdv1.NewEventStreamServiceClient(d.conn)
	var last uint64
	for i := range 3 {
		res, err := client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{
			{EntityType: "car", EntityId: "c1", EventType: "Moved", Payload: []byte{byte(i)}},
			{EntityType: "car", EntityId: "c2", EventType: "Moved", Payload: []byte{byte(i)}},
		}})
		if err != nil {
			t.Fatal(err)
		}
		last = res.Appended[len(res.Appended)-1].Offset
	}
	st, err := client.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
		StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST, ConsumerName: "test"}}}); err != nil {
		t.Fatal(err)
	}
	for received := 0; received < 6; {
		m, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		received += len(m.GetEvents().GetEvents())
	}

	// The stream is open and has been sent everything.
	var mfs map[string]*dto.MetricFamily
	if !testwait.Until(10*time.Second, func() bool {
		mfs = scrape(t, d.MetricsAddr)
		// The lag series exists once the stream reported its offset, and
		// is 0 when everything was sent.
		return value(mfs["streamd_stream_events_sent_total"]) == 6 && value(mfs["streamd_streams_open"]) == 1 &&
			mfs["streamd_stream_lag_events"] != nil && value(mfs["streamd_stream_lag_events"]) == 0
	}) {
		t.Fatalf("sent %v events, %v streams open, lag family %v; want 6, 1 and a lag of 0",
			value(mfs["streamd_stream_events_sent_total"]), value(mfs["streamd_streams_open"]), mfs["streamd_stream_lag_events"])
	}
	for _, name := range []string{
		"streamd_journal_appends_total", "streamd_journal_events_appended_total",
		"streamd_journal_fsync_batches_total", "streamd_journal_fsync_seconds",
		"streamd_journal_bytes", "streamd_journal_first_offset", "streamd_journal_last_offset",
		"streamd_journal_retention_deleted_events_total", "streamd_streams_open",
		"streamd_stream_events_sent_total", "streamd_stream_bytes_sent_total",
		"grpc_server_handled_total", "grpc_server_handling_seconds", "go_goroutines", "process_cpu_seconds_total",
	} {
		if mfs[name] == nil {
			t.Errorf("no %s in /metrics", name)
		}
	}
	for name, want := range map[string]float64{
		"streamd_journal_appends_total":         3,
		"streamd_journal_events_appended_total": 6,
		"streamd_journal_last_offset":           float64(last),
	} {
		if got := value(mfs[name]); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	// Storage, and publishes refused by reason, whoever refused them.
	for _, name := range []string{"streamd_journal_disk_bytes", "streamd_disk_free_bytes", "streamd_disk_size_bytes"} {
		if value(mfs[name]) <= 0 {
			t.Errorf("%s = %v, want > 0", name, value(mfs[name]))
		}
	}
	if value(mfs["streamd_journal_failed"]) != 0 || mfs["streamd_journal_min_free_bytes"] == nil {
		t.Errorf("streamd_journal_failed %v, streamd_journal_min_free_bytes %v", mfs["streamd_journal_failed"], mfs["streamd_journal_min_free_bytes"])
	}
	if _, err := client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityId: "c1", EventType: "Moved"}}}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("publish without entity type: %v, want InvalidArgument", err)
	}
	if _, err := client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: "car", EntityId: "c1", EventType: "Moved", Payload: make([]byte, 9<<20)}}}); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("publish over the message limit: %v, want ResourceExhausted", err)
	}
	refused := map[string]float64{}
	for _, m := range scrape(t, d.MetricsAddr)["streamd_publish_refused_total"].GetMetric() {
		refused[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
	}
	if refused["invalid"] != 1 || refused["too_large"] != 1 || refused["disk_full"] != 0 {
		t.Errorf("streamd_publish_refused_total by reason %v, want invalid 1, too_large 1, disk_full 0", refused)
	}
	if got := mfs["streamd_stream_events_sent_total"].GetMetric()[0].GetLabel(); len(got) != 2 ||
		got[0].GetValue() != "test" || got[1].GetValue() != "all" {
		t.Errorf("sent labels %v, want consumer=test stream=all", got)
	}

	// The consumer reports offset 2 as stored: its lag is 4 events.
	if err := st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_OffsetReport{
		OffsetReport: &streamdv1.OffsetReport{StoredOffset: 2}}}); err != nil {
		t.Fatal(err)
	}
	if !testwait.Until(10*time.Second, func() bool {
		mfs = scrape(t, d.MetricsAddr)
		return value(mfs["streamd_reader_lag_events"]) == 4 && value(mfs["streamd_reader_lag_seconds"]) > 0
	}) {
		t.Fatalf("streamd_reader_lag_events %v, _seconds %v; want 4 and more than 0", mfs["streamd_reader_lag_events"], mfs["streamd_reader_lag_seconds"])
	}
	if got := mfs["streamd_reader_lag_events"].GetMetric()[0].GetLabel(); len(got) != 1 || got[0].GetValue() != "test" {
		t.Errorf("reader lag labels %v, want consumer=test", got)
	}
}

// scrape GETs /metrics and parses it.
func scrape(t testing.TB, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", res.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// value sums a counter's or gauge's series; 0 when the family is absent.
func value(mf *dto.MetricFamily) float64 {
	var v float64
	for _, m := range mf.GetMetric() {
		v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return v
}

package console_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// regionsConfig is the config file of both regions (each runs the same
// aggregation stage and knows the same entity types); eu replicates us.
func regionsConfig(replicateFrom string) string {
	cfg := `
entity_types:
  - name: order
    mode: pinned
    primary: us
default_mode: local
aggregate:
  - name: laps
    filter: ["include type=car"]
    window: 1s
    group_by: [tag]
    output: {entity_type: car-summary, event_type: LapsSummarized, entity_id: "{region}/{tag}"}
`
	if replicateFrom != "" {
		cfg += fmt.Sprintf("replicate:\n  - from: us\n    addrs: [%q]\n", replicateFrom)
	}
	return cfg
}

// metric scrapes a sample of the Prometheus metrics at addr: the one named
// name with every label pair of labels (`consumer="x"`); 0 when absent.
func metric(t *testing.T, addr, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
next:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		return v
	}
	return 0
}

// sentBytes are the bytes of the events us's journal sends eu's replication
// (its filter: not of origin eu), by kind: summaries (car-summary) and
// detail.
func sentBytes(t *testing.T, events streamdv1.EventStreamServiceClient) (summary, detail float64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := events.Subscribe(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: &streamdv1.Init{
		ConsumerName: "test-sent-bytes", StartPolicy: streamdv1.StartPolicy_START_POLICY_EARLIEST,
		Filter: []*streamdv1.FilterCriterion{{Action: streamdv1.FilterAction_FILTER_ACTION_EXCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ORIGIN, Value: "eu"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	var last, at uint64
	for {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch m := resp.Response.(type) {
		case *streamdv1.SubscribeResponse_Hello:
			if last = m.Hello.GetLastOffset(); last == 0 {
				return 0, 0
			}
		case *streamdv1.SubscribeResponse_Events:
			for _, e := range m.Events.GetEvents() {
				if e.GetEntityType() == "car-summary" {
					summary += float64(proto.Size(e))
				} else {
					detail += float64(proto.Size(e))
				}
				at = e.GetOffset()
			}
		}
		if last > 0 && at >= last {
			return summary, detail
		}
	}
}

// The regions page shows the bytes each link received, summaries apart
// from detail, as the metrics count them (and as the source sent them),
// and each entity type's primary as the PrimaryService gives it, live; the
// aggregation page shows each stage as the AggregateService lists it, with
// its last windows.
func TestConsoleRegionsInBrowser(t *testing.T) {
	exe := chromium(t)
	us := startRegion(t, "--region", "us", "--config", writeFile(t, "us.yaml", regionsConfig("")))
	eu := startRegion(t, "--region", "eu", "--config", writeFile(t, "eu.yaml", regionsConfig(us.Addr)))
	const link = "replicate-us-all"
	euPrimary, euAggregates := streamdv1.NewPrimaryServiceClient(eu.conn), streamdv1.NewAggregateServiceClient(eu.conn)

	p := newPage(t, exe)
	p.run(chromedp.Navigate("http://" + eu.MetricsAddr + "/console/#regions"))
	linkRow := fmt.Sprintf(`#links tr[data-link=%q]`, link)
	p.waitFor("the link to us is up", func() bool { return p.text(linkRow+" .l-connected") == "yes" })

	t.Run("link bytes", func(t *testing.T) {
		p.t = t
		for i := range 6 {
			us.publish(t, fmt.Sprintf("car-%d", i), []string{"sports", "family"}[i%2])
		}
		p.waitFor("detail flowing on the link", func() bool {
			return p.js(`document.querySelector('`+linkRow+` .l-detail-rate').dataset.value > 0`) == "true"
		})
		// us's stage closes the window a second after its end: its
		// summaries then cross the link.
		p.waitFor("summaries flowing on the link", func() bool {
			return p.js(`document.querySelector('`+linkRow+` .l-summary-rate').dataset.value > 0`) == "true"
		})
		bytes := func(kind string) float64 {
			return metric(t, eu.MetricsAddr, "streamd_replication_received_bytes_total", `consumer="`+link+`"`, `region="us"`, `kind="`+kind+`"`)
		}
		// Once us's stage has closed every window it writes no more
		// summaries: the counts settle at what us sent.
		p.waitFor("us's stage has closed its windows", func() bool {
			resp, err := streamdv1.NewAggregateServiceClient(us.conn).ListAggregates(context.Background(), &streamdv1.ListAggregatesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			st := resp.GetAggregates()[0]
			return st.GetAggregated() == 6 && st.GetOpenWindows() == 0 && st.GetLag() == 0
		})
		var summary, detail float64
		p.waitFor("eu's counts of the link's bytes are what us sent", func() bool {
			summary, detail = sentBytes(t, us.events)
			return summary > 0 && detail > 0 && bytes("summary") == summary && bytes("detail") == detail
		})
		p.waitFor("the page shows the metrics' counts", func() bool {
			return p.js(`document.querySelector('`+linkRow+` .l-summary-bytes').dataset.value`) == strconv.FormatFloat(summary, 'f', -1, 64) &&
				p.js(`document.querySelector('`+linkRow+` .l-detail-bytes').dataset.value`) == strconv.FormatFloat(detail, 'f', -1, 64)
		})
		if got := p.text(fmt.Sprintf(`#regions-map text[data-link-bytes=%q]`, link)); !strings.HasPrefix(got, "summaries ") || !strings.Contains(got, " · detail ") {
			t.Errorf("the map labels the link %q, want its summaries' and detail's bytes/s", got)
		}
	})

	typeRow := `#entity-types tr[data-type="order"]`
	t.Run("primaries", func(t *testing.T) {
		p.t = t
		get := func() *streamdv1.GetPrimaryResponse {
			resp, err := euPrimary.GetPrimary(context.Background(), &streamdv1.GetPrimaryRequest{EntityType: "order"})
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}
		api := get()
		p.waitFor("the entity type and its primary", func() bool { return p.text(typeRow+" .t-primary") == api.GetPrimary() })
		if api.GetPrimary() != "us" || p.text(typeRow+" .t-configured") != api.GetConfigured() || p.text(typeRow+" .t-mode") != api.GetMode() {
			t.Fatalf("the API says primary %q, mode %q, configured %q; the page shows mode %q, configured %q", api.GetPrimary(), api.GetMode(), api.GetConfigured(),
				p.text(typeRow+" .t-mode"), p.text(typeRow+" .t-configured"))
		}
		if got := p.text(`#entity-types tr[data-type=""] .t-name`) + " " + p.text(`#entity-types tr[data-type=""] .t-mode`); got != "(every other type) local" {
			t.Errorf("the row of the unlisted types shows %q, want their default mode, local", got)
		}
		// A write in eu goes to the primary, us: the page counts it.
		if _, err := eu.events.Publish(context.Background(), &streamdv1.PublishRequest{Events: []*streamdv1.Event{
			{EntityType: "order", EntityId: "o-1", EventType: "Placed", Payload: []byte("{}")}}}); err != nil {
			t.Fatal(err)
		}
		forwards := metric(t, eu.MetricsAddr, "streamd_primary_forwards_total", `entity_type="order"`)
		if forwards != 1 {
			t.Fatalf("streamd_primary_forwards_total{entity_type=order} = %v after one write in eu, want 1", forwards)
		}
		p.waitFor("the page counts the forwarded write", func() bool { return p.number(typeRow+" .t-forwards") == "1" })
		if got, want := p.number(typeRow+" .t-takeovers"), strconv.FormatFloat(metric(t, eu.MetricsAddr, "streamd_primary_takeovers_total", `entity_type="order"`), 'f', -1, 64); got != want {
			t.Errorf("taken over shows %s, the metrics say %s", got, want)
		}

		// Pinned to eu with streamctl: the page follows without a reload.
		streamctl(t, "--addr", eu.Addr, "primary", "set", "--type", "order", "--region", "eu")
		api = get()
		if api.GetPrimary() != "eu" || api.GetPinnedIn() != "eu" {
			t.Fatalf("after primary set the API says primary %q pinned in %q", api.GetPrimary(), api.GetPinnedIn())
		}
		p.waitFor("the page shows the new primary", func() bool { return p.text(typeRow+" .t-primary") == "eu" })
		pinned := time.Unix(0, api.GetPinnedAtUnixNano()).UTC().Truncate(time.Millisecond).Format("2006-01-02T15:04:05.000Z")
		if got, want := p.text(typeRow+" .t-pinned"), strings.Replace(pinned, ".000Z", "Z", 1)+" in eu"; got != want {
			t.Errorf("pinned shows %q, the API says %q", got, want)
		}
		p.screenshot("regions.png")
	})

	t.Run("aggregates", func(t *testing.T) {
		p.t = t
		p.click(`nav a[data-page="aggregates"]`)
		stageRow := `#aggregates tr[data-stage="laps"]`
		var st *streamdv1.AggregateStatus
		// eu's stage aggregates the cars copied from us; once its windows
		// have closed its figures settle, and the page shows them.
		p.waitFor("the page shows the stage as the API lists it", func() bool {
			resp, err := euAggregates.ListAggregates(context.Background(), &streamdv1.ListAggregatesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			st = resp.GetAggregates()[0]
			w := st.GetLastWindow()
			if w == nil || st.GetOpenWindows() != 0 || st.GetLag() != 0 {
				return false
			}
			skipped := st.GetSkippedNotJson() + st.GetSkippedMissingField() + st.GetSkippedNotNumber() + st.GetSkippedTooManyWindows()
			latest := `#windows table[data-stage="laps"] tbody tr:first-child`
			for sel, want := range map[string]uint64{
				" .a-read": st.GetRead(), " .a-aggregated": st.GetAggregated(), " .a-late": st.GetLate(), " .a-skipped": skipped,
				" .a-summaries": st.GetSummaries(), " .a-open": uint64(st.GetOpenWindows()), " .a-lag": st.GetLag(),
			} {
				if p.number(stageRow+sel) != strconv.FormatUint(want, 10) {
					return false
				}
			}
			return p.js(`document.querySelector('`+latest+`').dataset.start`) == strconv.FormatInt(w.GetStartUnixMs(), 10) &&
				p.number(latest+" .w-summaries") == strconv.FormatUint(uint64(w.GetSummaries()), 10) &&
				p.number(latest+" .w-events") == strconv.FormatUint(w.GetEvents(), 10)
		})
		// While idle the watermark follows the clock: the page's, a sample
		// older, is at most a few samples behind the API's.
		shown, err := time.Parse(time.RFC3339Nano, p.text(stageRow+" .a-watermark"))
		now, lerr := euAggregates.ListAggregates(context.Background(), &streamdv1.ListAggregatesRequest{Name: "laps"})
		if lerr != nil {
			t.Fatal(lerr)
		}
		if api := time.UnixMilli(now.GetAggregates()[0].GetWatermarkUnixMs()); err != nil || shown.After(api) || api.Sub(shown) > 5*time.Second {
			t.Errorf("watermark shows %v (%v), the API says %v", shown, err, api)
		}
		if st.GetRead() != 6 || st.GetSummaries() == 0 || p.text(stageRow+" .a-output") != "car-summary" || p.text(stageRow+" .a-running") != "yes" {
			t.Fatalf("the API lists %v; the page shows output %q, running %q", st, p.text(stageRow+" .a-output"), p.text(stageRow+" .a-running"))
		}
		p.screenshot("aggregates.png")
	})
}

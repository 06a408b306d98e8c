package monitoring

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/streamd/streamd/internal/metrics"
	"github.com/streamd/streamd/journal"
)

// dashboard is the part of Grafana's dashboard model the checks read;
// decoding rejects unknown fields, so a typo in a key is an error.
type dashboard struct {
	Title         string   `json:"title"`
	UID           string   `json:"uid"`
	Description   string   `json:"description"`
	Tags          []string `json:"tags"`
	Timezone      string   `json:"timezone"`
	Editable      bool     `json:"editable"`
	GraphTooltip  int      `json:"graphTooltip"`
	SchemaVersion int      `json:"schemaVersion"`
	Version       int      `json:"version"`
	Time          struct{ From, To string }
	Refresh       string `json:"refresh"`
	Templating    struct{ List []variable }
	Annotations   struct{ List []any }
	Panels        []panel `json:"panels"`
}

type variable struct {
	Name       string      `json:"name"`
	Label      string      `json:"label"`
	Type       string      `json:"type"`
	Query      any         `json:"query"`
	Datasource *datasource `json:"datasource"`
	Definition string      `json:"definition"`
	IncludeAll bool        `json:"includeAll"`
	Multi      bool        `json:"multi"`
	AllValue   string      `json:"allValue"`
	Current    struct{}    `json:"current"`
	Refresh    int         `json:"refresh"`
	Hide       int         `json:"hide"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID          int         `json:"id"`
	Type        string      `json:"type"`
	Title       string      `json:"title"`
	Description string      `json:"description"`
	Collapsed   bool        `json:"collapsed"`
	Datasource  *datasource `json:"datasource"`
	GridPos     struct{ X, Y, W, H int }
	Targets     []struct {
		RefID        string      `json:"refId"`
		Expr         string      `json:"expr"`
		LegendFormat string      `json:"legendFormat"`
		Datasource   *datasource `json:"datasource"`
	} `json:"targets"`
	FieldConfig struct {
		Defaults  struct{ Unit string }
		Overrides []any
	} `json:"fieldConfig"`
	Options map[string]any `json:"options"`
	Panels  []panel        `json:"panels"`
}

// Panel types of Grafana's core the dashboard may use.
var panelTypes = []string{"row", "timeseries", "stat", "gauge", "bargauge", "table", "text", "heatmap"}

func readDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	return d
}

func TestDashboardLoads(t *testing.T) {
	d := readDashboard(t)
	if d.Title == "" || d.UID == "" || len(d.UID) > 40 || d.SchemaVersion < 36 {
		t.Errorf("title %q, uid %q, schemaVersion %d: want a title, a uid of at most 40 characters, schemaVersion 36 or later", d.Title, d.UID, d.SchemaVersion)
	}
	vars := map[string]variable{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v
	}
	if vars["datasource"].Type != "datasource" || vars["datasource"].Query != "prometheus" {
		t.Errorf("no datasource variable of type prometheus: %+v", vars["datasource"])
	}
	if _, ok := vars["instance"]; !ok {
		t.Error("no instance variable")
	}
	ids := map[int]bool{}
	occupied := map[[2]int]int{} // grid cell → panel id
	for _, p := range d.Panels {
		if p.ID <= 0 || ids[p.ID] {
			t.Errorf("panel %q: id %d is not a positive, unique id", p.Title, p.ID)
		}
		ids[p.ID] = true
		if !slices.Contains(panelTypes, p.Type) || p.Title == "" {
			t.Errorf("panel %d: type %q, title %q: want a core panel type and a title", p.ID, p.Type, p.Title)
		}
		g := p.GridPos
		if g.X < 0 || g.Y < 0 || g.W <= 0 || g.H <= 0 || g.X+g.W > 24 {
			t.Errorf("panel %d %q: gridPos %+v is outside the 24-column grid", p.ID, p.Title, g)
		}
		overlapped := map[int]bool{}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := occupied[[2]int{x, y}]; ok && !overlapped[other] {
					overlapped[other] = true
					t.Errorf("panel %d %q overlaps panel %d at (%d,%d)", p.ID, p.Title, other, x, y)
				}
				occupied[[2]int{x, y}] = p.ID
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %d %q: want the ${datasource} data source and at least one query", p.ID, p.Title)
		}
		refs := map[string]bool{}
		for _, q := range p.Targets {
			if q.RefID == "" || refs[q.RefID] || strings.TrimSpace(q.Expr) == "" {
				t.Errorf("panel %d %q: query %q with refId %q: want a unique refId and an expression", p.ID, p.Title, q.Expr, q.RefID)
			}
			refs[q.RefID] = true
		}
	}
}

// rules is the Prometheus rule file format.
type rules struct {
	Groups []struct {
		Name  string
		Rules []struct {
			Alert       string
			Expr        string
			For         string
			Labels      map[string]string
			Annotations map[string]string
		}
	}
}

func readRules(t *testing.T) rules {
	t.Helper()
	raw, err := os.ReadFile("prometheus-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var r rules
	if err := yaml.UnmarshalStrict(raw, &r); err != nil {
		t.Fatalf("prometheus-rules.yaml: %v", err)
	}
	return r
}

// exported returns the names of the metric families streamd exports, with
// every series-creating path exercised: the metrics package's own and the
// gRPC server metrics the daemon registers.
func exported(t *testing.T) map[string]string {
	t.Helper()
	m := metrics.New()
	m.WatchJournal(func() journal.Info { return journal.Info{LastOffset: 2} })
	m.WatchStorage(t.TempDir(), 1, func() error { return nil })
	m.WatchConsumers(func() []metrics.ConsumerProducer {
		return []metrics.ConsumerProducer{{Consumer: "c", Producer: "p", Connected: true, Running: true}}
	})
	m.Committed(1, 1, 1, 1)
	m.RetentionDeleted(1)
	m.StreamOpened("all", "c")
	m.Sent("all", "c", 1, 1, 1)
	m.Progressed("all", "c", 1)
	g := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	m.Registry().MustRegister(g)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]string{}
	for _, mf := range mfs {
		names[mf.GetName()] = mf.GetType().String()
	}
	// The gRPC server metrics have no series before a call: take their
	// names from their descriptions.
	ch := make(chan *prometheus.Desc)
	go func() { g.Describe(ch); close(ch) }()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		n := fqName.FindStringSubmatch(d.String())[1]
		names[n] = "COUNTER"
		if strings.HasSuffix(n, "_seconds") {
			names[n] = "HISTOGRAM"
		}
	}
	return names
}

var metricName = regexp.MustCompile(`\b(?:streamd|grpc_server|go|process)_[a-z0-9_]+\b`)

// TestQueriesNameExportedMetrics: every metric the dashboard and the alert
// rules query is one streamd exports (a histogram's with _bucket, _sum or
// _count).
func TestQueriesNameExportedMetrics(t *testing.T) {
	names := exported(t)
	known := func(n string) bool {
		if _, ok := names[n]; ok {
			return true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(n, suffix); ok && names[base] == "HISTOGRAM" {
				return true
			}
		}
		return false
	}
	var exprs []string
	for _, p := range readDashboard(t).Panels {
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	seen := 0
	for _, e := range exprs {
		for _, n := range metricName.FindAllString(e, -1) {
			seen++
			if !known(n) {
				t.Errorf("%s in %q is not a metric streamd exports", n, e)
			}
		}
	}
	if seen == 0 {
		t.Fatal("no metric names found in the queries")
	}
}

// ruleTests is the promtool test file format, the part read here.
type ruleTests struct {
	RuleFiles          []string `json:"rule_files"`
	EvaluationInterval string   `json:"evaluation_interval"`
	Tests              []struct {
		Name          string                            `json:"name"`
		Interval      string                            `json:"interval"`
		InputSeries   []struct{ Series, Values string } `json:"input_series"`
		AlertRuleTest []struct {
			EvalTime  string           `json:"eval_time"`
			Alertname string           `json:"alertname"`
			ExpAlerts []map[string]any `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// TestEveryAlertHasUnitTests: promtool test rules runs the cases; here,
// each alert must have one that fires it and one that does not.
func TestEveryAlertHasUnitTests(t *testing.T) {
	raw, err := os.ReadFile("prometheus-rules.test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rt ruleTests
	if err := yaml.UnmarshalStrict(raw, &rt); err != nil {
		t.Fatalf("prometheus-rules.test.yaml: %v", err)
	}
	if !slices.Equal(rt.RuleFiles, []string{"prometheus-rules.yaml"}) {
		t.Errorf("rule_files %v, want prometheus-rules.yaml", rt.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	alerts := 0
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s: a test that fires it %v, one where it stays quiet %v; want both", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: want a severity label, a summary and a description", r.Alert)
			}
		}
	}
	if alerts == 0 {
		t.Fatal("no alerts in prometheus-rules.yaml")
	}
}

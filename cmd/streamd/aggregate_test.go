package main

import (
	"strings"
	"testing"
	"time"

	"github.com/streamd/streamd/aggregate"
	"github.com/streamd/streamd/filters"
)

func TestParseAggregateConfig(t *testing.T) {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	good := `
streams:
  - name: all
  - name: cars
    entity_types: [car]
    filter: ["exclude tag=internal"]
aggregate:
  - name: car-summary
    stream: cars
    filter: ["exclude tag=test"]
    window: 5s
    grace: 1500ms
    time_field: t
    group_by: [tag, "topic[1]"]
    values:
      - field: speed_kmh
        ops: [avg, max]
    output:
      entity_type: car-summary
      event_type: WindowSummarized
      entity_id: "{region}/{tag}"
`
	settings, err := parseConfig([]byte(good), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(settings.aggs) != 1 {
		t.Fatalf("aggregates = %+v", settings.aggs)
	}
	a := settings.aggs[0]
	var crits []string
	for _, c := range a.Filter {
		crits = append(crits, filters.Format(c))
	}
	if a.Name != "car-summary" || a.Window != 5*time.Second || a.Grace != 1500*time.Millisecond || a.TimeField != "t" ||
		len(a.EntityTypes) != 1 || a.EntityTypes[0] != "car" || strings.Join(crits, ",") != "exclude tag=internal,exclude tag=test" ||
		len(a.GroupBy) != 2 || a.Values[0].Ops[1] != aggregate.OpMax || a.Output.EntityID != "{region}/{tag}" {
		t.Fatalf("aggregate = %+v (filter %q)", a, crits)
	}

	entry := func(body string) string {
		return "aggregate:\n  - name: s\n    window: 1s\n    output: {entity_type: sum, event_type: Summed}\n" + body
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", entry("    windw: 1s\n"), `line 5: unknown key "windw" in an entry of aggregate: (it takes name, stream, filter, window, grace, time_field, group_by, values, output, max_open_windows)`},
		{"no name", "aggregate:\n  - window: 1s\n    output: {entity_type: a, event_type: b}\n", "aggregate[0]: aggregate: invalid options: name is empty"},
		{"no window", "aggregate:\n  - name: s\n    output: {entity_type: a, event_type: b}\n", "aggregate[0] (s): aggregate: invalid options: window 0s"},
		{"bad duration", entry("    grace: soon\n"), `line 5: want a duration such as 30s or 10m, got the string "soon"`},
		{"bad filter", entry("    filter: [\"include colour=red\"]\n"), "aggregate[0] (s).filter[0]"},
		{"unknown stream", entry("    stream: trucks\n"), `aggregate[0] (s): stream "trucks" is not one of the streams: of the file`},
		{"bad key", entry("    group_by: [colour]\n"), `aggregate[0] (s): aggregate: invalid options: group_by[0] "colour"`},
		{"bad op", entry("    values: [{field: x, ops: [median]}]\n"), `op "median"`},
		{"no output type", "aggregate:\n  - name: s\n    window: 1s\n", "output entity_type is empty"},
		{"template", strings.Replace(entry("    group_by: [tag]\n"), "event_type: Summed}", "event_type: Summed, entity_id: \"{topic[0]}\"}", 1), "{topic[0]} is not a group_by key"},
		{"same name twice", entry("") + "  - name: s\n    window: 1s\n    output: {entity_type: b, event_type: c}\n", `aggregate[1] (s): a second stage named "s"`},
	} {
		_, err := parseConfig([]byte(tc.yaml), now)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

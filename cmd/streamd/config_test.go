package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/topology"
)

func TestParseConfig(t *testing.T) {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := `
streams:
  - name: all
  - name: carts
    entity_types: [cart]
    filter: ["exclude tag=internal"]
replicate:
  - from: us
    addrs: ["127.0.0.1:7071", "127.0.0.1:7072"]
    filter: ["include type=cart"]
    token_file: ` + tokenFile + `
    streams: 4
  - from: ap
    addrs: ["127.0.0.1:7073"]
    stream: carts
`
	settings, err := parseConfig([]byte(good), now)
	if err != nil {
		t.Fatal(err)
	}
	streams, repls := settings.streams, settings.repls
	if len(streams) != 2 || streams[1].Name != "carts" || streams[1].EntityTypes[0] != "cart" || filters.Format(streams[1].Filter[0]) != "exclude tag=internal" {
		t.Fatalf("streams = %+v", streams)
	}
	if len(repls) != 2 || repls[0].Name != "replicate-us-all" || repls[1].Name != "replicate-ap-carts" ||
		len(repls[0].From.Addrs) != 2 || repls[1].Stream != "carts" || len(repls[0].DialOptions) != 3 ||
		repls[0].Streams != 4 || repls[1].Streams != 1 {
		t.Fatalf("replications = %+v", repls)
	}
	if _, err := parseConfig(nil, now); err != nil {
		t.Fatalf("an empty file: %v", err)
	}
	grouped, err := parseConfig([]byte("replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    group: eu-from-us\n    streams: 4\n  - from: ap\n    addrs: [\"y:1\"]\n"), now)
	if err != nil {
		t.Fatal(err)
	}
	if g := grouped.grouped; len(g) != 1 || g[0].group != "eu-from-us" || g[0].opts.Name != "replicate-us-all" || g[0].opts.Streams != 4 ||
		len(grouped.repls) != 1 || grouped.repls[0].Name != "replicate-ap-all" {
		t.Fatalf("grouped %+v, replications %+v", g, grouped.repls)
	}

	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", "streams:\n  - name: a\n    types: [x]\n", `line 3: unknown key "types" in an entry of streams: (it takes name, entity_types, filter)`},
		{"unknown top-level keys", "stream: a\nregion: eu\nreplica: []\n", `line 1: unknown key "stream" in the file's top level (it takes streams, region, regions, replicate, entity_types, default_mode, default_primary, aggregate, group); line 3: unknown key "replica"`},
		{"group on a region", "regions:\n  - {name: us, addrs: [\"x:1\"], grup: g}\n", `line 2: unknown key "grup" in an entry of regions: (it takes name, addrs, tls, token_file, streams, group)`},
		{"bad region group", "regions:\n  - {name: us, addrs: [\"x:1\"], group: Us}\ndefault_mode: local\n", `regions[0] ("us").group "Us"`},
		{"unknown tls key", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    tls: {cert: c, keyfile: k}\n", `line 4: unknown key "keyfile" in tls: (it takes ca, cert, key)`},
		{"regions a mapping", "regions: {name: us}\n", "line 1: want a list of regions: entries, got a mapping"},
		{"addrs a string", "replicate:\n  - from: us\n    addrs: x:1\n", `line 3: want a list of strings, got the string "x:1"`},
		{"streams a word", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    streams: two\n", `line 4: want a whole number, got the string "two"`},
		{"tls a list", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    tls: [a]\n", "line 4: want a mapping (tls:), got a list"},
		{"region a list", "region: [eu]\n", "line 1: want a string, got a list"},
		{"not yaml", "streams: [", "yaml"},
		{"stream without name", "streams:\n  - entity_types: [x]\n", "streams[0]: name is empty"},
		{"bad stream filter", "streams:\n  - name: a\n    filter: [\"include colour=red\"]\n", "streams[0].filter[0]"},
		{"no from", "replicate:\n  - addrs: [\"x:1\"]\n", "replicate[0]: from"},
		{"no addrs", "replicate:\n  - from: us\n", "replicate[0]: addrs"},
		{"bad filter", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    filter: [\"include type=a\", \"include entity~(\"]\n", "replicate[0].filter[1]"},
		{"same name twice", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n  - from: us\n    addrs: [\"y:1\"]\n", `replicate[1]: a second replication named "replicate-us-all"`},
		{"cert without key", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    tls: {cert: c.pem}\n", "replicate[0].tls.cert and replicate[0].tls.key go together"},
		{"missing ca", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    tls: {ca: /nonexistent/ca.pem}\n", "replicate[0].tls.ca"},
		{"missing token file", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    token_file: /nonexistent/token\n", "replicate[0].token_file"},
		{"zero streams", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    streams: 0\n", "replicate[0]: streams 0 is not in 1-1024"},
		{"too many streams", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    streams: 1025\n", "replicate[0]: streams 1025 is not in 1-1024"},
		{"bad group", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    group: Eu_Pods\n", `replicate[0].group "Eu_Pods": a lowercase RFC 1123 label`},
		{"long group", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    group: " + strings.Repeat("g", 51) + "\n", "is 51 characters: at most 50"},
		{"group twice", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    group: eu\n  - from: ap\n    addrs: [\"y:1\"]\n    group: eu\n", `replicate[1].group "eu" is also the group of replication "replicate-us-all"`},
		{"group without name", "group:\n  token_file: /nonexistent\n", "group: name is empty"},
		{"bad group name", "group:\n  name: Orders\n", `group.name "Orders": a lowercase RFC 1123 label`},
		{"group with regions", "regions:\n  - {name: us, addrs: [\"a:1\"]}\ndefault_primary: us\ngroup:\n  name: orders\n", "group: at the top level is for a streamd of no project"},
		{"group with entity types", "entity_types:\n  - {name: c, mode: local}\ngroup:\n  name: orders\n", "group: with entity_types: or default_mode: is not built"},
		{"group with a grouped replicate", "replicate:\n  - from: us\n    addrs: [\"x:1\"]\n    group: eu\ngroup:\n  name: orders\n", `group: with it every replicate: entry follows the group's slices (each pod copies the slices it writes), but replicate entry "replicate-us-all" has group "eu"`},
		{"group with aggregate", "aggregate:\n  - {name: s, window: 1s, output: {entity_type: sum, event_type: Summed}}\ngroup:\n  name: orders\n", "group: with aggregate: is not built"},
		{"group token file", "group:\n  name: orders\n  token_file: /nonexistent/token\n", "group.token_file"},
		{"negative region streams", "regions:\n  - {name: us, addrs: [\"a:1\"]}\n  - {name: eu, addrs: [\"b:1\"], streams: -2}\ndefault_primary: us\n", `regions[1] ("eu"): streams -2 is not in 1-1024`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.yaml), now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// The daemon refuses a config it cannot run, before it opens anything.
func TestConfigRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "streamd.yaml")
	if err := os.WriteFile(cfg, []byte("replicate:\n  - from: us\n    addrs: [\"127.0.0.1:1\"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	entityGroupCfg := filepath.Join(dir, "orders.yaml")
	if err := os.WriteFile(entityGroupCfg, []byte("group:\n  name: orders\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	groupCfg := filepath.Join(dir, "group.yaml")
	if err := os.WriteFile(groupCfg, []byte("replicate:\n  - from: us\n    addrs: [\"127.0.0.1:1\"]\n    group: eu-from-us\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", cfg}, "--region must name this one"},
		{[]string{"--config", cfg, "--region", "us"}, "is from this region"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, "--config: open"},
		{[]string{"--config", groupCfg}, "--region must name this one"},
		{[]string{"--config", groupCfg, "--region", "eu"}, "give --pod-name and --pod-namespace (STREAMD_POD_NAME and STREAMD_POD_NAMESPACE"},
		{[]string{"--config", groupCfg, "--region", "eu", "--pod-name", "eu-0", "--pod-namespace", "shop"}, "it needs the Kubernetes API"},
		{[]string{"--config", groupCfg, "--region", "eu", "--pod-name", "eu-0", "--pod-namespace", "shop", "--kube-api", "http://127.0.0.1:1", "--group-lease-duration", "1s"},
			"--group-lease-duration 1s: group: invalid options: Options.LeaseDuration 1s is below 3s"},
		{[]string{"--config", groupCfg, "--region", "eu", "--pod-name", "Eu_0", "--pod-namespace", "shop", "--kube-api", "http://127.0.0.1:1"}, `Options.Identity "Eu_0"`},
		{[]string{"--config", entityGroupCfg}, "group orders: give --pod-name and --pod-namespace"},
		{[]string{"--config", entityGroupCfg, "--pod-name", "orders-0", "--pod-namespace", "shop", "--kube-api", "http://127.0.0.1:1"}, "group orders: the events of its pods carry this region as their origin: --region must name it"},
		{[]string{"--config", entityGroupCfg, "--region", "eu", "--pod-name", "orders-0", "--pod-namespace", "shop", "--kube-api", "http://127.0.0.1:1", "--group-hold-wait", "0s"}, "--group-hold-wait 0s: want a positive duration"},
		{[]string{"--config", entityGroupCfg, "--region", "eu", "--pod-name", "orders-0", "--pod-namespace", "shop", "--kube-api", "http://127.0.0.1:1", "--pod-address", "orders-0"}, `--pod-address "orders-0"`},
	} {
		cmd := exec.Command(binary, append([]string{"--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0", "--metrics-listen", ""}, tc.args...)...)
		// Outside a cluster, even where the tests run in a pod.
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "KUBERNETES_SERVICE_") })
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("streamd %v: %v\n%s\nwant an error mentioning %q", tc.args, err, out, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Errorf("a refused config created the data directory (%v)", err)
	}
}

// FuzzParseConfig: any file is either refused with an error or yields
// named streams and replications with a source and addresses.
func FuzzParseConfig(f *testing.F) {
	f.Add("streams:\n  - name: all\n  - name: c\n    entity_types: [cart]\n    filter: [\"exclude tag=x\"]\n")
	f.Add("replicate:\n  - from: us\n    addrs: [\"127.0.0.1:1\"]\n    stream: s\n    filter: [\"include type=cart ttl=5m\"]\n")
	f.Add("replicate: [{from: a, addrs: [b], name: n}, {from: a, addrs: [b], name: n}]")
	f.Add("{streams: 3}")
	f.Add("regions:\n  - {name: us, addrs: [\"a:1\"]}\n  - {name: eu, addrs: [\"b:1\"]}\ndefault_primary: eu\nregion: us\nentity_types:\n  - {name: c, mode: replicated}\n  - {name: k, mode: local}\n")
	f.Add("regions: [{name: us, addrs: [a]}, {name: us, addrs: [b]}]\ndefault_mode: request-region\ndefault_primary: us\n")
	f.Add("regions: [{name: us, addrs: [a]}, {name: eu, addrs: [b]}]\ndefault_primary: us\nentity_types:\n  - {name: c, mode: replicated, replication: on-demand, inactivity: 1m, summary_types: [s]}\n")
	f.Add("regions: [{name: us, addrs: [a], streams: 4}, {name: eu, addrs: [b], streams: 1024}]\ndefault_primary: us\nreplicate: [{from: x, addrs: [c], streams: 2}]\n")
	f.Add("replicate: [{from: x, addrs: [c], streams: 2, group: g}, {from: y, addrs: [d], group: h}, {from: z, addrs: [e]}]\n")
	f.Add("group: {name: orders}\nreplicate: [{from: x, addrs: [c], streams: 2}, {from: y, addrs: [d]}]\n")
	f.Add("regions: [{name: us, addrs: [a]}, {name: eu, addrs: [b, c], group: eu-pods}]\ndefault_mode: local\nreplicate: [{from: x, addrs: [d]}]\n")
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, raw string) {
		settings, err := parseConfig([]byte(raw), now)
		if err != nil {
			return
		}
		for _, s := range settings.streams {
			if s.Name == "" {
				t.Fatalf("a stream without a name was accepted: %q", raw)
			}
		}
		names := map[string]bool{}
		for _, r := range settings.repls {
			if r.From.Name == "" || len(r.From.Addrs) == 0 || r.Name == "" || names[r.Name] || r.Streams < 1 || r.Streams > 1024 {
				t.Fatalf("replication %+v accepted from %q", r, raw)
			}
			names[r.Name] = true
		}
		groups := map[string]bool{}
		for _, g := range settings.grouped {
			r := g.opts
			if r.From.Name == "" || len(r.From.Addrs) == 0 || r.Name == "" || names[r.Name] || r.Streams < 1 || r.Streams > 1024 || g.group == "" || len(g.group) > 50 || groups[g.group] {
				t.Fatalf("grouped replication %+v (group %q) accepted from %q", r, g.group, raw)
			}
			names[r.Name], groups[g.group] = true, true
		}
		for _, region := range settings.regions {
			_, withIt, err := settings.withRegion(region)
			if err != nil {
				t.Fatalf("region %q of the list refused: %v (%q)", region, err, raw)
			}
			perRegion := 1
			if len(settings.onDemand) > 0 {
				perRegion = 2 // region-<name> and on-demand-<name>
			}
			repls := withIt.repls
			if g := withIt.entityGroup; g != nil { // this region's pods share its entities
				if len(repls) > 0 {
					t.Fatalf("region %q of group %s replicates %+v outside it (%q)", region, g.name, repls, raw)
				}
				for _, gr := range withIt.grouped[len(settings.grouped):] {
					repls = append(repls, gr.opts)
				}
			}
			if len(repls) != len(settings.repls)+perRegion*(len(settings.regions)-1) || slices.ContainsFunc(repls, func(r topology.ReplicationOptions) bool {
				return r.From.Name == region || r.Streams < 1 || r.Streams > 1024
			}) {
				t.Fatalf("region %q replicates %+v (%q)", region, repls, raw)
			}
		}
		if len(settings.regions) == 0 && settings.entityGroup != nil {
			_, withIt, err := settings.withRegion("")
			if err != nil || len(withIt.repls) > 0 || len(withIt.grouped) != len(settings.grouped)+len(settings.repls) {
				t.Fatalf("group %s: replications %+v do not follow its slices (%v, %q)", settings.entityGroup.name, withIt.repls, err, raw)
			}
		}
		if err := settings.types.Validate(); err != nil {
			t.Fatalf("entity types accepted but invalid: %v (%q)", err, raw)
		}
	})
}

// An on-demand type splits each region's replication in two: region-<name>
// without the on-demand and summary types, and on-demand-<name> in include
// mode with the summaries; config mistakes name the entry.
func TestParseConfigOnDemand(t *testing.T) {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	project := "regions:\n  - {name: us, addrs: [\"a:1\"]}\n  - {name: eu, addrs: [\"b:1\"]}\ndefault_primary: us\nentity_types:\n"
	settings, err := parseConfig([]byte(project+
		"  - {name: cart, mode: replicated, replication: on-demand, inactivity: 90s}\n"+
		"  - {name: auction, mode: pinned, primary: us, replication: on-demand, summary_types: [auction-summary]}\n"+
		"  - {name: order, mode: pinned, primary: us, replication: always}\n"), now)
	if err != nil {
		t.Fatal(err)
	}
	want := []onDemandType{{name: "cart", inactivity: 90 * time.Second}, {name: "auction", summaries: []string{"auction-summary"}, inactivity: defaultInactivity}}
	if !slices.EqualFunc(settings.onDemand, want, func(a, b onDemandType) bool {
		return a.name == b.name && a.inactivity == b.inactivity && slices.Equal(a.summaries, b.summaries)
	}) {
		t.Fatalf("onDemand = %+v, want %+v", settings.onDemand, want)
	}
	if len(settings.types.EntityTypes) != 3 || settings.types.EntityTypes[1].Primary != "us" {
		t.Fatalf("entity types = %+v", settings.types.EntityTypes)
	}
	_, eu, err := settings.withRegion("eu")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range eu.repls {
		var crits []string
		for _, c := range r.Filter {
			crits = append(crits, filters.Format(c))
		}
		got = append(got, r.Name+": "+strings.Join(crits, ", "))
	}
	wantRepls := []string{
		"region-us: exclude type=cart, exclude type=auction, exclude type=auction-summary",
		"on-demand-us: include origin=eu, include type=auction-summary",
	}
	if !slices.Equal(got, wantRepls) {
		t.Fatalf("eu replicates\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantRepls, "\n"))
	}

	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown replication", project + "  - {name: cart, mode: replicated, replication: lazy}\n", `entity_types[0] ("cart"): replication "lazy": want always (the default) or on-demand`},
		{"without regions", "entity_types:\n  - {name: cart, mode: replicated, replication: on-demand}\n", `entity_types[0] ("cart"): replication: on-demand is between the project's regions`},
		{"negative inactivity", project + "  - {name: cart, mode: replicated, replication: on-demand, inactivity: -1m}\n", `entity_types[0] ("cart"): inactivity -1m0s`},
		{"bad inactivity", project + "  - {name: cart, mode: replicated, replication: on-demand, inactivity: soon}\n", "soon"},
		{"summary without on-demand", project + "  - {name: auction, mode: replicated, summary_types: [s]}\n", `entity_types[0] ("auction"): summary_types and inactivity belong to replication: on-demand`},
		{"empty summary", project + "  - {name: auction, mode: replicated, replication: on-demand, summary_types: [\"\"]}\n", `entity_types[0] ("auction"): summary_types[0] is empty`},
		{"summary on demand", project + "  - {name: a, mode: replicated, replication: on-demand, summary_types: [b]}\n  - {name: b, mode: replicated, replication: on-demand}\n", `entity_types[0] ("a"): summary_types[0] "b" is replicated on demand itself`},
		{"name taken", project + "  - {name: a, mode: replicated, replication: on-demand}\nreplicate:\n  - {from: x, addrs: [\"c:1\"], name: on-demand-x}\n", `replicate[0]: name "on-demand-x": names beginning "on-demand-" are the on-demand replications`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.yaml), now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// streams: of a regions: or replicate: entry is the number of parallel
// streams of its replication, 1 when left out.
func TestParseStreams(t *testing.T) {
	settings, err := parseConfig([]byte(`
regions:
  - {name: us, addrs: ["127.0.0.1:7071"], streams: 4}
  - {name: eu, addrs: ["127.0.0.1:7072"]}
  - {name: ap, addrs: ["127.0.0.1:7074"], streams: 1024}
default_primary: eu
replicate:
  - {from: partner, addrs: ["127.0.0.1:7075"], streams: 3}
`), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, settings, err = settings.withRegion("eu")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range settings.repls {
		got = append(got, fmt.Sprintf("%s:%d", r.Name, r.Streams))
	}
	if want := []string{"region-us:4", "region-ap:1024", "replicate-partner-all:3"}; !slices.Equal(got, want) {
		t.Fatalf("replications %v, want %v", got, want)
	}
	_, settings, err = settings.withRegion("us")
	if err != nil || len(settings.repls) == 0 || settings.repls[0].Name != "region-eu" || settings.repls[0].Streams != 1 {
		t.Fatalf("from us: %+v, %v; want region-eu over 1 stream first", settings.repls, err)
	}
}

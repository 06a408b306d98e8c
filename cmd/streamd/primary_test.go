package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology/primary"
)

func TestParseEntityTypes(t *testing.T) {
	good := `
entity_types:
  - name: order
    mode: pinned
    primary: eu
  - name: account
    mode: request-region
    home: us
  - name: cart
    mode: replicated
`
	settings, err := parseConfig([]byte(good), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	types := settings.types
	want := []primary.EntityType{
		{Name: "order", Mode: primary.ModePinned, Primary: "eu"},
		{Name: "account", Mode: primary.ModeRequestRegion, Home: "us"},
		{Name: "cart", Mode: primary.ModeReplicated},
	}
	if len(types.EntityTypes) != 3 || types.EntityTypes[0] != want[0] || types.EntityTypes[1] != want[1] || types.EntityTypes[2] != want[2] {
		t.Fatalf("entity types = %+v", types.EntityTypes)
	}
	for _, tc := range []struct{ name, yaml, want string }{
		{"unknown key", "entity_types:\n  - name: a\n    mode: pinned\n    primary_region: eu\n", `line 4: unknown key "primary_region" in an entry of entity_types: (it takes name, mode, primary, home, replication, summary_types, inactivity)`},
		{"unknown mode", "entity_types:\n  - name: a\n    mode: primary\n", `unknown mode "primary"`},
		{"pinned without primary", "entity_types:\n  - name: a\n    mode: pinned\n", `entity_types[0] ("a"): mode pinned needs a primary region`},
		{"no mode", "entity_types:\n  - name: a\n", "mode is missing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.yaml), time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// Entity types need a region, and every primary and home must be reachable.
func TestEntityTypesRefusedAtStart(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "streamd.yaml")
	if err := os.WriteFile(cfg, []byte("entity_types:\n  - name: order\n    mode: pinned\n    primary: us\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--config", cfg}, "--region must name this region"},
		{[]string{"--config", cfg, "--region", "eu"}, `entity type "order": region "us" is neither this region (--region eu) nor the source of a replication`},
	} {
		out, err := exec.Command(binary, append([]string{"--data-dir", filepath.Join(dir, "data"), "--listen", "127.0.0.1:0", "--metrics-listen", ""}, tc.args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("streamd %v: %v\n%s\nwant an error mentioning %q", tc.args, err, out, tc.want)
		}
	}
}

// Two streamd processes: a write to a pinned type in us is forwarded to the
// primary, eu, over streamd's PrimaryService, and replicates back to us. A
// request-region entity cannot move to us, which eu does not replicate
// from: eu refuses the handover and says why. (cmd/streamctl's
// primary.txtar moves one between regions that replicate each other.)
func TestPrimaryAcrossDaemons(t *testing.T) {
	types := "entity_types:\n  - {name: order, mode: pinned, primary: eu}\n  - {name: account, mode: request-region, home: eu}\n"
	euCfg := filepath.Join(t.TempDir(), "eu.yaml")
	if err := os.WriteFile(euCfg, []byte(types), 0o600); err != nil {
		t.Fatal(err)
	}
	eu := startDaemon(t, t.TempDir(), "--region", "eu", "--config", euCfg)
	usCfg := filepath.Join(t.TempDir(), "us.yaml")
	if err := os.WriteFile(usCfg, fmt.Appendf(nil, "replicate:\n  - from: eu\n    addrs: [%q]\n%s", eu.Addr, types), 0o600); err != nil {
		t.Fatal(err)
	}
	us := startDaemon(t, t.TempDir(), "--region", "us", "--config", usCfg)
	ctx := context.Background()
	usPrimary := streamdv1.NewPrimaryServiceClient(us.conn)
	resp, err := usPrimary.Write(ctx, &streamdv1.WriteRequest{EntityType: "order", EntityId: "o1", Events: []*streamdv1.Event{{EventType: "Placed", Payload: []byte("x")}}})
	if err != nil || resp.Region != "eu" || fmt.Sprint(resp.Versions) != "[1]" {
		t.Fatalf("write in us: %v %v; want it forwarded to eu at version 1", resp, err)
	}
	var got *streamdv1.GetPrimaryResponse
	if !testwait.Until(20*time.Second, func() bool {
		if got, err = usPrimary.GetPrimary(ctx, &streamdv1.GetPrimaryRequest{EntityType: "order", EntityId: "o1"}); err != nil {
			t.Fatal(err)
		}
		return got.Owner == "eu" && got.Version == 1
	}) {
		t.Fatalf("us does not see order/o1 replicated: %v", got)
	}
	_, err = usPrimary.Write(ctx, &streamdv1.WriteRequest{EntityType: "account", EntityId: "a1", Events: []*streamdv1.Event{{EventType: "Opened"}}})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `configure "us" as a region (a replication source) of "eu"`) {
		t.Fatalf("request-region write in us, unknown to eu: %v", err)
	}
}

// regions: derives a replication from every other region, and the modes of
// unlisted types; errors name the entry.
func TestParseRegions(t *testing.T) {
	good := `
regions:
  - {name: us, addrs: ["127.0.0.1:7071"]}
  - {name: eu, addrs: ["127.0.0.1:7072", "127.0.0.1:7073"]}
  - {name: ap, addrs: ["127.0.0.1:7074"]}
default_primary: eu
replicate:
  - {from: partner, addrs: ["127.0.0.1:7075"]}
entity_types:
  - {name: click, mode: local}
`
	settings, err := parseConfig([]byte(good), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	region, settings, err := settings.withRegion("eu")
	if err != nil || region != "eu" {
		t.Fatalf("withRegion(eu) = %q, %v", region, err)
	}
	var names []string
	for _, r := range settings.repls {
		names = append(names, r.Name+"<"+r.From.Name+fmt.Sprint(r.From.Addrs))
	}
	if got := strings.Join(names, " "); got != "region-us<us[127.0.0.1:7071] region-ap<ap[127.0.0.1:7074] replicate-partner-all<partner[127.0.0.1:7075]" {
		t.Fatalf("replications = %s", got)
	}
	types := settings.types
	if types.DefaultMode != primary.ModePinned || types.DefaultPrimary != "eu" {
		t.Fatalf("default mode %v primary %q; want pinned to eu", types.DefaultMode, types.DefaultPrimary)
	}
	if et, ok := types.Lookup("invoice"); !ok || et.Mode != primary.ModePinned || et.Primary != "eu" {
		t.Fatalf("unlisted type: %+v %v", et, ok)
	}
	if et, _ := types.Lookup("click"); et.Mode != primary.ModeLocal {
		t.Fatalf("click: %+v", et)
	}
	// region: in the file names this region unless --region does.
	fromFile, err := parseConfig([]byte(good+"region: ap\n"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if region, _, err := fromFile.withRegion(""); err != nil || region != "ap" {
		t.Fatalf("region: ap in the file: %q, %v", region, err)
	}
	if region, _, err := fromFile.withRegion("us"); err != nil || region != "us" {
		t.Fatalf("--region us over region: ap: %q, %v", region, err)
	}
	for _, name := range []string{"", "mars"} {
		_, _, err := settings.withRegion(name)
		want := map[string]string{"": "regions lists us, eu, ap: name this region with --region", "mars": `regions lists us, eu, ap but not this region "mars"`}[name]
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("withRegion(%q): %v; want it to mention %q", name, err, want)
		}
	}

	regions := "regions:\n  - {name: us, addrs: [\"x:1\"]}\n  - {name: eu, addrs: [\"x:2\"]}\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"twice", "regions:\n  - {name: us, addrs: [\"x:1\"]}\n  - {name: us, addrs: [\"x:2\"]}\ndefault_primary: us\n", `regions[1]: region "us" is listed twice (regions[0])`},
		{"no name", "regions:\n  - {addrs: [\"x:1\"]}\n", "regions[0]: name is empty"},
		{"no addrs", "regions:\n  - {name: us}\n", `regions[0] ("us"): addrs`},
		{"region not listed", regions + "region: ap\ndefault_primary: us\n", `region "ap" is not in regions (us, eu)`},
		{"no default primary", regions, "default_primary is missing: with regions, entity types not in entity_types are pinned to default_primary; name one of us, eu"},
		{"default primary not listed", regions + "default_primary: ap\n", `default_primary "ap" is not in regions (us, eu)`},
		{"primary not listed", regions + "default_primary: us\nentity_types:\n  - {name: order, mode: pinned, primary: ap}\n", `entity_types[0] ("order"): region "ap" is not in regions (us, eu)`},
		{"bad default mode", regions + "default_mode: sometimes\n", `unknown mode "sometimes"`},
		{"local with primary", regions + "default_mode: local\ndefault_primary: us\n", "default_mode local has no primary"},
		{"token file", "regions:\n  - {name: us, addrs: [\"x:1\"], token_file: /nonexistent/token}\n", `regions[0] ("us").token_file`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig([]byte(tc.yaml), time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	// default_mode local keeps unlisted types plain events.
	local, err := parseConfig([]byte(regions+"default_mode: local\n"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if et, ok := local.types.Lookup("anything"); !ok || et.Mode != primary.ModeLocal || et.SingleWriter() {
		t.Fatalf("default_mode local: %+v", et)
	}
}

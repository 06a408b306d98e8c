package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/streamd/streamd/topology/primary"
)

// describe writes what a checked configuration runs (--check-config): one
// line per part, the parts streamd would start with these flags and file.
func (cfg config) describe(w io.Writer) {
	line := func(what string, items []string) {
		if len(items) == 0 {
			items = []string{"none"}
		}
		fmt.Fprintf(w, "  %-14s %s\n", what+":", strings.Join(items, ", "))
	}
	region := cfg.producer.Journal.Region
	if region == "" {
		region = "none (no replication)"
	}
	serves := cfg.listen + " (gRPC, " + map[string]string{"off": "plaintext", "tls": "TLS", "mtls": "TLS with client certificates"}[tlsMode(cfg.tls)] + ")"
	switch {
	case cfg.metricsListen != "" && cfg.console:
		serves += ", metrics and console " + cfg.metricsListen
	case cfg.metricsListen != "":
		serves += ", metrics " + cfg.metricsListen
	}
	fmt.Fprintln(w, "streamd: the configuration is valid; with it streamd runs")
	line("region", []string{region})
	line("serves", []string{serves})
	line("journal", []string{fmt.Sprintf("%s, durability %s", cfg.dataDir, cfg.producer.Journal.Durability)})
	if eg := cfg.entityGroup; eg != nil {
		line("group", []string{fmt.Sprintf("%s (pod %s of namespace %s writes the slices the group gives it, and forwards the rest)", eg.name, cfg.pod.name, cfg.pod.namespace)})
	}
	var items []string
	for _, s := range cfg.producer.Server.Streams {
		items = append(items, s.Name)
	}
	line("streams", items)
	items = nil
	for _, r := range cfg.replications {
		items = append(items, fmt.Sprintf("%s (from %s, %d stream%s)", r.Name, r.From.Name, max(r.Streams, 1), plural(max(r.Streams, 1))))
	}
	for _, g := range cfg.grouped {
		items = append(items, fmt.Sprintf("%s (from %s, shared by the pods of group %s)", g.opts.Name, g.opts.From.Name, g.group))
	}
	line("replications", items)
	items = nil
	onDemand := map[string]bool{}
	for _, t := range cfg.onDemand {
		onDemand[t.name] = true
	}
	for _, t := range cfg.entityTypes.EntityTypes {
		item := t.Name + " " + modeOf(t)
		if onDemand[t.Name] {
			item += " on demand"
		}
		items = append(items, item)
	}
	if d := cfg.entityTypes.DefaultMode; d != 0 {
		items = append(items, "others "+modeOf(primary.EntityType{Mode: d, Primary: cfg.entityTypes.DefaultPrimary, Home: cfg.entityTypes.DefaultPrimary}))
	}
	line("entity types", items)
	items = nil
	for _, a := range cfg.aggregates {
		items = append(items, a.Name)
	}
	line("aggregates", items)
}

func modeOf(t primary.EntityType) string {
	if o := t.FirstOwner(); o != "" && t.SingleWriter() {
		return fmt.Sprintf("%s (%s)", t.Mode, o)
	}
	return t.Mode.String()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

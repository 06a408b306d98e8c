package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/streamd/streamd/aggregate"
	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/internal/dialopts"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/primary"
)

// fileConfig is the --config file (YAML): the named streams streamd offers,
// the project's regions (the same file serves every region), the
// replications from outside the project, the modes of entity types (see
// primary.Primary) and the aggregation stages (aggregate.go). Unknown keys
// are errors.
type fileConfig struct {
	Streams []streamConfig `yaml:"streams"`
	// Region names this region among Regions; --region overrides it.
	Region  string         `yaml:"region"`
	Regions []regionConfig `yaml:"regions"`
	// Replicate copies streams from outside the project, or with filters.
	Replicate      []replicateConfig  `yaml:"replicate"`
	EntityTypes    []entityTypeConfig `yaml:"entity_types"`
	DefaultMode    primary.Mode       `yaml:"default_mode"`
	DefaultPrimary string             `yaml:"default_primary"`
	Aggregate      []aggregateConfig  `yaml:"aggregate"`
	// Group makes the pods of this streamd's StatefulSet share its
	// entities by slice (entitygroup.go).
	Group entityGroupConfig `yaml:"group"`
}

// entityGroupConfig is the group: of the file: the consumer group through
// which the pods share the entities, and how they reach each other.
type entityGroupConfig struct {
	Name      string  `yaml:"name"`
	TLS       tlsKeys `yaml:"tls"`
	TokenFile string  `yaml:"token_file"`
}

// entityTypeConfig is an entry of entity_types: its mode and how it
// replicates between the project's regions (ondemand.go).
type entityTypeConfig struct {
	primary.EntityType `yaml:",inline"`
	// Replication is "always" (the default) or "on-demand".
	Replication  string        `yaml:"replication"`
	SummaryTypes []string      `yaml:"summary_types"`
	Inactivity   time.Duration `yaml:"inactivity"`
}

// regionConfig is one region of the project: every region replicates the
// events of every other (full mesh).
type regionConfig struct {
	Name      string   `yaml:"name"`
	Addrs     []string `yaml:"addrs"`
	TLS       tlsKeys  `yaml:"tls"`
	TokenFile string   `yaml:"token_file"`
	// Streams is the number of parallel streams the region is copied
	// over (nil: 1); see topology.ReplicationOptions.Streams.
	Streams *int `yaml:"streams"`
	// Group makes the region's pods share its entities by slice
	// (entitygroup.go), reaching each other as other regions reach them.
	Group string `yaml:"group"`
}

type streamConfig struct {
	Name        string   `yaml:"name"`
	EntityTypes []string `yaml:"entity_types"`
	Filter      []string `yaml:"filter"`
}

// replicateConfig copies a stream of another region into this journal.
type replicateConfig struct {
	// From names the source region; Addrs are its streamd addresses.
	From   string   `yaml:"from"`
	Addrs  []string `yaml:"addrs"`
	Stream string   `yaml:"stream"`
	Filter []string `yaml:"filter"`
	// Name of the consumer (default replicate-<from>-<stream>).
	Name      string  `yaml:"name"`
	TLS       tlsKeys `yaml:"tls"`
	TokenFile string  `yaml:"token_file"`
	// Streams is the number of parallel streams (nil: 1).
	Streams *int `yaml:"streams"`
	// Group spreads the copying over the pods of this streamd's
	// StatefulSet through the consumer group of that name (groups.go).
	Group string `yaml:"group"`
}

type tlsKeys struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// fileSettings is what a config file sets.
type fileSettings struct {
	streams []producer.StreamDef
	repls   []topology.ReplicationOptions
	// grouped are the replicate: entries with a group:.
	grouped []groupedReplication
	types   primary.Config
	// region is the file's region: (""); regions the names in regions:,
	// in order (none without a region list).
	region  string
	regions []string
	// regionRepls are the replications from the other regions, made by
	// withRegion once this region is known.
	regionRepls []topology.ReplicationOptions
	// onDemand are the entity types replicated on demand between the
	// project's regions.
	onDemand []onDemandType
	aggs     []aggregate.Options
	// entityGroup: the group this streamd's pods share the entities
	// through: the file's group:, or this region's (withRegion).
	entityGroup *entityGroupSettings
	// regionGroups are the groups of the regions that have one, by name.
	regionGroups map[string]*entityGroupSettings
}

// regionMaxBackoff bounds the reconnect delay of the replications between
// the project's regions.
const regionMaxBackoff = 2 * time.Second

// regionReplication is the name of the replication from a region of the
// project.
func regionReplication(region string) string { return "region-" + region }

// withRegion settles which region this is (the flag, else the file's) and
// checks what depends on it: the region list names it, the replications
// come from the others, and with a group sharing the entities (the file's,
// or this region's) every replication follows the group's slices.
func (fs fileSettings) withRegion(flag string) (string, fileSettings, error) {
	region := flag
	if region == "" {
		region = fs.region
	}
	if len(fs.regions) > 0 {
		if region == "" {
			return "", fs, fmt.Errorf("regions lists %s: name this region with --region (or region: in the file)", strings.Join(fs.regions, ", "))
		}
		if !slices.Contains(fs.regions, region) {
			return "", fs, fmt.Errorf("regions lists %s but not this region %q: add it to regions (every region runs from the same list), or correct --region", strings.Join(fs.regions, ", "), region)
		}
		var repls []topology.ReplicationOptions
		for _, r := range fs.regionRepls {
			if r.From.Name != region {
				repls = append(repls, onDemandSplit(r, region, fs.onDemand)...)
			}
		}
		fs.repls = append(repls, fs.repls...)
		if g := fs.regionGroups[region]; g != nil {
			fs.entityGroup = g
		}
	}
	if g := fs.entityGroup; g != nil {
		fs.grouped = slices.Clone(fs.grouped)
		for _, r := range fs.repls {
			fs.grouped = append(fs.grouped, groupedReplication{group: g.name, opts: r})
		}
		fs.repls = nil
	}
	return region, fs, nil
}

// loadConfig reads and checks the config file at path; errors name the file
// and the entry.
func loadConfig(path string) (fileSettings, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fileSettings{}, fmt.Errorf("--config: %w", err)
	}
	settings, err := parseConfig(raw, time.Now())
	if err != nil {
		return fileSettings{}, fmt.Errorf("--config %s: %w", path, err)
	}
	return settings, nil
}

// reservedTypes are the entity types Publish refuses: the pins of
// primaries, which PrimaryService.SetPrimary writes, in a streamd with a
// region.
func reservedTypes(region string) map[string]string {
	if region == "" {
		return nil
	}
	return map[string]string{primary.PinEntityType: "PrimaryService.SetPrimary (streamctl primary set)"}
}

// allReplications are every replication into this journal: repls, then
// the grouped ones (the order the admin registry takes them in).
func allReplications(repls []topology.ReplicationOptions, grouped []groupedReplication) []topology.ReplicationOptions {
	all := slices.Clone(repls)
	for _, g := range grouped {
		all = append(all, g.opts)
	}
	return all
}

// primaryRegions are the other regions a Primary calls: the sources of the
// replications (allReplications: a region replicates from every region
// whose entities it writes), with their addresses and dial options.
func primaryRegions(repls []topology.ReplicationOptions) ([]topology.Region, map[string][]grpc.DialOption) {
	var regions []topology.Region
	dial := map[string][]grpc.DialOption{}
	for _, r := range repls {
		if _, ok := dial[r.From.Name]; !ok {
			regions = append(regions, r.From)
			dial[r.From.Name] = r.DialOptions
		}
	}
	return regions, dial
}

// parseConfig reads a config file's content and checks all of it: unknown
// keys, streams, replications and entity types.
func parseConfig(raw []byte, now time.Time) (fileSettings, error) {
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil && !errors.Is(err, io.EOF) {
		return fileSettings{}, fileError(err)
	}
	var streams []producer.StreamDef
	for i, s := range fc.Streams {
		at := fmt.Sprintf("streams[%d]", i)
		if s.Name == "" {
			return fileSettings{}, fmt.Errorf("%s: name is empty", at)
		}
		crits, err := parseFilter(at, s.Filter, now)
		if err != nil {
			return fileSettings{}, err
		}
		streams = append(streams, producer.StreamDef{Name: s.Name, EntityTypes: s.EntityTypes, Filter: crits})
	}
	var repls, regionRepls []topology.ReplicationOptions
	names := map[string]bool{}
	var regions []string
	var regionGroups map[string]*entityGroupSettings
	for i, r := range fc.Regions {
		at := fmt.Sprintf("regions[%d]", i)
		switch {
		case r.Name == "":
			return fileSettings{}, fmt.Errorf("%s: name is empty", at)
		case slices.Contains(regions, r.Name):
			return fileSettings{}, fmt.Errorf("%s: region %q is listed twice (regions[%d]); each region once", at, r.Name, slices.Index(regions, r.Name))
		case len(r.Addrs) == 0:
			return fileSettings{}, fmt.Errorf("%s (%q): addrs (the region's streamd addresses) is empty", at, r.Name)
		}
		at = fmt.Sprintf("regions[%d] (%q)", i, r.Name)
		dial, err := replicateConfig{TLS: r.TLS, TokenFile: r.TokenFile}.dialOptions(at)
		if err != nil {
			return fileSettings{}, err
		}
		streams, err := parseStreams(at, r.Streams)
		if err != nil {
			return fileSettings{}, err
		}
		if r.Group != "" {
			if regionGroups == nil {
				regionGroups = map[string]*entityGroupSettings{}
			}
			if regionGroups[r.Name], err = regionGroup(at, r.Group, dial); err != nil {
				return fileSettings{}, err
			}
		}
		regions = append(regions, r.Name)
		name := regionReplication(r.Name)
		names[name] = true
		// A region back from a partition is replicated from again within
		// regionMaxBackoff.
		regionRepls = append(regionRepls, topology.ReplicationOptions{From: topology.Region{Name: r.Name, Addrs: r.Addrs}, Name: name, Streams: streams, DialOptions: dial, MaxBackoff: regionMaxBackoff})
	}
	if fc.Region != "" && len(regions) > 0 && !slices.Contains(regions, fc.Region) {
		return fileSettings{}, fmt.Errorf("region %q is not in regions (%s)", fc.Region, strings.Join(regions, ", "))
	}
	onDemand, err := parseOnDemand(fc.EntityTypes, len(regions) > 0)
	if err != nil {
		return fileSettings{}, err
	}
	var grouped []groupedReplication
	for i, r := range fc.Replicate {
		at := fmt.Sprintf("replicate[%d]", i)
		switch {
		case r.From == "":
			return fileSettings{}, fmt.Errorf("%s: from (the source region's name) is empty", at)
		case len(r.Addrs) == 0:
			return fileSettings{}, fmt.Errorf("%s: addrs (the source region's streamd addresses) is empty", at)
		}
		crits, err := parseFilter(at, r.Filter, now)
		if err != nil {
			return fileSettings{}, err
		}
		dial, err := r.dialOptions(at)
		if err != nil {
			return fileSettings{}, err
		}
		streams, err := parseStreams(at, r.Streams)
		if err != nil {
			return fileSettings{}, err
		}
		name := r.Name
		if name == "" {
			stream := r.Stream
			if stream == "" {
				stream = producer.DefaultStream
			}
			name = "replicate-" + r.From + "-" + stream
		}
		if names[name] {
			return fileSettings{}, fmt.Errorf("%s: a second replication named %q (give each a name)", at, name)
		}
		if len(onDemand) > 0 && strings.HasPrefix(name, onDemandReplication("")) {
			return fileSettings{}, fmt.Errorf("%s: name %q: names beginning %q are the on-demand replications between regions; choose another", at, name, onDemandReplication(""))
		}
		names[name] = true
		opts := topology.ReplicationOptions{
			From:        topology.Region{Name: r.From, Addrs: r.Addrs},
			Stream:      r.Stream,
			Filter:      crits,
			Name:        name,
			Streams:     streams,
			DialOptions: dial,
		}
		if r.Group == "" {
			repls = append(repls, opts)
			continue
		}
		if err := checkGroup(at+".group", r.Group, grouped); err != nil {
			return fileSettings{}, err
		}
		grouped = append(grouped, groupedReplication{group: r.Group, opts: opts})
	}
	types := primary.Config{DefaultMode: fc.DefaultMode, DefaultPrimary: fc.DefaultPrimary}
	for _, t := range fc.EntityTypes {
		types.EntityTypes = append(types.EntityTypes, t.EntityType)
	}
	if len(regions) > 0 {
		if types.DefaultMode == 0 {
			types.DefaultMode = primary.ModePinned
		}
		if types.DefaultMode == primary.ModePinned && types.DefaultPrimary == "" {
			return fileSettings{}, fmt.Errorf("default_primary is missing: with regions, entity types not in entity_types are pinned to default_primary; name one of %s (or set default_mode: local)", strings.Join(regions, ", "))
		}
		if d := types.DefaultPrimary; d != "" && !slices.Contains(regions, d) {
			return fileSettings{}, fmt.Errorf("default_primary %q is not in regions (%s)", d, strings.Join(regions, ", "))
		}
		for i, t := range types.EntityTypes {
			if owner := t.FirstOwner(); t.SingleWriter() && owner != "" && !slices.Contains(regions, owner) {
				return fileSettings{}, fmt.Errorf("entity_types[%d] (%q): region %q is not in regions (%s)", i, t.Name, owner, strings.Join(regions, ", "))
			}
		}
	}
	if err := types.Validate(); err != nil {
		return fileSettings{}, err
	}
	aggs, err := parseAggregates(fc.Aggregate, streams, now)
	if err != nil {
		return fileSettings{}, err
	}
	eg, err := parseEntityGroup(fc, grouped, regionGroups)
	if err != nil {
		return fileSettings{}, err
	}
	return fileSettings{streams: streams, repls: repls, grouped: grouped, types: types, region: fc.Region, regions: regions, regionRepls: regionRepls,
		onDemand: onDemand, aggs: aggs, entityGroup: eg, regionGroups: regionGroups}, nil
}

// parseStreams checks the streams: of the entry at (nil: 1 stream).
func parseStreams(at string, n *int) (int, error) {
	switch {
	case n == nil:
		return 1, nil
	case *n < 1 || *n > journal.Slices:
		return 0, fmt.Errorf("%s: streams %d is not in 1-%d (the source's slices are copied over that many parallel streams; leave it out for 1)", at, *n, journal.Slices)
	}
	return *n, nil
}

func parseFilter(at string, texts []string, now time.Time) ([]*streamdv1.FilterCriterion, error) {
	var crits []*streamdv1.FilterCriterion
	for j, text := range texts {
		c, err := filters.Parse(text, now)
		if err != nil {
			return nil, fmt.Errorf("%s.filter[%d]: %w", at, j, err)
		}
		crits = append(crits, c)
	}
	if _, err := filters.Compile(crits, filters.Limits{}); err != nil {
		return nil, fmt.Errorf("%s.filter: %w", at, err)
	}
	return crits, nil
}

func (r replicateConfig) dialOptions(at string) ([]grpc.DialOption, error) {
	c := dialopts.Client{
		CA: r.TLS.CA, Cert: r.TLS.Cert, Key: r.TLS.Key,
		CAName: at + ".tls.ca", CertName: at + ".tls.cert", KeyName: at + ".tls.key",
	}
	if r.TokenFile != "" {
		tok, err := os.ReadFile(r.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("%s.token_file: %w", at, err)
		}
		if c.Token = strings.TrimSpace(string(tok)); c.Token == "" {
			return nil, fmt.Errorf("%s.token_file %s is empty", at, r.TokenFile)
		}
	}
	opts, err := c.Options()
	if err != nil {
		return nil, err
	}
	// A link that drops everything silently is noticed within 40s (streamd
	// servers allow pings every 10s, see producer.Interceptors).
	return append(opts, grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second})), nil
}

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/streamd/streamd/aggregate"
	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/internal/dialopts"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/primary"
)

// fileConfig is the --config file (YAML): the named streams streamd offers,
// the replications it runs, the modes of entity types (single-writer
// entities, see primary.Primary) and its aggregation stages (aggregate.go).
// Unknown keys are errors.
type fileConfig struct {
	Streams     []streamConfig       `yaml:"streams"`
	Replicate   []replicateConfig    `yaml:"replicate"`
	EntityTypes []primary.EntityType `yaml:"entity_types"`
	Aggregate   []aggregateConfig    `yaml:"aggregate"`
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
	types   primary.Config
	aggs    []aggregate.Options
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

// reservedTypes are the entity types Publish refuses: the single-writer
// types and the pins, which the PrimaryService writes.
func reservedTypes(types primary.Config) map[string]string {
	if len(types.EntityTypes) == 0 {
		return nil
	}
	reserved := map[string]string{primary.PinEntityType: "PrimaryService.SetPrimary (streamctl primary set)"}
	for _, t := range types.EntityTypes {
		if t.Mode != primary.ModeReplicated {
			reserved[t.Name] = "PrimaryService.Write (a " + t.Mode.String() + " entity type)"
		}
	}
	return reserved
}

// primaryRegions are the other regions a Primary calls: the sources of the
// replications (a region replicates from every region whose entities it
// writes), with their addresses and dial options.
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
		return fileSettings{}, err
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
	var repls []topology.ReplicationOptions
	names := map[string]bool{}
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
		names[name] = true
		repls = append(repls, topology.ReplicationOptions{
			From:        topology.Region{Name: r.From, Addrs: r.Addrs},
			Stream:      r.Stream,
			Filter:      crits,
			Name:        name,
			DialOptions: dial,
		})
	}
	types := primary.Config{EntityTypes: fc.EntityTypes}
	if err := types.Validate(); err != nil {
		return fileSettings{}, err
	}
	aggs, err := parseAggregates(fc.Aggregate, streams, now)
	if err != nil {
		return fileSettings{}, err
	}
	return fileSettings{streams: streams, repls: repls, types: types, aggs: aggs}, nil
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

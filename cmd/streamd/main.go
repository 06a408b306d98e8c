// Command streamd runs a streamd journal as a daemon.
//
// It serves the EventStreamService, gRPC health and reflection on --listen,
// optionally over TLS (--tls-cert, --tls-key) or mTLS (--tls-client-ca), with
// bearer tokens from --auth-token-file required on the EventStreamService,
// and Prometheus metrics on --metrics-listen at /metrics, with the web
// console (package console) at /console/ (--console). Every flag has a
// STREAMD_* environment variable; sizes take units (64MiB); see streamd
// --help. streamd --version prints the build (internal/buildinfo), which
// every gRPC response also carries in its header.
//
// Exit codes: 0 after a clean shutdown, 1 an error while serving, 2 a usage
// error (a bad flag or a file it names), printed in one line.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/streamd/streamd/aggregate"
	"github.com/streamd/streamd/consumer/group"
	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/internal/buildinfo"
	"github.com/streamd/streamd/internal/bytesize"
	"github.com/streamd/streamd/internal/metrics"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/primary"
)

func main() { os.Exit(exitCode(newApp().Run(os.Args), os.Stderr)) }

// usageError is a mistake in the command line or in a file it names: exit
// code 2, like streamctl's.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// exitCode prints err, if any, in one line, with the usage hint after a
// usage error, and returns the exit code: 0, 1 for an error while serving,
// 2 for a usage error.
func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "streamd:", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(stderr, "Run 'streamd --help' for usage.")
		return 2
	}
	return 1
}

func newApp() *cli.App {
	cli.VersionPrinter = func(c *cli.Context) { fmt.Fprintf(c.App.Writer, "streamd %s\n", c.App.Version) }
	return &cli.App{
		Name:            "streamd",
		Usage:           "a brokerless event streaming daemon: a durable local journal served over gRPC",
		Version:         buildinfo.Read().String(),
		HideHelpCommand: true,
		// One line and the usage hint (exitCode), not the whole help.
		OnUsageError: func(_ *cli.Context, err error, _ bool) error { return &usageError{err} },
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Value: "./data", EnvVars: []string{"STREAMD_DATA_DIR"}, Usage: "journal directory"},
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:7070", EnvVars: []string{"STREAMD_LISTEN"}, Usage: "gRPC address (stream, publish, health, reflection)"},
			&cli.StringFlag{Name: "durability", Value: "sync", EnvVars: []string{"STREAMD_DURABILITY"}, Usage: "sync: fsync before ack; async: ack before fsync, so acknowledged events survive a crash of streamd but may be lost on an OS crash or power loss"},
			&cli.DurationFlag{Name: "retention-max-age", EnvVars: []string{"STREAMD_RETENTION_MAX_AGE"}, Usage: "delete events older than this (0 = keep)"},
			bytesize.Flag("retention-max-bytes", 0, "STREAMD_RETENTION_MAX_BYTES", "delete the oldest events beyond this size, in bytes or with a unit (64MiB, 1GiB); 0 = no limit", ""),
			&cli.StringFlag{Name: "metrics-listen", Value: "127.0.0.1:9464", EnvVars: []string{"STREAMD_METRICS_LISTEN"}, Usage: "HTTP address serving Prometheus /metrics (\"\" disables)"},
			&cli.StringFlag{Name: "tls-cert", EnvVars: []string{"STREAMD_TLS_CERT"}, Usage: "PEM server certificate; serves gRPC over TLS (1.2 or later), with --tls-key"},
			&cli.StringFlag{Name: "tls-key", EnvVars: []string{"STREAMD_TLS_KEY"}, Usage: "PEM private key of --tls-cert"},
			&cli.StringFlag{Name: "tls-client-ca", EnvVars: []string{"STREAMD_TLS_CLIENT_CA"}, Usage: "PEM CA certificates; clients must present a certificate they signed (mTLS)"},
			&cli.StringFlag{Name: "auth-token-file", EnvVars: []string{"STREAMD_AUTH_TOKEN_FILE"}, Usage: "require bearer tokens listed in `FILE`, one TOKEN GRANT[,GRANT...] a line, a grant being a stream to subscribe to, \"publish\" (Publish, PublishStream) or \"*\" (everything, including LoadEvent, EntityEvents, JournalInfo); a line cn:NAME GRANTS or uri:URI GRANTS grants a client certificate (mTLS) by subject CN or URI SAN, for calls without a token; # comments. Health and reflection stay open"},
			&cli.DurationFlag{Name: "shutdown-grace", Value: 10 * time.Second, EnvVars: []string{"STREAMD_SHUTDOWN_GRACE"}, Usage: "on SIGTERM, how long in-flight calls and streams may take before they are cut; closing the journal may take " + closeMargin.String() + " more, past which streamd exits with status 1 and the next start recovers the journal from its logs"},
			bytesize.Flag("max-payload-bytes", bytesize.Size(journal.DefaultLimits.MaxPayloadBytes), "STREAMD_MAX_PAYLOAD_BYTES", "largest event payload accepted", ""),
			&cli.IntFlag{Name: "max-batch-events", Value: journal.DefaultLimits.MaxBatchEvents, EnvVars: []string{"STREAMD_MAX_BATCH_EVENTS"}, Usage: "most events in one publish"},
			bytesize.Flag("max-batch-bytes", bytesize.Size(journal.DefaultLimits.MaxBatchBytes), "STREAMD_MAX_BATCH_BYTES", "largest publish, encoded (at most 8MiB); gRPC messages may be 1MiB larger", ""),
			bytesize.Flag("min-free-bytes", 0, "STREAMD_MIN_FREE_BYTES", "free disk space to keep: below it publishes are refused with ResourceExhausted until space is freed. At least --memtable-size + 8 of the largest group commits ("+mib(journal.Options{MemTableSize: defaultMemory / 16}.LeastMinFreeBytes())+" with the default --memory): Badger writes through memory maps, where a full disk crashes streamd (SIGBUS)",
				bytesize.Size(journal.Options{}.EffectiveMinFreeBytes()).String()),
			bytesize.Flag("memory", defaultMemory, "STREAMD_MEMORY", "memory budget: sets the Badger memtable (a sixteenth, unless --memtable-size is set), the block cache (a sixteenth) and the Go runtime's soft limit (five eighths, unless GOMEMLIMIT is set); the rest is for memory-mapped files. At least 64MiB", ""),
			bytesize.Flag("memtable-size", 0, "STREAMD_MEMTABLE_SIZE", "Badger memtable size, at least 7MiB (Badger holds the index, not the events)", "a sixteenth of --memory"),
			&cli.StringFlag{Name: "compression", Value: "zstd", EnvVars: []string{"STREAMD_COMPRESSION"}, Usage: "compression of the journal's Badger tables (its index) on disk: zstd, snappy (faster, larger) or none"},
			&cli.IntFlag{Name: "max-filter-criteria", Value: 256, EnvVars: []string{"STREAMD_MAX_FILTER_CRITERIA"}, Usage: "most criteria in one consumer's filter"},
			&cli.IntFlag{Name: "max-known-consumers", Value: 1000, EnvVars: []string{"STREAMD_MAX_KNOWN_CONSUMERS"}, Usage: "most consumers (per name and slice range) whose last report streamd keeps, for 'streamctl consumers list'; beyond, those seen longest ago are dropped"},
			&cli.DurationFlag{Name: "known-consumer-max-age", Value: 7 * 24 * time.Hour, EnvVars: []string{"STREAMD_KNOWN_CONSUMER_MAX_AGE"}, Usage: "a consumer not seen for this long is dropped from 'streamctl consumers list'"},
			&cli.IntFlag{Name: "metrics-named-consumers", Value: 20, EnvVars: []string{"STREAMD_METRICS_NAMED_CONSUMERS"}, Usage: "consumers (those with the largest lag) whose streamd_reader_lag_* gauges carry their name; the rest are summed under consumer=\"_other\""},
			&cli.Float64Flag{Name: "rate-limit", EnvVars: []string{"STREAMD_RATE_LIMIT"}, Usage: "calls per second each client (bearer token, or IP address) may make; 0 = unlimited. Health checks are not limited"},
			&cli.IntFlag{Name: "rate-burst", EnvVars: []string{"STREAMD_RATE_BURST"}, Usage: "calls a client may make at once above --rate-limit", DefaultText: "the rate, at least 1"},
			&cli.IntFlag{Name: "max-streams-per-conn", Value: 64, EnvVars: []string{"STREAMD_MAX_STREAMS_PER_CONN"}, Usage: "streams one connection may have open; more are refused with ResourceExhausted"},
			&cli.DurationFlag{Name: "handshake-timeout", Value: 10 * time.Second, EnvVars: []string{"STREAMD_HANDSHAKE_TIMEOUT"}, Usage: "a connection that has not completed its TLS and HTTP/2 handshake by then is closed"},
			&cli.StringFlag{Name: "region", EnvVars: []string{"STREAMD_REGION"}, Usage: "name of this region: the origin of events written here (required to replicate); overrides region: in --config"},
			&cli.StringFlag{Name: "config", EnvVars: []string{"STREAMD_CONFIG"}, Usage: "YAML `FILE` of named streams, the project's regions (replicated full mesh), replications from elsewhere, entity type modes and on-demand replication, and aggregation stages, the same file in every region (see README)"},
			&cli.StringFlag{Name: "pod-name", EnvVars: []string{"STREAMD_POD_NAME"}, Usage: "this pod's name (the downward API's metadata.name): its identity in its consumer groups (a group: in --config, at the top level, on this region's entry or on replicate: entries)"},
			&cli.StringFlag{Name: "pod-namespace", EnvVars: []string{"STREAMD_POD_NAMESPACE"}, Usage: "this pod's namespace (the downward API's metadata.namespace): where its consumer groups (a group: in --config, at the top level, on this region's entry or on replicate: entries) keep their Leases and ConfigMaps"},
			&cli.StringFlag{Name: "kube-api", EnvVars: []string{"STREAMD_KUBE_API"}, Usage: "`URL` of the Kubernetes API for the consumer groups, without credentials (as kubectl proxy serves it)", DefaultText: "in a pod, its service account"},
			&cli.StringFlag{Name: "pod-address", EnvVars: []string{"STREAMD_POD_ADDRESS"}, Usage: "`HOST:PORT` at which the other pods of its group (a group: in --config sharing the entities) reach this one (in Kubernetes $(POD_IP):7070)", DefaultText: "the --listen address, if it names an IP"},
			&cli.DurationFlag{Name: "group-hold-wait", Value: 30 * time.Second, EnvVars: []string{"STREAMD_GROUP_HOLD_WAIT"}, Usage: "how long a pod of a group sharing the entities (a group: in --config) keeps writing slices it gives up until the pods taking them have copied their history ahead, and on SIGTERM stays up for them to copy it; past it, those slices wait for this pod to come back"},
			&cli.DurationFlag{Name: "group-lease-duration", Value: group.DefaultLeaseDuration, EnvVars: []string{"STREAMD_GROUP_LEASE_DURATION"}, Usage: "the consumer groups' Lease duration D (at least 3s): a pod renews its Lease every D/3, stops copying (or writing its slices) when it could not for 2D/3, and the others take the slices of a pod gone after D"},
			&cli.StringFlag{Name: "ready-file", EnvVars: []string{"STREAMD_READY_FILE"}, Usage: "once every listener is up, write where streamd serves to `FILE` as JSON, {\"grpc\":\"ADDR\",\"metrics\":\"ADDR\"} (metrics absent when disabled), atomically; removed on exit"},
			consoleFlag(),
			&cli.BoolFlag{Name: "check-config", Usage: "check the flags and --config, print what streamd would run with them, and exit without opening the journal or listening: status 0 if they are valid, 2 with what is wrong if not"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"STREAMD_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		},
		Action: func(c *cli.Context) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return &usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", c.String("log-level"))}
			}
			if c.Args().Present() {
				return &usageError{fmt.Errorf("unexpected argument %q: streamd takes only flags", c.Args().First())}
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			cfg, err := configFrom(c, log, metrics.New())
			if err != nil {
				return &usageError{err}
			}
			if c.Bool("check-config") {
				cfg.describe(c.App.Writer)
				return nil
			}
			ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runBounded(ctx, log, cfg)
		},
	}
}

// configFrom reads and checks the flags (and the files they name); errors
// name the flag.
func configFrom(c *cli.Context, log *slog.Logger, m *metrics.Metrics) (config, error) {
	durability, err := journal.ParseDurability(c.String("durability"))
	if err != nil {
		return config{}, fmt.Errorf("--durability: %w", err)
	}
	tlsConfig, err := tlsFlags{c.String("tls-cert"), c.String("tls-key"), c.String("tls-client-ca")}.config()
	if err != nil {
		return config{}, err
	}
	var toks tokens
	if path := c.String("auth-token-file"); path != "" {
		if toks, err = loadTokens(path); err != nil {
			return config{}, err
		}
		if line := toks.identityLine(); line > 0 && c.String("tls-client-ca") == "" {
			return config{}, fmt.Errorf("--auth-token-file %s line %d names a client certificate identity: it needs mTLS (--tls-client-ca)", path, line)
		}
	}
	if n := c.Int("metrics-named-consumers"); n < 0 {
		return config{}, fmt.Errorf("--metrics-named-consumers %d: want 0 or more", n)
	}
	if d := c.Duration("known-consumer-max-age"); d <= 0 {
		return config{}, fmt.Errorf("--known-consumer-max-age %v: want a positive duration", d)
	}
	for _, name := range []string{"max-batch-events", "max-filter-criteria", "max-streams-per-conn", "max-known-consumers"} {
		if c.Int(name) <= 0 {
			return config{}, fmt.Errorf("--%s %d: want a positive number", name, c.Int(name))
		}
	}
	sizes := map[string]int{}
	for _, name := range []string{"max-payload-bytes", "max-batch-bytes"} {
		n, ok := bytesize.Get(c, name).Int()
		if !ok || n <= 0 {
			return config{}, fmt.Errorf("--%s %v: want a positive size", name, bytesize.Get(c, name))
		}
		sizes[name] = n
	}
	limits := journal.Limits{
		MaxPayloadBytes: sizes["max-payload-bytes"],
		MaxBatchEvents:  c.Int("max-batch-events"),
		MaxBatchBytes:   sizes["max-batch-bytes"],
	}
	memory, err := memoryFlag(c)
	if err != nil {
		return config{}, err
	}
	memTableSize, minFree := memory.memTable, int64(bytesize.Get(c, "min-free-bytes"))
	compression, err := journal.ParseCompression(c.String("compression"))
	if err != nil {
		return config{}, fmt.Errorf("--compression: %w", err)
	}
	if err := (journal.Options{MemTableSize: memTableSize}).Validate(); err != nil {
		return config{}, fmt.Errorf("--memtable-size: %w", err)
	}
	if err := minFreeBytesFlag(minFree, memTableSize); err != nil {
		return config{}, err
	}
	if err := (journal.Options{Limits: limits}).Validate(); err != nil {
		return config{}, fmt.Errorf("--max-batch-bytes %v: %w", bytesize.Size(limits.MaxBatchBytes), err)
	}
	clients := clientLimits{rate: c.Float64("rate-limit"), burst: c.Int("rate-burst"), streamsPerConn: c.Int("max-streams-per-conn")}
	switch {
	case clients.rate < 0:
		return config{}, fmt.Errorf("--rate-limit %g: want 0 (unlimited) or a positive rate", clients.rate)
	case clients.burst < 0:
		return config{}, fmt.Errorf("--rate-burst %d: want a positive number", clients.burst)
	case clients.burst == 0:
		clients.burst = max(1, int(math.Ceil(clients.rate)))
	}
	if c.Duration("handshake-timeout") <= 0 {
		return config{}, fmt.Errorf("--handshake-timeout %v: want a positive duration", c.Duration("handshake-timeout"))
	}
	var settings fileSettings
	if path := c.String("config"); path != "" {
		if settings, err = loadConfig(path); err != nil {
			return config{}, err
		}
	}
	region, settings, err := settings.withRegion(c.String("region"))
	if err != nil {
		return config{}, fmt.Errorf("--config %s: %w", c.String("config"), err)
	}
	streams, repls, types := settings.streams, settings.repls, settings.types
	var router *publishRouter
	var producerRouter producer.Router // nil, not a nil *publishRouter, without a region
	if region != "" {
		router = &publishRouter{}
		producerRouter = router
	}
	if (len(types.EntityTypes) > 0 || types.DefaultMode != 0) && region == "" {
		return config{}, fmt.Errorf("--config %s sets entity type modes: --region must name this region", c.String("config"))
	}
	regions, _ := primaryRegions(allReplications(repls, settings.grouped))
	known := func(name string) bool {
		return name == region || slices.ContainsFunc(regions, func(r topology.Region) bool { return r.Name == name })
	}
	for _, t := range types.EntityTypes {
		if owner := t.FirstOwner(); t.SingleWriter() && !known(owner) {
			return config{}, fmt.Errorf("--config %s: entity type %q: region %q is neither this region (--region %s) nor the source of a replication, so it cannot be reached",
				c.String("config"), t.Name, owner, region)
		}
	}
	if d := types.DefaultPrimary; d != "" && !known(d) {
		return config{}, fmt.Errorf("--config %s: default_primary %q is neither this region (--region %s) nor the source of a replication, so it cannot be reached", c.String("config"), d, region)
	}
	serveConsole, err := consoleOn(c, toks != nil)
	if err != nil {
		return config{}, err
	}
	if (len(repls) > 0 || len(settings.grouped) > 0) && region == "" {
		return config{}, fmt.Errorf("--config %s replicates from other regions: --region must name this one", c.String("config"))
	}
	for _, r := range repls {
		if r.From.Name == region {
			return config{}, fmt.Errorf("--config %s: replication %q is from this region (%s)", c.String("config"), r.Name, r.From.Name)
		}
	}
	for _, g := range settings.grouped {
		if g.opts.From.Name == region {
			return config{}, fmt.Errorf("--config %s: replication %q is from this region (%s)", c.String("config"), g.opts.Name, g.opts.From.Name)
		}
	}
	var user string // of the Kubernetes API
	switch eg := settings.entityGroup; {
	case eg != nil:
		user = fmt.Sprintf("--config %s: group %s", c.String("config"), eg.name)
	case len(settings.grouped) > 0:
		user = fmt.Sprintf("--config %s: replicate entry %q has group %q", c.String("config"), settings.grouped[0].opts.Name, settings.grouped[0].group)
	}
	inPod, err := podFrom(pod{name: c.String("pod-name"), namespace: c.String("pod-namespace"), leaseDuration: c.Duration("group-lease-duration")},
		c.String("kube-api"), user, settings.grouped)
	if err != nil {
		return config{}, err
	}
	var eg *entityGroup
	if s := settings.entityGroup; s != nil {
		if region == "" {
			return config{}, fmt.Errorf("--config %s: group %s: the events of its pods carry this region as their origin: --region must name it", c.String("config"), s.name)
		}
		if d := c.Duration("group-hold-wait"); d <= 0 {
			return config{}, fmt.Errorf("--group-hold-wait %v: want a positive duration", d)
		}
		eg = newEntityGroup(s, inPod.name, region, log, m.Registry())
		addr := c.String("pod-address")
		if addr == "" {
			addr = "127.0.0.1:1" // the listener's (podAddress), known once it listens
		}
		if err := eg.options(inPod, addr, c.Duration("group-hold-wait")).Validate(); err != nil {
			return config{}, fmt.Errorf("--config %s: group %s, --pod-name %q, --pod-namespace %q, --pod-address %q, --group-lease-duration %s: %w",
				c.String("config"), s.name, inPod.name, inPod.namespace, c.String("pod-address"), inPod.leaseDuration, err)
		}
		producerRouter = groupRouter{eg: eg, next: router}
	}
	return config{
		dataDir:       c.String("data-dir"),
		listen:        c.String("listen"),
		metricsListen: c.String("metrics-listen"),
		console:       serveConsole,
		readyFile:     c.String("ready-file"),
		shutdownGrace: c.Duration("shutdown-grace"),
		metrics:       m,
		memory:        memory,
		namedReaders:  c.Int("metrics-named-consumers"),
		tls:           tlsConfig,
		tokens:        toks,
		limits:        clients,
		handshake:     c.Duration("handshake-timeout"),
		replications:  repls,
		grouped:       settings.grouped,
		pod:           inPod,
		entityTypes:   types,
		router:        router,
		entityGroup:   eg,
		podAddress:    c.String("pod-address"),
		holdWait:      c.Duration("group-hold-wait"),
		aggregates:    settings.aggs,
		onDemand:      settings.onDemand,
		producer: producer.Options{
			Journal: journal.Options{
				Region:            region,
				Durability:        durability,
				Limits:            limits,
				RetentionMaxAge:   c.Duration("retention-max-age"),
				RetentionMaxBytes: int64(bytesize.Get(c, "retention-max-bytes")),
				MinFreeBytes:      minFree,
				MemTableSize:      memTableSize,
				BlockCacheSize:    memory.blockCache,
				Compression:       compression,
				Logger:            log,
				Observer:          m,
			},
			Server: producer.ServerOptions{Streams: streams, FilterLimits: filters.Limits{MaxCriteria: c.Int("max-filter-criteria")}, Logger: log, Observer: m,
				Reserved: reservedTypes(region), Router: producerRouter, MaxReaders: c.Int("max-known-consumers"), ReaderMaxAge: c.Duration("known-consumer-max-age")},
		},
	}, nil
}

type config struct {
	dataDir       string
	listen        string
	metricsListen string // "" serves no metrics
	console       bool   // serve the console on metricsListen
	readyFile     string // "" writes none
	shutdownGrace time.Duration
	metrics       *metrics.Metrics
	memory        memoryBudget
	namedReaders  int         // consumers reading from streamd whose lag gauges carry their name
	tls           *tls.Config // nil serves plaintext
	tokens        tokens      // none: no authentication
	limits        clientLimits
	handshake     time.Duration
	producer      producer.Options
	// replications streamd runs, into its journal; offsets are kept in
	// the journal, committed with the events they copied.
	replications []topology.ReplicationOptions
	// grouped are the replications whose copying the pods of a
	// StatefulSet share, each pod (pod) a member of a consumer group.
	grouped []groupedReplication
	pod     pod
	// entityTypes are served by a primary.Primary (PrimaryService) when
	// streamd has a region, which router (nil without a region) then routes
	// publishes through.
	entityTypes primary.Config
	router      *publishRouter
	// entityGroup: this pod's part in the group of pods sharing the
	// entities (config group:), reached by the others at podAddress (or
	// the listener's address); on SIGTERM it waits up to holdWait for them
	// to hold what it held.
	entityGroup *entityGroup
	podAddress  string
	holdWait    time.Duration
	// aggregates are the aggregation stages streamd runs over its journal.
	aggregates []aggregate.Options
	// onDemand are the entity types replicated on demand (ondemand.go).
	onDemand []onDemandType
}

// closeMargin is how long, past --shutdown-grace, streamd may take to close
// the journal and the metrics server after a signal.
const closeMargin = 15 * time.Second

// runBounded is run, whose shutdown may take at most --shutdown-grace +
// closeMargin: a journal that cannot close (Badger retries a failed flush
// forever) is left as a crash leaves it, for the next Open to recover from
// its logs, and streamd exits with an error.
func runBounded(ctx context.Context, log *slog.Logger, cfg config) error {
	ran := make(chan error, 1)
	go func() { ran <- run(ctx, log, cfg) }()
	select {
	case err := <-ran:
		return err
	case <-ctx.Done():
	}
	bound := cfg.shutdownGrace + closeMargin
	if cfg.entityGroup != nil {
		bound += cfg.pod.leaseDuration + cfg.holdWait // hand-off, then the wait for the holders
	}
	select {
	case err := <-ran:
		return err
	case <-time.After(bound):
		log.Error("shutdown did not finish in time: exiting without closing the journal; the next start recovers it from its logs",
			"limit", bound, "data_dir", cfg.dataDir)
		return fmt.Errorf("shutdown did not finish within --shutdown-grace %v + %v", cfg.shutdownGrace, closeMargin)
	}
}

// run serves until ctx is done, then shuts down in order: stop accepting,
// end streams with Unavailable (consumers resume from their offsets),
// finish in-flight calls, close the journal after its in-flight commits.
func run(ctx context.Context, log *slog.Logger, cfg config) error {
	cfg.memory.apply()
	p, err := producer.Open(cfg.dataDir, cfg.producer)
	if err != nil {
		return err
	}
	defer p.Close()
	if eg := cfg.entityGroup; eg != nil {
		if err := eg.start(ctx, p.Journal()); err != nil {
			return err
		}
		defer eg.close()
	}
	checkFreeSpace(log, cfg.dataDir, cfg.producer.Journal)
	lis, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", cfg.listen, err)
	}
	defer lis.Close()
	cfg.metrics.WatchJournal(p.Journal().Info)
	cfg.metrics.WatchStorage(cfg.dataDir, cfg.producer.Journal.EffectiveMinFreeBytes(), p.Journal().Err)
	grpcMetrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	cfg.metrics.Registry().MustRegister(grpcMetrics)
	opts := append(buildHeaders(), grpc.StatsHandler(cfg.metrics.PublishStats()))
	opts = append(opts, producer.Interceptors(log)...)
	opts = append(opts,
		grpc.ChainUnaryInterceptor(grpcMetrics.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(grpcMetrics.StreamServerInterceptor()))
	if cfg.tokens != nil {
		opts = append(opts, cfg.tokens.serverOptions()...)
	}
	// Limits run after authentication, so that a client is its token.
	opts = append(opts, cfg.limits.serverOptions()...)
	// Interest in an on-demand entity is registered for authorised calls.
	onDemand := newOnDemand(log, cfg.onDemand, p.Journal(), cfg.metrics.Registry())
	defer onDemand.close()
	if onDemand != nil {
		if eg := cfg.entityGroup; eg != nil {
			onDemand.serves = func(id string) bool { return eg.serves(journal.SliceOf(id)) }
		}
		opts = append(opts, onDemand.serverOptions()...)
	}
	// Entity reads of another pod's slices are forwarded, authorised.
	if cfg.entityGroup != nil {
		opts = append(opts, cfg.entityGroup.serverOptions()...)
	}
	opts = append(opts, grpc.ConnectionTimeout(cfg.handshake))
	if cfg.tls != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.tls)))
	}
	// A publish of the largest batch, with its envelope, must fit a message;
	// PublishStream tells publishers this limit.
	opts = append(opts, grpc.MaxRecvMsgSize(p.Server().MaxMessageBytes()))
	g := grpc.NewServer(opts...)
	streamdv1.RegisterEventStreamServiceServer(g, p.Server())
	var consumers *consumers // set before the metrics server starts
	if cfg.router != nil {
		regions, dial := primaryRegions(allReplications(cfg.replications, cfg.grouped))
		var pods func() ([]streamdv1.PrimaryServiceClient, error) // the region's other journals
		if cfg.entityGroup != nil {
			pods = cfg.entityGroup.primaryPods
		}
		obs := newRegionMetrics(cfg.metrics.Registry(), func() map[string]uint64 { return consumers.regionLags() })
		prim, err := primary.New(primary.Options{
			Journal: p.Journal(), Config: cfg.entityTypes, Regions: regions, RegionDialOptions: dial, Logger: log, Observer: obs,
			Progress: func(source string) ([]primary.JournalProgress, bool) { return consumers.regionProgress(source) },
			Pods:     pods,
		})
		if err != nil {
			return fmt.Errorf("--config entity_types (every primary and home must be this region or the source of a replication): %w", err)
		}
		defer prim.Close()
		watchCtx, stopWatch := context.WithCancel(ctx)
		watchDone := make(chan struct{})
		go func() {
			defer close(watchDone)
			if err := prim.WatchConflicts(watchCtx); watchCtx.Err() == nil {
				log.Error("primary: watching for conflicts stopped", "err", err)
			}
		}()
		defer func() { stopWatch(); <-watchDone }()
		cfg.router.p = prim
		streamdv1.RegisterPrimaryServiceServer(g, prim.Server())
	}
	consumers, err = startConsumers(log, cfg, p.Journal())
	if err != nil {
		return err
	}
	defer consumers.stop()
	consumers.registry.ServeReaders(p.Server())
	consumers.registry.Register(g)
	if onDemand != nil {
		if err := onDemand.start(allReplications(cfg.replications, cfg.grouped), consumers); err != nil {
			return err
		}
	}
	streamdv1.RegisterInterestServiceServer(g, interestServer{od: onDemand, eg: cfg.entityGroup})
	aggs, err := startAggregates(log, cfg, p.Journal(), g)
	if err != nil {
		return err
	}
	defer aggs.stop()
	cfg.metrics.WatchConsumers(consumers.metrics)
	cfg.metrics.WatchReaders(p.Server().Readers, cfg.namedReaders)
	health := health.NewServer()
	healthpb.RegisterHealthServer(g, health)
	reflection.Register(g)
	grpcMetrics.InitializeMetrics(g)
	healthCtx, stopHealth := context.WithCancel(ctx)
	healthDone := make(chan struct{})
	services := healthServices(g)
	setHealth(health, services, healthpb.HealthCheckResponse_SERVING)
	go func() { watchJournal(healthCtx, log, health, services, p.Journal().Err, healthPoll); close(healthDone) }()
	defer func() { stopHealth(); <-healthDone }()

	// Both servers report here; the first to fail stops the daemon.
	served := make(chan error, 2)
	metricsAddr := "disabled"
	var hs *http.Server
	if cfg.metricsListen != "" {
		mlis, err := net.Listen("tcp", cfg.metricsListen)
		if err != nil {
			return fmt.Errorf("--metrics-listen %s: %w", cfg.metricsListen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", cfg.metrics.Handler())
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		metricsAddr = mlis.Addr().String()
		if cfg.console {
			stopConsole, err := startConsole(log, cfg, p, consumers, aggs, onDemand, mux, hs, metricsAddr)
			if err != nil {
				mlis.Close()
				return err
			}
			defer stopConsole()
		}
		go func() {
			if err := hs.Serve(mlis); !errors.Is(err, http.ErrServerClosed) {
				served <- fmt.Errorf("metrics server: %w", err)
			}
		}()
	}
	go func() {
		if err := g.Serve(lis); err != nil {
			served <- fmt.Errorf("grpc server: %w", err)
		}
	}()
	// This pod joins its group once it serves: the others copy from it.
	stopGroup := func() {}
	if eg := cfg.entityGroup; eg != nil {
		addr, err := podAddress(cfg.podAddress, lis.Addr())
		if err != nil {
			g.Stop()
			return err
		}
		gctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			runMember(gctx, log, eg.name, func() (*group.Member, error) { return eg.join(cfg.pod, addr, cfg.holdWait) }, func(error) {}, rejoinBackoff)
		}()
		shared := make(chan struct{})
		go func() { defer close(shared); eg.share(gctx) }()
		stopGroup = sync.OnceFunc(func() { cancel(); <-done; <-shared })
		defer stopGroup()
	}

	if cfg.readyFile != "" {
		r := ready{GRPC: lis.Addr().String()}
		if hs != nil {
			r.Metrics = metricsAddr
		}
		if err := r.write(cfg.readyFile); err != nil {
			g.Stop()
			if hs != nil {
				hs.Close()
			}
			return err
		}
		defer os.Remove(cfg.readyFile)
	}
	info := p.Journal().Info()
	log.Info("streamd serving", "grpc", lis.Addr().String(), "metrics", metricsAddr,
		"tls", tlsMode(cfg.tls), "auth", cfg.tokens != nil, "data_dir", cfg.dataDir, "journal_id", fmt.Sprintf("%x", info.JournalID), "first_offset", info.FirstOffset,
		"last_offset", info.LastOffset, "durability", p.Journal().Durability())
	select {
	case <-ctx.Done():
	case err := <-served:
		g.Stop()
		if hs != nil {
			hs.Close()
		}
		return err
	}
	log.Info("shutting down")
	// The pods taking this one's slices copy them from it while it serves.
	stopGroup()
	stopHealth()
	<-healthDone
	health.Shutdown()
	p.Server().Shutdown()
	// In-flight calls finish; a stream blocked sending to a stalled consumer
	// would hold GracefulStop forever, so after a grace period it is cut.
	stopped := make(chan struct{})
	go func() { g.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(cfg.shutdownGrace):
		log.Warn("grace period over, closing remaining streams", "grace", cfg.shutdownGrace)
		g.Stop()
		<-stopped
	}
	consumers.stop()
	aggs.stop()
	if hs != nil {
		// Scrapes are short; a stuck one must not hold the exit.
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := hs.Shutdown(sctx); err != nil {
			log.Warn("metrics server shutdown", "err", err)
		}
	}
	return p.Close()
}

// tlsMode names how gRPC is served, for the startup log.
func tlsMode(cfg *tls.Config) string {
	switch {
	case cfg == nil:
		return "off"
	case cfg.ClientAuth == tls.RequireAndVerifyClientCert:
		return "mtls"
	}
	return "tls"
}

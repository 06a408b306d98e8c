// Command bench compares streamd with NATS JetStream on this machine: it
// builds streamd, installs nats-server (once, into a cache directory), starts
// both as real processes on loopback, runs the same workloads against each
// from separate client processes (this binary re-executed as
// `bench client '<json>'`) and prints a table of the figures and their ratio.
//
//	go run ./bench            # the full run
//	go run ./bench -quick     # small sizes, under two minutes
//	go run ./bench -help      # sizes, durations and what to run
//
// Every figure printed is measured in that run. See bench/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	quick           bool
	only            string
	publishEvents   int
	publishDuration time.Duration
	inFlight        int
	liveInFlight    int
	catchupEvents   int
	latencyRates    []float64
	latencyDuration time.Duration
	flushFloor      time.Duration
	fanoutConsumers int
	fanoutEvents    int
	fanoutRate      float64
	fanoutDuration  time.Duration
	jsSyncAlways    bool
	natsVersion     string
	natsCLIVersion  string
	cacheDir        string
	workDir         string
	profileDir      string
	keep            bool
	markdown        string
	memoryEvents    int
	memoryCSV       string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "client" {
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: bench client '<json spec>'")
			os.Exit(2)
		}
		if err := clientMain(os.Args[2]); err != nil {
			fmt.Fprintln(os.Stderr, "bench client:", err)
			os.Exit(1)
		}
		return
	}
	// Tools of their own, with their own flags.
	tools := map[string]func(args []string) error{"fsync-wait": fsyncWaitMain, "plot-memory": plotMain}
	if len(os.Args) > 1 && tools[os.Args[1]] != nil {
		if err := tools[os.Args[1]](os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", os.Args[1], err)
			os.Exit(2)
		}
		return
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var (
		cfg   config
		rates string
	)
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&cfg.quick, "quick", false, "small sizes and short durations (under two minutes); explicit flags still win")
	fs.StringVar(&cfg.only, "only", "publish,catchup,latency,fanout,memory", "workloads to run, comma-separated (catchup includes the filtered workload)")
	fs.IntVar(&cfg.publishEvents, "publish-events", 1_000_000, "events per publish-throughput measurement, at most")
	fs.DurationVar(&cfg.publishDuration, "publish-duration", 10*time.Second, "how long a publish-throughput measurement sends, at most")
	fs.IntVar(&cfg.inFlight, "in-flight", 256, "publishes awaiting their ack at most, in the throughput runs (both systems)")
	fs.IntVar(&cfg.liveInFlight, "live-in-flight", 4096, "publishes awaiting their ack at most, in the paced runs (live latency, paced fan-out), so that acks do not hold the publisher back")
	fs.IntVar(&cfg.catchupEvents, "catchup-events", 1_000_000, "stored events read by the catch-up and filtered workloads")
	fs.StringVar(&rates, "latency-rates", "1000,10000,50000", "publish rates (events/s) of the live-latency workload")
	fs.DurationVar(&cfg.latencyDuration, "latency-duration", 10*time.Second, "how long each live-latency rate runs")
	fs.DurationVar(&cfg.flushFloor, "flush-floor", 400*time.Microsecond, "at each live-latency rate, also run streamd with --durability async while the harness fdatasyncs 1 KiB at most this often, and report each event's wait for the first fdatasync begun after it: what delivering only durable events adds at least under that load (0 skips it)")
	fs.IntVar(&cfg.fanoutConsumers, "fanout-consumers", 16, "live consumers of the fan-out workload")
	fs.IntVar(&cfg.fanoutEvents, "fanout-events", 1_000_000, "events of the unpaced fan-out run (publisher as fast as -in-flight allows, for -fanout-duration at most)")
	fs.Float64Var(&cfg.fanoutRate, "fanout-rate", 5000, "publish rate (events/s) of the paced fan-out run; 0 skips it")
	fs.DurationVar(&cfg.fanoutDuration, "fanout-duration", 10*time.Second, "how long each fan-out run publishes")
	fs.IntVar(&cfg.memoryEvents, "memory-events", 20_000_000, "events the memory workload publishes")
	fs.StringVar(&cfg.memoryCSV, "memory-csv", "", "append the memory workload's curves (resident set vs events stored, every second) to this CSV file")
	fs.BoolVar(&cfg.jsSyncAlways, "js-sync-always", true, "also run JetStream with sync_interval: always where fsync matters (publish, latency, fan-out)")
	fs.StringVar(&cfg.natsVersion, "nats-version", "v2.15.2", "nats-server version to install with go install")
	fs.StringVar(&cfg.natsCLIVersion, "natscli-version", "v0.5.0", "nats CLI version to install with go install, for nats bench js pub async beside the harness's JetStream publisher")
	fs.StringVar(&cfg.cacheDir, "cache-dir", filepath.Join(cache, "streamd-bench"), "where the streamd and nats-server binaries are kept")
	fs.StringVar(&cfg.workDir, "work-dir", "", "parent of the servers' data directories (default: a new temporary directory)")
	fs.StringVar(&cfg.profileDir, "profile-dir", "", "write a CPU profile of every client process here")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the work directory (logs) after the run")
	fs.StringVar(&cfg.markdown, "markdown", "", "also write the tables as Markdown to this file")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.quick {
		quick := map[string]func(){
			"publish-duration": func() { cfg.publishDuration = 2 * time.Second },
			"catchup-events":   func() { cfg.catchupEvents = 100_000 },
			"latency-duration": func() { cfg.latencyDuration = 2 * time.Second },
			"fanout-duration":  func() { cfg.fanoutDuration = 2 * time.Second },
			"memory-events":    func() { cfg.memoryEvents = 400_000 },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
	}
	if cfg.latencyRates, err = parseRates(rates); err != nil {
		return cfg, fmt.Errorf("-latency-rates: %w", err)
	}
	for name, v := range map[string]int{"publish-events": cfg.publishEvents, "in-flight": cfg.inFlight, "live-in-flight": cfg.liveInFlight,
		"catchup-events": cfg.catchupEvents, "fanout-consumers": cfg.fanoutConsumers, "fanout-events": cfg.fanoutEvents,
		"memory-events": cfg.memoryEvents} {
		if v <= 0 {
			return cfg, fmt.Errorf("-%s %d: want a positive number", name, v)
		}
	}
	if cfg.flushFloor < 0 {
		return cfg, fmt.Errorf("-flush-floor %s: want 0 (skip) or a positive interval", cfg.flushFloor)
	}
	if cfg.fanoutRate < 0 {
		return cfg, fmt.Errorf("-fanout-rate %g: want 0 (skip) or a positive rate", cfg.fanoutRate)
	}
	for _, w := range strings.Split(cfg.only, ",") {
		switch strings.TrimSpace(w) {
		case "publish", "catchup", "latency", "fanout", "memory":
		default:
			return cfg, fmt.Errorf("-only: unknown workload %q (want publish, catchup, latency, fanout, memory)", w)
		}
	}
	return cfg, nil
}

// parseRates reads a comma-separated list of positive rates.
func parseRates(s string) ([]float64, error) {
	var rates []float64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		r, err := strconv.ParseFloat(f, 64)
		if err != nil || r <= 0 {
			return nil, fmt.Errorf("%q is not a positive rate", f)
		}
		rates = append(rates, r)
	}
	if len(rates) == 0 {
		return nil, fmt.Errorf("no rate in %q", s)
	}
	return rates, nil
}

func (c config) runs(w string) bool {
	for _, x := range strings.Split(c.only, ",") {
		if strings.TrimSpace(x) == w {
			return true
		}
	}
	return false
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// harness holds what a run needs while it runs.
type harness struct {
	cfg     config
	tools   tools
	self    string
	workDir string
	report  *report
	// capacity is the publish rate each system reached in workload 1, if it
	// ran: paced runs of JetStream sync=always above it are skipped.
	capacity [numCols]float64
}

func run(cfg config) error {
	started := time.Now()
	ctx := context.Background()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	modRoot := filepath.Dir(strings.TrimSpace(string(out)))
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), "go.mod") {
		return fmt.Errorf("run from inside the streamd module (go env GOMOD: %q, %v)", out, err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf("building streamd and checking nats-server %s and the nats CLI %s in %s", cfg.natsVersion, cfg.natsCLIVersion, cfg.cacheDir)
	t, err := prepareTools(ctx, modRoot, cfg.cacheDir, cfg.natsVersion, cfg.natsCLIVersion)
	if err != nil {
		return err
	}
	workDir := cfg.workDir
	if workDir == "" {
		if workDir, err = os.MkdirTemp("", "streamd-bench-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(workDir, 0o755); err != nil {
		return err
	}
	if !cfg.keep {
		defer os.RemoveAll(workDir)
	}
	if cfg.profileDir != "" {
		if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
			return err
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		s := <-sig
		logf("%v: stopping the servers and clients", s)
		killChildren()
		if !cfg.keep {
			_ = os.RemoveAll(workDir)
		}
		os.Exit(1)
	}()
	h := &harness{cfg: cfg, tools: t, self: self, workDir: workDir, report: newReport()}
	h.report.machine = describeMachine(modRoot, workDir, t)
	for _, w := range []struct {
		name string
		run  func() error
	}{
		{"publish", h.publish}, {"catchup", h.catchup}, {"latency", h.latency}, {"fanout", h.fanout}, {"memory", h.memory},
	} {
		if !cfg.runs(w.name) {
			continue
		}
		if err := w.run(); err != nil {
			h.report.failures = append(h.report.failures, fmt.Sprintf("%s: %v", w.name, err))
			logf("%s failed: %v", w.name, err)
		}
	}
	h.report.command = "go run ./bench " + strings.Join(os.Args[1:], " ")
	h.report.elapsed = time.Since(started)
	h.report.print(os.Stdout)
	if cfg.markdown != "" {
		f, err := os.Create(cfg.markdown)
		if err != nil {
			return err
		}
		h.report.print(f)
		if err := f.Close(); err != nil {
			return err
		}
	}
	if cfg.keep {
		logf("logs and data kept in %s", workDir)
	}
	if len(h.report.failures) > 0 {
		return fmt.Errorf("%d workload(s) failed", len(h.report.failures))
	}
	return nil
}

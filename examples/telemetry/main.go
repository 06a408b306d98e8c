// Command telemetry is streamd's car telemetry example: aggregation before
// cross-region transfer, and raw detail on demand, from config files only.
//
// It runs one streamd process per edge region with config/edge.yaml (an
// aggregation stage writing windowed summaries per car category) and one
// for the cloud region with config/cloud.yaml (replications of the
// summaries alone, each through a counting TCP proxy: the link). Simulated
// cars publish raw readings into the edges. Raising the detail for a
// category is a temporary include on the cloud's replications (what
// `streamctl filters add --ttl` does); the edge producers enforce its
// expiry. The bytes crossing the links are measured against the raw
// telemetry.
//
// See README.md for how to run it and what each column measures.
package main

import (
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"
)

//go:embed config/edge.yaml
var edgeConfig []byte

//go:embed config/cloud.yaml
var cloudConfig []byte

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// flags are the command line.
type flags struct {
	options
	duration    time.Duration
	detail      string
	detailAfter time.Duration
	detailFor   time.Duration
}

func parseFlags(args []string, stderr io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("telemetry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	regions := fs.String("regions", "eu,us", "edge regions, comma-separated; each gets -cars cars (the cloud config must replicate from each)")
	fs.StringVar(&f.streamd, "streamd", "streamd", "the streamd binary (go build -o /tmp/streamd ./cmd/streamd)")
	edgeFile := fs.String("edge-config", "", "streamd config of the edge regions (default: the example's config/edge.yaml)")
	cloudFile := fs.String("cloud-config", "", "streamd config of the cloud region, with <REGION>_ADDR placeholders (default: config/cloud.yaml)")
	fs.IntVar(&f.cars, "cars", 1000, "cars per edge region (categories: "+strings.Join(categories, ", ")+", in turn)")
	fs.Float64Var(&f.rate, "rate", 5, "readings per car per second")
	fs.Float64Var(&f.speed, "speed", 1, "simulated seconds per real second")
	fs.StringVar(&f.dir, "data", "", "directory of the daemons' configs, journals and logs (default: a temporary one, removed at exit)")
	fs.DurationVar(&f.duration, "duration", 30*time.Second, "how long to run (0: until interrupted)")
	fs.StringVar(&f.detail, "detail", "", "raise the detail for this car category during the run")
	fs.DurationVar(&f.detailAfter, "detail-after", 5*time.Second, "when to raise the detail")
	fs.DurationVar(&f.detailFor, "detail-for", 10*time.Second, "how long the raised detail lasts (its ttl)")
	fs.StringVar(&f.durability, "durability", "sync", "the daemons' --durability: sync or async")
	level := fs.String("log-level", "warn", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		return f, fmt.Errorf("telemetry: unexpected argument %q", fs.Arg(0))
	}
	if f.detail != "" && !slices.Contains(categories, f.detail) {
		return f, fmt.Errorf("telemetry: -detail %q: want one of %s", f.detail, strings.Join(categories, ", "))
	}
	if f.detailFor <= 0 {
		return f, fmt.Errorf("telemetry: -detail-for %v: want > 0", f.detailFor)
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(*level)); err != nil {
		return f, fmt.Errorf("telemetry: -log-level: %w", err)
	}
	f.edgeConfig, f.cloudConfig = edgeConfig, cloudConfig
	for _, c := range []struct {
		path string
		dst  *[]byte
	}{{*edgeFile, &f.edgeConfig}, {*cloudFile, &f.cloudConfig}} {
		if c.path != "" {
			b, err := os.ReadFile(c.path)
			if err != nil {
				return f, fmt.Errorf("telemetry: %w", err)
			}
			*c.dst = b
		}
	}
	bin, err := exec.LookPath(f.streamd)
	if err != nil {
		return f, fmt.Errorf("telemetry: -streamd %s: %w (build it: go build -o /tmp/streamd ./cmd/streamd, then -streamd /tmp/streamd)", f.streamd, err)
	}
	f.streamd = bin
	f.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: l}))
	f.regions = strings.Split(*regions, ",")
	f.epoch = time.Now()
	return f, f.validate()
}

func run(args []string, stdout, stderr io.Writer) error {
	f, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if f.dir == "" {
		if f.dir, err = os.MkdirTemp("", "telemetry-"); err != nil {
			return fmt.Errorf("telemetry: %w", err)
		}
		defer os.RemoveAll(f.dir)
	} else if err := os.MkdirAll(f.dir, 0o755); err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if f.duration > 0 {
		// A cancel, not a deadline: the streams end as on Ctrl-C.
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer time.AfterFunc(f.duration, cancel).Stop()
		defer cancel()
	}
	sys, err := startSystem(f.options)
	if err != nil {
		return err
	}
	for _, e := range sys.edges {
		fmt.Fprintf(stdout, "edge  %-6s %s  %d cars, %g readings/s each; the cloud dials it through %s\n", e.name, e.d.addr, f.cars, f.rate, e.link.Addr())
	}
	fmt.Fprintf(stdout, "cloud        %s  replicates the summaries (configs, journals and logs in %s)\n", sys.cloud.addr, f.dir)
	fmt.Fprintf(stdout, "raise detail: streamctl --addr %s filters add --consumer %s --ttl 30m 'include tag=sports'\n", sys.cloud.addr, replicationOf(sys.edges[0].name))

	rep := &report{sys: sys, out: stdout}
	rep.mark("summaries only")
	parts := []func(context.Context) error{sys.runSims, sys.runWatch, rep.run}
	if f.detail != "" {
		parts = append(parts, func(ctx context.Context) error { return raiseDetail(ctx, sys, rep, f) })
	}
	err = runAll(ctx, parts...)
	end := sys.read()
	if cerr := sys.close(); err == nil {
		err = cerr
	}
	fmt.Fprintln(stdout)
	rep.table(stdout, end)
	return err
}

// raiseDetail raises the detail for f.detail after f.detailAfter, for
// f.detailFor, and marks the phases: the detail phase from just before the
// filter update, the next one from the expiry plus expiryMargin, so that
// the batches in flight at the expiry count in the detail phase.
func raiseDetail(ctx context.Context, sys *system, rep *report, f flags) error {
	if !wait(ctx, f.detailAfter) {
		return nil
	}
	rep.mark("detail " + f.detail)
	c, err := sys.raiseDetail(ctx, fmt.Sprintf("include tag=%s ttl=%s", f.detail, f.detailFor))
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	if wait(ctx, time.Until(time.Unix(0, c.ExpiresAtUnixNano).Add(expiryMargin))) {
		rep.mark("after expiry")
	}
	return nil
}

// expiryMargin is how long after an expiry the report starts the next phase.
const expiryMargin = 500 * time.Millisecond

// wait waits for d, or less if ctx ends first (then it reports false).
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

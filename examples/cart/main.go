// Command cart is streamd's multi-region shopping cart example: replicated
// writes, where every region edits the same carts and their states merge.
//
// Each region has its own journal and producer (served over gRPC on
// 127.0.0.1) and replicates every other region's stream into its journal
// (topology.NewReplication) through a TCP proxy that can cut the link.
// Simulated users edit shared carts in every region at once through
// topology.Replicated: a cart is an OR-set of items, a counter per item's
// quantity and an LWW register for the shipping address. During the run one
// region is cut off for a while, so that the regions diverge; once the link
// is back they converge, and the example prints every cart in every region.
//
// See README.md for how to run it and what happens in each conflict.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/streamd/streamd/journal"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// options size the example.
type options struct {
	regions []string
	carts   int     // edited by the random users (the scripted conflicts have one more)
	users   int     // per region
	rate    float64 // edits per second per user
	// duration is how long the users edit; the partition starts cutAfter
	// into it and lasts cutFor (0: no partition).
	duration, cutAfter, cutFor time.Duration
	isolate                    string // the region cut off by the partition
	// convergeTimeout bounds the waits for replication.
	convergeTimeout time.Duration
	seed            uint64
	dir             string
	durability      journal.Durability
	// progress is how often a progress line is printed (0: never).
	progress time.Duration
	log      *slog.Logger
}

func (o options) validate() error {
	switch {
	case len(o.regions) < 2:
		return fmt.Errorf("cart: %d region(s): want at least 2", len(o.regions))
	case o.carts < 1:
		return fmt.Errorf("cart: carts is %d, want ≥ 1", o.carts)
	case o.users < 1:
		return fmt.Errorf("cart: users is %d, want ≥ 1", o.users)
	case o.rate <= 0:
		return fmt.Errorf("cart: rate is %g, want > 0", o.rate)
	case o.duration <= 0:
		return fmt.Errorf("cart: duration is %v, want > 0", o.duration)
	case o.cutAfter < 0 || o.cutFor < 0:
		return errors.New("cart: cut-after and cut-for must not be negative")
	case o.cutAfter+o.cutFor > o.duration:
		return fmt.Errorf("cart: the partition (%v after the start, for %v) ends after the edits (%v)", o.cutAfter, o.cutFor, o.duration)
	case o.convergeTimeout <= 0:
		return fmt.Errorf("cart: converge-timeout is %v, want > 0", o.convergeTimeout)
	case !slices.Contains(o.regions, o.isolate):
		return fmt.Errorf("cart: isolate %q is not one of the regions %s", o.isolate, strings.Join(o.regions, ","))
	case o.log == nil:
		return errors.New("cart: no logger")
	}
	for i, r := range o.regions {
		if r == "" || slices.Contains(o.regions[:i], r) {
			return fmt.Errorf("cart: regions %q: names must be unique and not empty", strings.Join(o.regions, ","))
		}
	}
	return nil
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("cart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	regions := fs.String("regions", "eu,us", "regions, comma-separated (two or more); each replicates from every other")
	fs.IntVar(&o.carts, "carts", 4, "carts the random users edit, in every region")
	fs.IntVar(&o.users, "users", 2, "simulated users per region")
	fs.Float64Var(&o.rate, "rate", 20, "edits per second per user")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long the users edit")
	fs.DurationVar(&o.cutAfter, "cut-after", 2*time.Second, "when the partition starts")
	fs.DurationVar(&o.cutFor, "cut-for", 5*time.Second, "how long the partition lasts (0: none)")
	fs.StringVar(&o.isolate, "isolate", "", "the region the partition cuts off (default: the first)")
	fs.DurationVar(&o.convergeTimeout, "converge-timeout", 30*time.Second, "how long to wait for the regions to converge")
	fs.Uint64Var(&o.seed, "seed", uint64(time.Now().UnixNano()), "seed of the users' choices")
	fs.StringVar(&o.dir, "data", "", "data directory (default: a temporary one, removed at exit)")
	durability := fs.String("durability", "sync", "journal durability: sync (fsync before acknowledging) or async")
	fs.DurationVar(&o.progress, "progress", time.Second, "how often to print a progress line (0: never)")
	level := fs.String("log-level", "error", "debug, info, warn or error (warn shows the replications reconnecting)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("cart: unexpected argument %q", fs.Arg(0))
	}
	var err error
	if o.durability, err = journal.ParseDurability(*durability); err != nil {
		return o, fmt.Errorf("cart: -durability: %w", err)
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(*level)); err != nil {
		return o, fmt.Errorf("cart: -log-level: %w", err)
	}
	o.log = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: l}))
	o.regions = strings.Split(*regions, ",")
	if o.isolate == "" {
		o.isolate = o.regions[0]
	}
	return o, o.validate()
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if o.dir == "" {
		if o.dir, err = os.MkdirTemp("", "cart-"); err != nil {
			return fmt.Errorf("cart: %w", err)
		}
		defer os.RemoveAll(o.dir)
	}
	// Ctrl-C ends the edits early; the regions still converge and print.
	// A second one kills the process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)

	w, err := openWorld(o)
	if err != nil {
		return err
	}
	res, err := w.run(ctx, stdout)
	if err == nil {
		err = res.print(stdout, w)
	}
	return errors.Join(err, w.close())
}

package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"text/tabwriter"
	"time"
)

// reading is the example's counters at one moment.
type reading struct {
	at   time.Time
	raw  traffic // raw telemetry published in the edges (batchedSize each)
	link linkStats
}

func (s *system) read() reading {
	return reading{at: time.Now(), raw: s.published(), link: s.meter.stats()}
}

// mark is the start of a phase of the run.
type mark struct {
	name string
	at   reading
}

// report prints a progress line every second and, at the end, a table of
// the phases of the run (summaries only, raised detail, after its expiry).
type report struct {
	sys *system
	out io.Writer

	mu    sync.Mutex
	marks []mark
}

// mark starts a phase now.
func (r *report) mark(name string) {
	at := r.sys.read()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.marks = append(r.marks, mark{name, at})
}

// run prints the progress line every second until ctx is done.
func (r *report) run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	start := r.sys.read()
	prev := start
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := r.sys.read()
		d, secs := now.link.minus(prev.link), now.at.Sub(prev.at).Seconds()
		raw := now.raw.minus(prev.raw)
		fmt.Fprintf(r.out, "%4.0fs  raw %6.0f ev/s %9s | crossed: summaries %4.1f ev/s %9s, raw %6.0f ev/s %9s, control %9s; TCP %9s = %s of raw | %s\n",
			now.at.Sub(start.at).Seconds(), float64(raw.Events)/secs, perSec(raw.Bytes, secs),
			float64(d.Summary.Events)/secs, perSec(d.Summary.Bytes, secs), float64(d.Raw.Events)/secs, perSec(d.Raw.Bytes, secs),
			perSec(d.Control, secs), perSec(d.TCP(), secs), percent(d.TCP(), raw.Bytes), r.sys.cloud.raised())
		prev = now
	}
}

// table writes one row per phase from the marks to end, and one for the
// whole run.
func (r *report) table(w io.Writer, end reading) {
	r.mu.Lock()
	marks := append([]mark(nil), r.marks...)
	r.mu.Unlock()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tsecs\traw ev/s\traw\tsummary ev/s\tsummaries\tcrossed raw ev/s\tcrossed raw\tcontrol\tgRPC total\tTCP\tTCP/raw\traw÷TCP\t")
	row := func(name string, from, to reading) {
		secs := to.at.Sub(from.at).Seconds()
		raw, d := to.raw.minus(from.raw), to.link.minus(from.link)
		fmt.Fprintf(tw, "%s\t%.1f\t%.0f\t%s\t%.2f\t%s\t%.0f\t%s\t%s\t%s\t%s\t%s\t%.0f×\t\n", name, secs,
			float64(raw.Events)/secs, perSec(raw.Bytes, secs), float64(d.Summary.Events)/secs, perSec(d.Summary.Bytes, secs),
			float64(d.Raw.Events)/secs, perSec(d.Raw.Bytes, secs), perSec(d.Control, secs), perSec(d.GRPC(), secs),
			perSec(d.TCP(), secs), percent(d.TCP(), raw.Bytes), float64(raw.Bytes)/float64(max(d.TCP(), 1)))
	}
	for i, m := range marks {
		to := end
		if i+1 < len(marks) {
			to = marks[i+1].at
		}
		row(m.name, m.at, to)
	}
	if len(marks) > 1 {
		row("whole run", marks[0].at, end)
	}
	tw.Flush()
}

// perSec formats bytes per second.
func perSec(bytes int64, secs float64) string {
	b := float64(bytes) / secs
	switch {
	case b >= 1e6:
		return fmt.Sprintf("%.2f MB/s", b/1e6)
	case b >= 1e3:
		return fmt.Sprintf("%.1f kB/s", b/1e3)
	}
	return fmt.Sprintf("%.0f B/s", b)
}

func percent(part, whole int64) string {
	if whole == 0 {
		return "-"
	}
	return fmt.Sprintf("%.3f%%", 100*float64(part)/float64(whole))
}

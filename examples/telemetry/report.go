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
	at             time.Time
	raw            traffic // raw telemetry published in the edges (batchedSize each)
	cloud          arrivals
	tcpDown, tcpUp int64 // the links' bytes
}

func (r reading) tcp() int64 { return r.tcpDown + r.tcpUp }

func (s *system) read() reading {
	down, up := s.link()
	return reading{at: time.Now(), raw: s.published(), cloud: s.watch.arrivals(), tcpDown: down, tcpUp: up}
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

	mu     sync.Mutex
	marks  []mark
	status string // what the link carries now, for the progress line
}

// mark starts a phase now.
func (r *report) mark(name string) {
	at := r.sys.read()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.marks = append(r.marks, mark{name, at})
	r.status = name
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
		secs := now.at.Sub(prev.at).Seconds()
		raw, cl, tcp := now.raw.minus(prev.raw), now.cloud.minus(prev.cloud), now.tcp()-prev.tcp()
		r.mu.Lock()
		phase := r.status
		r.mu.Unlock()
		fmt.Fprintf(r.out, "%4.0fs  raw %6.0f ev/s %9s | to the cloud: summaries %4.1f ev/s %9s, raw %6.0f ev/s %9s; link TCP %9s = %s of raw | %s\n",
			now.at.Sub(start.at).Seconds(), float64(raw.Events)/secs, perSec(raw.Bytes, secs),
			float64(cl.Summary.Events)/secs, perSec(cl.Summary.Bytes, secs), float64(cl.Raw.Events)/secs, perSec(cl.Raw.Bytes, secs),
			perSec(tcp, secs), percent(tcp, raw.Bytes), phase)
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
	fmt.Fprintln(tw, "phase\tsecs\traw ev/s\traw\tsummary ev/s\tsummaries\tcloud raw ev/s\tcloud raw\tlink TCP\tTCP/raw\traw÷TCP\t")
	row := func(name string, from, to reading) {
		secs := to.at.Sub(from.at).Seconds()
		raw, cl, tcp := to.raw.minus(from.raw), to.cloud.minus(from.cloud), to.tcp()-from.tcp()
		fmt.Fprintf(tw, "%s\t%.1f\t%.0f\t%s\t%.2f\t%s\t%.0f\t%s\t%s\t%s\t%.0f×\t\n", name, secs,
			float64(raw.Events)/secs, perSec(raw.Bytes, secs), float64(cl.Summary.Events)/secs, perSec(cl.Summary.Bytes, secs),
			float64(cl.Raw.Events)/secs, perSec(cl.Raw.Bytes, secs), perSec(tcp, secs), percent(tcp, raw.Bytes), float64(raw.Bytes)/float64(max(tcp, 1)))
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

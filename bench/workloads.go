package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Columns of the report: the systems compared.
const (
	colStreamd = iota
	colJS
	colJSAlways
	numCols
)

// system is one server setup a workload runs against.
type system struct {
	col    int
	client string // clientSpec.System
	label  string
	start  func() (*server, error)
}

func (h *harness) systems(withAlways bool) []system {
	s := []system{
		{colStreamd, sysStreamd, "streamd", func() (*server, error) { return startStreamd(h.tools.streamd, h.workDir) }},
		{colJS, sysNATS, "JetStream", func() (*server, error) { return startNATS(h.tools.natsServer, h.workDir, false) }},
	}
	if withAlways && h.cfg.jsSyncAlways {
		s = append(s, system{colJSAlways, sysNATS, "JetStream sync=always",
			func() (*server, error) { return startNATS(h.tools.natsServer, h.workDir, true) }})
	}
	return s
}

// withServer starts sys, runs f and stops the server.
func withServer(sys system, f func(*server) error) error {
	srv, err := sys.start()
	if err != nil {
		return err
	}
	defer srv.stop()
	return f(srv)
}

func (h *harness) spec(role string, sys system, srv *server, label string) clientSpec {
	s := clientSpec{Role: role, System: sys.client, InFlight: h.cfg.inFlight, Batch: 1, Conns: 1,
		Via: viaPublisher, Timeout: 15 * time.Minute}
	if srv != nil {
		s.Addr = srv.addr
	}
	if h.cfg.profileDir != "" {
		s.CPUProfile = filepath.Join(h.cfg.profileDir, fileName(label)+".pprof")
	}
	return s
}

func fileName(label string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			return r
		}
		return '_'
	}, label)
}

// measure runs one client to completion and records it with the server's
// CPU time over the same interval.
func (h *harness) measure(label string, srv *server, spec clientSpec) (clientResult, error) {
	logf("  %s", label)
	var cpu0 time.Duration
	if srv != nil {
		cpu0 = srv.cpu()
	}
	t0 := time.Now()
	res, err := runClient(h.self, h.workDir, label, spec)
	m := measurement{label: label, res: res, wall: time.Since(t0), serverCPU: -1}
	if srv != nil {
		m.serverCPU = srv.cpu() - cpu0
	}
	h.report.measurements = append(h.report.measurements, m)
	return res, err
}

// live runs a subscriber (waiting until its subscriptions are open) and then
// a publisher against srv, and records both with the server's CPU time.
// beside, when not nil, runs in a goroutine of its own from the
// publisher's start; live waits for it.
func (h *harness) live(label string, srv *server, sub, pub clientSpec, beside func()) (subRes, pubRes clientResult, err error) {
	logf("  %s", label)
	c, err := startClient(h.self, h.workDir, label+" subscriber", sub)
	if err != nil {
		return subRes, pubRes, err
	}
	if err := c.waitReady(2 * time.Minute); err != nil {
		return subRes, pubRes, err
	}
	cpu0, t0 := srv.cpu(), time.Now()
	var sides sync.WaitGroup
	if beside != nil {
		sides.Go(beside)
	}
	pubRes, pubErr := runClient(h.self, h.workDir, label+" publisher", pub)
	sides.Wait()
	if pubErr != nil {
		_ = c.cmd.Process.Kill()
	}
	c.expect(pubRes.Events)
	subRes, subErr := c.wait()
	serverCPU, wall := srv.cpu()-cpu0, time.Since(t0)
	h.report.measurements = append(h.report.measurements,
		measurement{label: label + ": publisher", res: pubRes, wall: wall, serverCPU: serverCPU},
		measurement{label: label + ": subscriber(s)", res: subRes, wall: wall, serverCPU: -1})
	if pubErr != nil {
		return subRes, pubRes, pubErr
	}
	return subRes, pubRes, subErr
}

// publish: workload 1, durable publish throughput, and the raw Badger
// baseline.
func (h *harness) publish() error {
	n, d := h.cfg.publishEvents, h.cfg.publishDuration
	logf("1. publish throughput: %d events of %d B or %s, %d in flight", n, payloadSize, d, h.cfg.inFlight)
	first := h.report.row(fmt.Sprintf("1. Durable publish, 1 event per publish, %d in flight on one connection, %s events or %s (streamd publisher.Publisher: one PublishStream, the publishes in flight sent together, each its own append, fsync before ack; JetStream PublishAsync)", h.cfg.inFlight, fmtInt(float64(n)), d), "events/s", unitRate)
	others := []struct {
		via string
		row *row
	}{
		{viaStream, h.report.row(fmt.Sprintf("1. Same, streamd PublishStream with one event per request, %d requests in flight (JetStream: the same PublishAsync runs)", h.cfg.inFlight), "events/s", unitRate)},
		{viaUnary, h.report.row(fmt.Sprintf("1. Same, streamd with %d goroutines calling unary Publish (JetStream: the same PublishAsync runs)", h.cfg.inFlight), "events/s", unitRate)},
	}
	natsBench := h.report.row(fmt.Sprintf("1. JetStream's own publisher on the same server: nats bench js pub async --batch %d (natscli %s), %s messages of %d B into a file stream of its own (ratio: streamd publisher.Publisher, the first row, ÷ it)", h.cfg.inFlight, h.cfg.natsCLIVersion, fmtInt(float64(n)), payloadSize), "events/s", unitRate)
	var errs []error
	for _, sys := range h.systems(true) {
		err := withServer(sys, func(srv *server) error {
			label := "publish " + sys.label
			spec := h.spec("publish", sys, srv, label)
			spec.Events, spec.MaxDuration = n, d
			res, err := h.measure(label, srv, spec)
			if err != nil {
				return err
			}
			first.set(sys.col, res.rate())
			h.capacity[sys.col] = res.rate()
			if sys.col == colJS {
				if err := h.natsBench(srv, natsBench, res.rate(), first.vals[colStreamd]); err != nil {
					return err
				}
			}
			for _, o := range others {
				if sys.col != colStreamd {
					o.row.set(sys.col, res.rate())
					continue
				}
				label = fmt.Sprintf("publish streamd %s x%d", o.via, h.cfg.inFlight)
				spec = h.spec("publish", sys, srv, label)
				spec.Events, spec.MaxDuration, spec.Via = n, d, o.via
				if res, err = h.measure(label, srv, spec); err != nil {
					return err
				}
				o.row.set(colStreamd, res.rate())
			}
			return nil
		})
		errs = append(errs, err)
	}
	dir, err := os.MkdirTemp(h.workDir, "rawbadger-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	label := fmt.Sprintf("raw Badger, %d events per txn", h.cfg.inFlight)
	spec := h.spec("rawbadger", system{}, nil, label)
	spec.Events, spec.Batch, spec.Dir, spec.MaxDuration = n, h.cfg.inFlight, dir, d
	res, err := h.measure(label, nil, spec)
	if err == nil {
		raw := h.report.row(fmt.Sprintf("1. Baseline: raw Badger, SyncWrites, the same events in txns of %d, one writer, in one process (in the streamd column; ratio: streamd publisher.Publisher, the first row, ÷ raw Badger)", h.cfg.inFlight), "events/s", unitRate)
		raw.set(colStreamd, res.rate())
		if s := first.vals[colStreamd]; s > 0 && res.rate() > 0 {
			raw.ratioNote = fmt.Sprintf("%.2f", s/res.rate())
		}
	}
	errs = append(errs, err)
	return errors.Join(errs...)
}

// natsBench runs JetStream's own publisher benchmark against srv, `nats
// bench js pub async` with the harness's in-flight count as its batch, so
// that the report shows whether the harness's JetStream publisher (which
// reached harnessRate) gets what nats-server gives its own tool.
func (h *harness) natsBench(srv *server, r *row, harnessRate, streamdRate float64) error {
	n := h.cfg.publishEvents
	logf("  nats bench js pub async --batch %d", h.cfg.inFlight)
	csvPath := filepath.Join(srv.dir, "natsbench.csv")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.tools.natsCLI, "--no-context", "--server", "nats://"+srv.addr,
		"bench", "js", "pub", "async", "natsbench.x", "--stream", "natsbench", "--create", "--storage", "file",
		"--batch", strconv.Itoa(h.cfg.inFlight), "--msgs", strconv.Itoa(n), "--size", strconv.Itoa(payloadSize),
		"--no-progress", "--csv", csvPath)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nats bench: %w\n%s", err, out)
	}
	rate, err := natsBenchRate(csvPath)
	if err != nil {
		return err
	}
	r.set(colJS, rate)
	if streamdRate > 0 {
		r.ratioNote = fmt.Sprintf("%.2f", streamdRate/rate)
	}
	h.report.notes = append(h.report.notes, fmt.Sprintf("1. durable publish: the harness's JetStream publisher reached %s events/s, %.0f%% of what nats bench reached on the same server (%s).",
		fmtInt(harnessRate), 100*harnessRate/rate, fmtInt(rate)))
	return nil
}

// natsBenchRate reads the messages per second from the CSV file of `nats
// bench`: a header line naming MsgsPerSec, then one line per client.
func natsBenchRate(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		return 0, fmt.Errorf("nats bench CSV %s: %d lines, want a header and a line per client", path, len(lines))
	}
	col := slices.Index(strings.Split(strings.TrimPrefix(lines[0], "#"), ","), "MsgsPerSec")
	if col < 0 {
		return 0, fmt.Errorf("nats bench CSV %s: no MsgsPerSec column in %q", path, lines[0])
	}
	total := 0.0
	for _, l := range lines[1:] {
		f := strings.Split(l, ",")
		if col >= len(f) {
			return 0, fmt.Errorf("nats bench CSV %s: line %q has no MsgsPerSec", path, l)
		}
		v, err := strconv.ParseFloat(f[col], 64)
		if err != nil {
			return 0, fmt.Errorf("nats bench CSV %s: MsgsPerSec %q: %v", path, f[col], err)
		}
		total += v
	}
	return total, nil
}

// catchup: workloads 2 (catch-up) and 4 (filtered consumption), which read
// the same stored events.
func (h *harness) catchup() error {
	n := h.cfg.catchupEvents
	matched := taggedCount(n)
	logf("2+4. catch-up and filtered catch-up of %d stored events (%d tagged)", n, matched)
	loadName := fmt.Sprintf("2. Loading %s events (streamd PublishStream, 1,000 events per request, 16 in flight; JetStream PublishAsync, 4,096 in flight)", fmtInt(float64(n)))
	load := h.report.row(loadName, "events/s", unitRate)
	disk := h.report.row(loadName, "MB on disk after", unitMB)
	plainName := fmt.Sprintf("2. Catch-up: the %s stored events read by one consumer (streamd raw Subscribe from earliest; JetStream ordered consumer)", fmtInt(float64(n)))
	plain := h.report.row(plainName, "events/s", unitRate)
	plainBytes := h.report.row(plainName, "MB received", unitMB)
	acked := h.report.row("2. Catch-up keeping positions (streamd consumer.Consumer, at-least-once, offsets store; JetStream durable pull consumer, explicit ack of every message)", "events/s", unitRate)
	filtName := fmt.Sprintf("4. Filtered catch-up, 1%% selected (%s of the %s; streamd `include tag=x`; JetStream ordered consumer on ev.x.>)", fmtInt(float64(matched)), fmtInt(float64(n)))
	filt := h.report.row(filtName, "stored events covered/s", unitRate)
	filtMatched := h.report.row(filtName, "matching events/s", unitRate)
	filtBytes := h.report.row(filtName, "MB received", unitMB)
	var errs []error
	for _, sys := range h.systems(false) {
		err := withServer(sys, func(srv *server) error {
			label := "load " + sys.label
			spec := h.spec("publish", sys, srv, label)
			spec.Events = n
			if sys.col == colStreamd {
				spec.Batch, spec.InFlight, spec.Via = 1000, 16, viaStream
			} else {
				spec.InFlight = 4096
			}
			res, err := h.measure(label, srv, spec)
			if err != nil {
				return err
			}
			if res.Events != int64(n) {
				return fmt.Errorf("%s: %d of %d events acknowledged", label, res.Events, n)
			}
			load.set(sys.col, res.rate())
			disk.set(sys.col, float64(srv.diskBytes())/1e6)

			kinds := map[int][2]string{colStreamd: {"raw", "consumer"}, colJS: {"ordered", "durable"}}[sys.col]
			sub := func(what, kind string, filter bool, expect int) (clientResult, error) {
				label := fmt.Sprintf("%s %s %s", what, sys.label, kind)
				spec := h.spec("subscribe", sys, srv, label)
				spec.Kind, spec.Filter, spec.Expect, spec.Idle = kind, filter, expect, 30*time.Second
				dir, err := os.MkdirTemp(h.workDir, "sub-")
				if err != nil {
					return clientResult{}, err
				}
				defer os.RemoveAll(dir)
				spec.Dir = dir
				res, err := h.measure(label, srv, spec)
				if err == nil && res.Events != int64(expect) {
					err = fmt.Errorf("%s: received %d of %d events", label, res.Events, expect)
				}
				return res, err
			}
			if res, err = sub("catch-up", kinds[0], false, n); err != nil {
				return err
			}
			plain.set(sys.col, res.rate())
			plainBytes.set(sys.col, float64(res.BytesIn)/1e6)
			if res, err = sub("catch-up with positions", kinds[1], false, n); err != nil {
				return err
			}
			acked.set(sys.col, res.rate())
			if res, err = sub("filtered catch-up", kinds[0], true, matched); err != nil {
				return err
			}
			if res.Seconds > 0 {
				filt.set(sys.col, float64(n)/res.Seconds)
			}
			filtMatched.set(sys.col, res.rate())
			filtBytes.set(sys.col, float64(res.BytesIn)/1e6)
			return nil
		})
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// liveKind is the live subscription used per system: streamd's raw
// Subscribe, JetStream's ordered consumer (neither acks).
func liveKind(sys system) string {
	if sys.col == colStreamd {
		return "raw"
	}
	return "ordered"
}

// liveRun is a paced or unpaced publisher with conns live subscribers.
type liveRun struct {
	label    string
	events   int
	rate     float64       // 0: unpaced
	duration time.Duration // the publisher stops sending after this
	conns    int
	inFlight int
	beside   func() // run beside the publisher (harness.live)
}

// runLive runs r against srv. sustained is false when the publisher or the
// subscribers did not keep up with the target rate (or, unpaced, the
// publisher stopped at the duration).
func (h *harness) runLive(sys system, srv *server, r liveRun) (sub, pub clientResult, sustained bool, err error) {
	label := fmt.Sprintf("%s %s", r.label, sys.label)
	subSpec := h.spec("subscribe", sys, srv, label+" subscriber")
	subSpec.Kind, subSpec.Latest, subSpec.Latency = liveKind(sys), true, true
	subSpec.Expect, subSpec.Conns, subSpec.Idle = r.events, r.conns, 15*time.Second
	subSpec.Timeout = 3*r.duration + 2*time.Minute
	pubSpec := h.spec("publish", sys, srv, label+" publisher")
	pubSpec.Events, pubSpec.Rate, pubSpec.MaxDuration, pubSpec.InFlight = r.events, r.rate, r.duration, r.inFlight
	pubSpec.Timeout = subSpec.Timeout
	sub, pub, err = h.live(label, srv, subSpec, pubSpec, r.beside)
	if err != nil {
		return sub, pub, false, err
	}
	if want := pub.Events * int64(r.conns); sub.Events < want {
		return sub, pub, false, fmt.Errorf("%s: subscribers received %d of the %d events published", label, sub.Events, want)
	}
	sustained = pub.Events == int64(r.events) &&
		(r.rate == 0 || (pub.rate() >= 0.95*r.rate && sub.rate() >= 0.95*r.rate*float64(r.conns)))
	return sub, pub, sustained, nil
}

// beyondCapacity reports whether a paced run of JetStream sync=always at
// rate is to be skipped because workload 1 measured it below that rate: the
// run would only measure a backlog growing for its whole duration (and take
// long to drain). streamd and default JetStream always run.
func (h *harness) beyondCapacity(sys system, rate float64, what string) bool {
	c := h.capacity[sys.col]
	if sys.col != colJSAlways || c <= 0 || rate <= c {
		return false
	}
	h.report.notes = append(h.report.notes, fmt.Sprintf("%s: %s was not run at %s events/s, above the %s events/s it reached in workload 1.",
		what, sys.label, fmtInt(rate), fmtInt(c)))
	return true
}

// latency: workload 3, live end-to-end latency at fixed publish rates.
func (h *harness) latency() error {
	d := h.cfg.latencyDuration
	logf("3. live latency at %v events/s, %s each", h.cfg.latencyRates, d)
	type rowset struct {
		p50, p99, p999, pub *row
		floor               [3]*row // p50, p99, p99.9 of the -flush-floor waits
	}
	rows := map[float64]rowset{}
	for _, r := range h.cfg.latencyRates {
		name := fmt.Sprintf("3. Live latency at %s events/s for %s, from the publish's scheduled start to consumer receipt, up to %s publishes in flight (streamd raw Subscribe; JetStream ordered consumer)", fmtInt(r), d, fmtInt(float64(h.cfg.liveInFlight)))
		rows[r] = rowset{
			p50:  h.report.row(name, "p50", unitNanos),
			p99:  h.report.row(name, "p99", unitNanos),
			p999: h.report.row(name, "p99.9", unitNanos),
			pub:  h.report.row(name, "publish rate reached, events/s", unitRate),
		}
		if h.cfg.flushFloor > 0 {
			name := fmt.Sprintf("3. Floor at %s events/s: the wait of each event for the first fdatasync begun after it, while the harness writes and fdatasyncs 1 KiB at most every %s beside streamd --durability async publishing and delivering at that rate (what delivering only durable events adds at least, under this load; JetStream column: its latency in the row above)", fmtInt(r), h.cfg.flushFloor)
			rs := rows[r]
			rs.floor = [3]*row{h.report.row(name, "p50", unitNanos), h.report.row(name, "p99", unitNanos), h.report.row(name, "p99.9", unitNanos)}
			rows[r] = rs
		}
	}
	var errs []error
	for _, sys := range h.systems(true) {
		err := withServer(sys, func(srv *server) error {
			for _, r := range h.cfg.latencyRates {
				if h.beyondCapacity(sys, r, "3. live latency") {
					continue
				}
				run := liveRun{label: fmt.Sprintf("latency %s/s", fmtInt(r)), events: int(r * d.Seconds()), rate: r,
					duration: d*3/2 + time.Second, conns: 1, inFlight: h.cfg.liveInFlight}
				sub, pub, sustained, err := h.runLive(sys, srv, run)
				if err != nil {
					return err
				}
				rs := rows[r]
				rs.pub.set(sys.col, pub.rate())
				if l := sub.Latency; l != nil {
					for _, x := range []struct {
						row *row
						v   int64
					}{{rs.p50, l.P50}, {rs.p99, l.P99}, {rs.p999, l.P999}} {
						x.row.set(sys.col, float64(x.v))
						x.row.marks[sys.col] = !sustained
					}
				}
			}
			return nil
		})
		errs = append(errs, err)
	}
	if h.cfg.flushFloor > 0 {
		for _, rs := range rows {
			for i, v := range []*row{rs.p50, rs.p99, rs.p999} {
				rs.floor[i].set(colJS, v.vals[colJS])
				rs.floor[i].marks[colJS] = v.marks[colJS]
			}
		}
		errs = append(errs, h.flushFloor(func(rate float64, waits *Latency, sustained bool) {
			for i, v := range []int64{waits.P50, waits.P99, waits.P999} {
				rows[rate].floor[i].set(colStreamd, float64(v))
				rows[rate].floor[i].marks[colStreamd] = !sustained
			}
		}))
	}
	return errors.Join(errs...)
}

// flushFloor runs streamd with --durability async (its pipeline without a
// flush before delivery) at each live-latency rate while the harness writes
// and fdatasyncs 1 KiB at most every -flush-floor on the same disk (about
// as often as streamd's writer at 10,000 events/s), and reports for each
// rate how long an event arriving at it waits for the end of the first
// fdatasync begun after it. An event delivered only once durable waits at
// least that, whatever the rest of the design: these are floors of the
// live latency's percentiles under this load.
func (h *harness) flushFloor(report func(rate float64, waits *Latency, sustained bool)) error {
	d := h.cfg.latencyDuration
	sys := system{colStreamd, sysStreamd, "streamd --durability async",
		func() (*server, error) { return startStreamd(h.tools.streamd, h.workDir, "--durability", "async") }}
	return withServer(sys, func(srv *server) error {
		file, err := newFsyncFile(h.workDir)
		if err != nil {
			return err
		}
		defer file.remove()
		for _, r := range h.cfg.latencyRates {
			var syncs []span
			var syncErr error
			run := liveRun{label: fmt.Sprintf("latency %s/s beside fdatasyncs", fmtInt(r)), events: int(r * d.Seconds()), rate: r,
				duration: d*3/2 + time.Second, conns: 1, inFlight: h.cfg.liveInFlight,
				beside: func() { syncs, syncErr = file.loop(d, h.cfg.flushFloor, 1024) }}
			_, _, sustained, err := h.runLive(sys, srv, run)
			if err = errors.Join(err, syncErr); err != nil {
				return err
			}
			waits := summarize(eventWaits(syncs, r, d))
			if waits == nil {
				return fmt.Errorf("%s: no fdatasync began within %s", run.label, d)
			}
			report(r, waits, sustained)
		}
		return nil
	})
}

// fanout: workload 5, one producer and many live consumers, once with the
// publisher unpaced (capacity) and once paced (latency at a load both keep
// up with).
func (h *harness) fanout() error {
	k, d := h.cfg.fanoutConsumers, h.cfg.fanoutDuration
	logf("5. fan-out to %d live consumers", k)
	type phase struct {
		run           liveRun
		agg, p50, p99 *row
	}
	phases := []*phase{{run: liveRun{label: "fan-out unpaced", events: h.cfg.fanoutEvents, duration: d, conns: k, inFlight: h.cfg.inFlight}}}
	if h.cfg.fanoutRate > 0 {
		phases = append(phases, &phase{run: liveRun{label: fmt.Sprintf("fan-out %s/s", fmtInt(h.cfg.fanoutRate)),
			events: int(h.cfg.fanoutRate * d.Seconds()), rate: h.cfg.fanoutRate, duration: d*3/2 + time.Second, conns: k,
			inFlight: h.cfg.liveInFlight}})
	}
	for i, p := range phases {
		name := fmt.Sprintf("5. Fan-out: 1 publisher, unpaced (%d in flight; %s events or %s), to %d live consumers, each its own connection, all in one client process (streamd raw Subscribe; JetStream ordered consumers)", h.cfg.inFlight, fmtInt(float64(p.run.events)), d, k)
		if i > 0 {
			name = fmt.Sprintf("5. Fan-out: 1 publisher at %s events/s for %s (up to %s in flight) to %d live consumers", fmtInt(p.run.rate), d, fmtInt(float64(h.cfg.liveInFlight)), k)
		}
		p.agg = h.report.row(name, "aggregate events/s delivered", unitRate)
		p.p50 = h.report.row(name, "p50", unitNanos)
		p.p99 = h.report.row(name, "p99", unitNanos)
	}
	var errs []error
	for _, sys := range h.systems(true) {
		err := withServer(sys, func(srv *server) error {
			for i, p := range phases {
				if i > 0 && h.beyondCapacity(sys, p.run.rate, "5. paced fan-out") {
					continue
				}
				sub, _, sustained, err := h.runLive(sys, srv, p.run)
				if err != nil {
					return err
				}
				p.agg.set(sys.col, sub.rate())
				if l := sub.Latency; l != nil {
					p.p50.set(sys.col, float64(l.P50))
					p.p99.set(sys.col, float64(l.P99))
					if i > 0 {
						p.p50.marks[sys.col], p.p99.marks[sys.col] = !sustained, !sustained
					}
				}
			}
			return nil
		})
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/streamd/streamd/internal/procstatus"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// memoryPublishers publish the memory workload's events together.
const memoryPublishers = 4

// residentSet is a server's memory, from /proc/<pid>/status.
type residentSet struct {
	rss, anon, file, hwm int64 // bytes
}

func readResidentSet(pid int) (residentSet, error) {
	s, err := procstatus.Read(pid)
	if err != nil {
		return residentSet{}, err
	}
	return residentSet{rss: s["VmRSS"], anon: s["RssAnon"], file: s["RssFile"], hwm: s["VmHWM"]}, nil
}

// memoryPoint is a server's memory once it stored events.
type memoryPoint struct {
	seconds float64
	events  int64
	residentSet
}

// stored counts the events a server holds: streamd's last offset, the
// JetStream stream's messages.
func stored(ctx context.Context, sys system, srv *server) (func() (int64, error), func(), error) {
	if sys.client == sysStreamd {
		cc, err := dialStreamd(srv.addr, &countingDialer{})
		if err != nil {
			return nil, nil, err
		}
		client := streamdv1.NewEventStreamServiceClient(cc)
		return func() (int64, error) {
			info, err := client.JournalInfo(ctx, &streamdv1.JournalInfoRequest{})
			return int64(info.GetLastOffset()), err
		}, func() { cc.Close() }, nil
	}
	nc, js, err := connectNATS(ctx, srv.addr, &countingDialer{})
	if err != nil {
		return nil, nil, err
	}
	return func() (int64, error) {
		s, err := js.Stream(ctx, natsStream)
		if err != nil {
			return 0, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, err
		}
		return int64(info.State.Msgs), nil
	}, nc.Close, nil
}

// memory: workload 6, each server's resident set while memoryPublishers
// publishers load it with -memory-events events, on its defaults.
func (h *harness) memory() error {
	n := h.cfg.memoryEvents
	logf("6. memory: %d events of %d B, %d publishers with %d in flight each", n, payloadSize, memoryPublishers, h.cfg.inFlight)
	rows := map[string]*row{
		"hwm":  h.report.row(fmt.Sprintf("6. Memory: peak resident set (VmHWM) of the server on its defaults, publishing %s events of %d B (%d publishers, %d in flight each)", fmtInt(float64(n)), payloadSize, memoryPublishers, h.cfg.inFlight), "MiB", unitMiB),
		"anon": h.report.row("6. Same run: anonymous resident memory (RssAnon) at the end", "MiB", unitMiB),
		"file": h.report.row("6. Same run: file-backed resident memory (RssFile: memory-mapped files) at the end", "MiB", unitMiB),
		"rate": h.report.row("6. Same run: events/s, all publishers together", "events/s", unitRate),
	}
	var errs []error
	for _, sys := range h.systems(false) {
		errs = append(errs, withServer(sys, func(srv *server) error {
			curve, rate, err := h.publishSampling(sys, srv, n)
			if len(curve) > 0 {
				last := curve[len(curve)-1]
				rows["hwm"].set(sys.col, float64(last.hwm>>20))
				rows["anon"].set(sys.col, float64(last.anon>>20))
				rows["file"].set(sys.col, float64(last.file>>20))
				rows["rate"].set(sys.col, rate)
				if h.cfg.memoryCSV != "" {
					err = errors.Join(err, appendMemoryCSV(h.cfg.memoryCSV, sys.label, curve))
				}
			}
			return err
		}))
	}
	return errors.Join(errs...)
}

// publishSampling runs the publishers against srv, reading its resident
// set and events stored every second, and once more after the last ack.
func (h *harness) publishSampling(sys system, srv *server, n int) ([]memoryPoint, float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	count, done, err := stored(ctx, sys, srv)
	if err != nil {
		return nil, 0, err
	}
	defer done()
	pid := srv.cmd.Process.Pid
	start := time.Now()
	var procs []*clientProc
	for k := range memoryPublishers {
		label := fmt.Sprintf("memory %s publisher %d", sys.label, k)
		spec := h.spec("publish", sys, srv, label)
		spec.Events, spec.Timeout = n/memoryPublishers, time.Hour
		p, err := startClient(h.self, h.workDir, label, spec)
		if err != nil {
			return nil, 0, err
		}
		procs = append(procs, p)
	}
	finished := make(chan error, 1)
	go func() {
		var errs []error
		for _, p := range procs {
			_, err := p.wait()
			errs = append(errs, err)
		}
		finished <- errors.Join(errs...)
	}()
	var curve []memoryPoint
	sample := func() error {
		events, err := count()
		if err != nil {
			return err
		}
		rs, err := readResidentSet(pid)
		if err != nil {
			return err
		}
		curve = append(curve, memoryPoint{time.Since(start).Seconds(), events, rs})
		return nil
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case err := <-finished:
			elapsed := time.Since(start).Seconds()
			err = errors.Join(err, sample())
			last := curve[len(curve)-1]
			logf("    %s: %d events, %.0f/s, VmHWM %d MiB (anon %d, file %d at the end)",
				sys.label, last.events, float64(last.events)/elapsed, last.hwm>>20, last.anon>>20, last.file>>20)
			return curve, float64(last.events) / elapsed, err
		case <-tick.C:
			if err := sample(); err != nil {
				return curve, 0, err
			}
		}
	}
}

// appendMemoryCSV appends a curve to path, with a header if it is new.
func appendMemoryCSV(path, label string, curve []memoryPoint) error {
	_, statErr := os.Stat(path)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	if errors.Is(statErr, os.ErrNotExist) {
		_ = w.Write([]string{"server", "seconds", "events", "vmrss_mib", "rss_anon_mib", "rss_file_mib", "vmhwm_mib"})
	}
	for _, p := range curve {
		_ = w.Write([]string{label, strconv.FormatFloat(p.seconds, 'f', 1, 64), strconv.FormatInt(p.events, 10),
			strconv.FormatInt(p.rss>>20, 10), strconv.FormatInt(p.anon>>20, 10), strconv.FormatInt(p.file>>20, 10), strconv.FormatInt(p.hwm>>20, 10)})
	}
	w.Flush()
	return errors.Join(w.Error(), f.Close())
}

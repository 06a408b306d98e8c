package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// row is one line of the comparison table: a metric measured on each system.
type row struct {
	workload, metric string
	unit             string           // unitRate, unitNanos, unitMB or unitMiB
	vals             [numCols]float64 // NaN: not measured
	marks            [numCols]bool    // the figure comes from a run that did not sustain its target rate
	ratioNote        string           // replaces the ratio columns when set
}

// Units of rows.
const (
	unitRate  = "events/s"
	unitNanos = "ns"
	unitMB    = "MB"
	unitMiB   = "MiB"
)

func (r *row) set(col int, v float64) { r.vals[col] = v }

// measurement is one client run, for the detail table.
type measurement struct {
	label     string
	res       clientResult
	wall      time.Duration
	serverCPU time.Duration // -1: no server, or counted on another line
}

type report struct {
	machine      []string
	rows         []*row
	measurements []measurement
	failures     []string
	notes        []string
	command      string
	elapsed      time.Duration
}

func newReport() *report { return &report{} }

// row adds a row to the table, in the order rows are created.
func (rep *report) row(workload, metric, unit string) *row {
	r := &row{workload: workload, metric: metric, unit: unit}
	for i := range r.vals {
		r.vals[i] = math.NaN()
	}
	rep.rows = append(rep.rows, r)
	return r
}

func (rep *report) print(w io.Writer) {
	fmt.Fprintf(w, "## streamd vs NATS JetStream\n\n")
	fmt.Fprintf(w, "Command: `%s` (took %s)\n\n", strings.TrimSpace(rep.command), rep.elapsed.Round(time.Second))
	for _, m := range rep.machine {
		fmt.Fprintf(w, "- %s\n", m)
	}
	fmt.Fprintf(w, "\nRatio = streamd ÷ JetStream: above 1 is better for streamd on rates, worse on latencies and sizes. ")
	fmt.Fprintf(w, "`JetStream` runs nats-server's default (fsync every 2 minutes in the background); `sync=always` sets `sync_interval: always`. ")
	fmt.Fprintf(w, "streamd runs its default: fsync before ack, and events reach consumers only once durable. 128-byte payloads.\n\n")
	fmt.Fprintln(w, "| workload | metric | streamd | JetStream | streamd ÷ JS | JetStream sync=always | streamd ÷ JS always |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|")
	marked := false
	for i, r := range rep.rows {
		ratio1, ratio2 := ratio(r.vals[colStreamd], r.vals[colJS]), ratio(r.vals[colStreamd], r.vals[colJSAlways])
		if r.ratioNote != "" {
			ratio1, ratio2 = r.ratioNote, "—"
		}
		workload := r.workload
		if i > 0 && rep.rows[i-1].workload == workload {
			workload = "〃"
		}
		for _, m := range r.marks {
			marked = marked || m
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", workload, r.metric,
			format(r, colStreamd), format(r, colJS), ratio1, format(r, colJSAlways), ratio2)
	}
	if marked {
		fmt.Fprintln(w, "\n\\* The run did not sustain its target rate: the publisher reached less than 95% of it (it stops sending after 1.5× the duration), or the consumers received less than 95% of it. Its latencies include a backlog that grew for the whole run.")
	}
	if len(rep.notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range rep.notes {
			fmt.Fprintf(w, "- %s\n", n)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Every client run (client CPU: the client process; server CPU: the server process over the same interval, from /proc):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| run | events | seconds | events/s | client CPU s | server CPU s | server CPU µs/event |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|")
	for _, m := range rep.measurements {
		srv, per := "—", "—"
		if m.serverCPU >= 0 {
			srv = fmt.Sprintf("%.2f", m.serverCPU.Seconds())
			if m.res.Events > 0 {
				per = fmt.Sprintf("%.1f", float64(m.serverCPU.Microseconds())/float64(m.res.Events))
			}
		}
		label := m.label
		if m.res.Error != "" {
			label += " (error: " + firstLine(m.res.Error) + ")"
		}
		fmt.Fprintf(w, "| %s | %d | %.2f | %s | %.2f | %s | %s |\n", label, m.res.Events, m.res.Seconds,
			fmtInt(m.res.rate()), m.res.CPU.Seconds(), srv, per)
	}
	if len(rep.failures) > 0 {
		fmt.Fprintln(w, "\nFailures:")
		for _, f := range rep.failures {
			fmt.Fprintf(w, "- %s\n", f)
		}
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func ratio(a, b float64) string {
	if math.IsNaN(a) || math.IsNaN(b) || b == 0 {
		return "—"
	}
	if q := a / b; q < 0.1 {
		return strconv.FormatFloat(q, 'g', 2, 64)
	}
	return fmt.Sprintf("%.2f", a/b)
}

// format prints a row's value for one column in the row's unit (latencies,
// measured in ns, in ms).
func format(r *row, col int) string {
	v := r.vals[col]
	if math.IsNaN(v) {
		return "—"
	}
	var s string
	switch r.unit {
	case unitNanos:
		s = sig3(v/1e6) + " ms"
	case unitMB, unitMiB:
		s = sig3(v)
	default:
		s = fmtInt(v)
	}
	if r.marks[col] {
		s += " \\*"
	}
	return s
}

// sig3 prints v with three significant digits.
func sig3(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}

// fmtInt prints v rounded, with thousands separators.
func fmtInt(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// describeMachine lists what the figures were measured on, measured or read
// now.
func describeMachine(modRoot, workDir string, t tools) []string {
	var lines []string
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
				mem = fmt.Sprintf(", %.0f GiB memory", kb/(1<<20))
			}
		}
	}
	lines = append(lines, fmt.Sprintf("Machine: %d cores (%s)%s, %s/%s", runtime.NumCPU(), model, mem, runtime.GOOS, runtime.GOARCH))
	lines = append(lines, "Disk: "+describeDisk(workDir))
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			lines = append(lines, fmt.Sprintf("Load average before the run (1/5/15 min): %s %s %s (other work on the machine competes for the same cores)", f[0], f[1], f[2]))
		}
	}
	rev := "unknown revision"
	if out, err := exec.Command("git", "-C", modRoot, "rev-parse", "--short", "HEAD").Output(); err == nil {
		rev = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "-C", modRoot, "status", "--porcelain").Output(); err == nil {
			n := 0
			for _, l := range strings.Split(string(st), "\n") {
				if p := strings.TrimPrefix(l, l[:min(3, len(l))]); p != "" && !strings.HasPrefix(p, "bench/") &&
					p != "BENCHMARKS.md" && p != "go.mod" && p != "go.sum" {
					n++
				}
			}
			if n > 0 {
				rev += fmt.Sprintf(" plus %d uncommitted changes in the working tree (modified or new files other than the harness and go.mod/go.sum)", n)
			}
		}
	}
	natsVer := "?"
	if out, err := exec.Command(t.natsServer, "--version").Output(); err == nil {
		natsVer = strings.TrimSpace(string(out))
	}
	client := "nats.go ?"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/nats-io/nats.go" {
				client = "nats.go " + d.Version
			}
		}
	}
	lines = append(lines, fmt.Sprintf("Software: streamd %s (built with %s); %s; client %s; servers and every client are separate processes on 127.0.0.1", rev, runtime.Version(), natsVer, client))
	return lines
}

// describeDisk names the filesystem under dir and measures what one small
// write plus fsync costs there now.
func describeDisk(dir string) string {
	dev, fstype, mnt := "?", "?", ""
	if b, err := os.ReadFile("/proc/mounts"); err == nil {
		abs, _ := filepath.Abs(dir)
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && (abs == f[1] || strings.HasPrefix(abs, strings.TrimSuffix(f[1], "/")+"/")) && len(f[1]) > len(mnt) {
				dev, mnt, fstype = f[0], f[1], f[2]
			}
		}
	}
	s := fmt.Sprintf("%s (%s on %s)", dir, fstype, dev)
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) == nil {
		s += fmt.Sprintf(", %.0f GB free", float64(st.Bavail)*float64(st.Bsize)/1e9)
	}
	if lat, err := fsyncProbe(dir, 200); err == nil {
		s += fmt.Sprintf("; 4 KiB write + fsync, 200 times: p50 %s ms, p99 %s ms", sig3(float64(lat.P50)/1e6), sig3(float64(lat.P99)/1e6))
	}
	return s
}

// fsyncProbe appends 4 KiB and fsyncs, n times, and summarizes the latency.
func fsyncProbe(dir string, n int) (*Latency, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 4096)
	lat := make([]int64, 0, n)
	for range n {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
		lat = append(lat, int64(time.Since(t0)))
	}
	return summarize(lat), nil
}

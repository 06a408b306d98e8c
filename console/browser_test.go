package console_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/streamd/streamd/internal/streamdtest"
	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

var updateScreenshot = flag.Bool("update-screenshot", false, "write the overview screenshot to docs/console.png")

// requireEnv makes a missing Chromium a failure instead of a skip (CI sets it).
const requireEnv = "STREAMD_REQUIRE_CHROMIUM"

// chromium returns the path of a Chromium or Chrome, or skips the test.
func chromium(t *testing.T) string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no chromium in PATH: the browser test needs it (Debian: apt-get install chromium; CI installs it)"
	if os.Getenv(requireEnv) != "" {
		t.Fatal(msg + "; " + requireEnv + " is set")
	}
	t.Skip(msg)
	return ""
}

// binaries are streamd and streamctl, built by one go build (sharing its
// work) the first time a browser test needs them; streamdtest runs this
// streamd through its BinaryEnv.
var binaries struct {
	once sync.Once
	dir  string // removed by TestMain
	err  error
}

func buildBinaries(t *testing.T) {
	t.Helper()
	binaries.once.Do(func() {
		if binaries.dir, binaries.err = os.MkdirTemp("", "console-test-bin"); binaries.err != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binaries.dir+"/",
			"github.com/streamd/streamd/cmd/streamd", "github.com/streamd/streamd/cmd/streamctl").CombinedOutput()
		if err != nil {
			binaries.err = fmt.Errorf("build streamd and streamctl: %w\n%s", err, out)
			return
		}
		binaries.err = os.Setenv(streamdtest.BinaryEnv, filepath.Join(binaries.dir, "streamd"))
	})
	if binaries.err != nil {
		t.Fatal(binaries.err)
	}
}

// streamctl runs the streamctl command and returns its standard output.
func streamctl(t *testing.T, args ...string) string {
	t.Helper()
	buildBinaries(t)
	var stderr bytes.Buffer
	cmd := exec.Command(filepath.Join(binaries.dir, "streamctl"), args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("streamctl %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

// region is a streamd process and a client of it.
type region struct {
	*streamdtest.Daemon
	conn   *grpc.ClientConn // for the clients of its other services
	events streamdv1.EventStreamServiceClient
	admin  streamdv1.AdminServiceClient
}

func startRegion(t *testing.T, args ...string) *region {
	t.Helper()
	buildBinaries(t)
	d := streamdtest.Start(t, streamdtest.Options{DataDir: t.TempDir(), Args: args, Metrics: true})
	conn, err := grpc.NewClient(d.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &region{Daemon: d, conn: conn, events: streamdv1.NewEventStreamServiceClient(conn), admin: streamdv1.NewAdminServiceClient(conn)}
}

// startProject runs a streamd for each region of names, all from one
// config file: the regions, each with the address it listens on, then
// rest (its entity types and the like).
func startProject(t *testing.T, rest string, names ...string) []*region {
	t.Helper()
	addrs := make([]string, len(names))
	cfg := "regions:\n"
	for i, n := range names {
		addrs[i] = closedPort(t)
		cfg += fmt.Sprintf("  - {name: %s, addrs: [%q]}\n", n, addrs[i])
	}
	path := writeFile(t, "project.yaml", cfg+rest)
	regions := make([]*region, len(names))
	for i, n := range names {
		regions[i] = startRegion(t, "--region", n, "--config", path, "--listen", addrs[i])
	}
	return regions
}

// closedPort is a local address nothing listens on now, for a region whose
// address the config names before it starts.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// writeFile writes body to a file name of its own temporary directory and
// returns its path.
func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (r *region) publish(t *testing.T, entity string, tags ...string) uint64 {
	t.Helper()
	resp, err := r.events.Publish(context.Background(), &streamdv1.PublishRequest{Events: []*streamdv1.Event{
		{EntityType: "car", EntityId: entity, EventType: "Moved", Tags: tags, Payload: []byte("lap of " + entity)}}})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetAppended()[0].GetOffset()
}

func (r *region) info(t *testing.T) *streamdv1.JournalInfoResponse {
	t.Helper()
	info, err := r.events.JournalInfo(context.Background(), &streamdv1.JournalInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func (r *region) consumer(t *testing.T, name string) *streamdv1.ConsumerStatus {
	t.Helper()
	resp, err := r.admin.ListConsumers(context.Background(), &streamdv1.ListConsumersRequest{Consumer: name})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetConsumers()[0]
}

// page drives one browser tab on the console.
type page struct {
	t   *testing.T
	ctx context.Context
	dir string // screenshots
}

func (p *page) run(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("browser: %v", err)
	}
}

// get runs an action that returns a value.
func get[T any](p *page, a chromedp.Action[T]) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	for {
		v, err := chromedp.Run(ctx, a)
		if err == nil {
			return v
		}
		// A reload under way (a login reloads the page): evaluate again
		// in the new document.
		if !strings.Contains(err.Error(), "navigated or closed") {
			p.t.Fatalf("browser: %v", err)
		}
		select {
		case <-ctx.Done():
			p.t.Fatalf("browser: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// js evaluates an expression in the page.
func (p *page) js(expr string) string {
	p.t.Helper()
	return get(p, chromedp.Evaluate[string](`String((() => { try { return `+expr+` } catch (e) { return "" } })())`))
}

// text is the text of the first element sel matches ("" if none).
func (p *page) text(sel string) string {
	return p.js(fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel))
}

// number is the text of sel read as a number shown with separators.
func (p *page) number(sel string) string { return strings.ReplaceAll(p.text(sel), ",", "") }

// waitFor waits until cond holds of what the page shows.
func (p *page) waitFor(what string, cond func() bool) {
	p.t.Helper()
	testwait.For(p.t, 20*time.Second, what, cond)
}

func (p *page) click(sel string) {
	p.t.Helper()
	p.run(chromedp.Click(chromedp.CSS(sel)))
}

// set sets a form field's value and fires its change event, as typing does.
func (p *page) set(sel, value string) {
	p.t.Helper()
	p.js(fmt.Sprintf(`(() => { const e = document.querySelector(%q); e.value = %q; e.dispatchEvent(new Event('change')); return 1 })()`, sel, value))
}

func (p *page) screenshot(name string) []byte {
	p.t.Helper()
	png := get(p, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(p.dir, name), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	return png
}

// newPage starts a headless Chromium with one tab, closed when the test ends.
func newPage(t *testing.T, exe string) *page {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.WindowSize(1280, 900))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(cancel)
	// The first Do starts the browser, bound to ctx (not to a timeout's).
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	return &page{t: t, ctx: ctx, dir: t.ArtifactDir()}
}

// The console of a region that replicates another, in a real headless
// Chromium: each page's figures match the API's, the overview and the
// tail follow events as they are published, a filter added and an offset
// moved through the pages are what streamctl then lists.
func TestConsoleInBrowser(t *testing.T) {
	exe := chromium(t)
	us := startRegion(t, "--region", "us")
	eu := startRegion(t, "--region", "eu", "--config", writeFile(t, "eu.yaml", fmt.Sprintf("replicate:\n  - from: us\n    addrs: [%q]\n", us.Addr)))
	const link = "replicate-us-all"
	us.publish(t, "car-1", "sports")
	us.publish(t, "car-2", "family")
	us.publish(t, "car-3", "sports")
	testwait.For(t, 20*time.Second, "eu copies us's 3 events", func() bool {
		c := eu.consumer(t, link)
		return eu.info(t).GetEvents() == 3 && len(c.Producers) == 1 && c.Producers[0].Offset == 3 && c.Producers[0].Lag == 0
	})

	p := newPage(t, exe)
	base := "http://" + eu.MetricsAddr + "/console/"

	t.Run("overview", func(t *testing.T) {
		p.t = t
		p.run(chromedp.Navigate(base + "#overview"))
		info := eu.info(t)
		p.waitFor("the overview shows eu's journal", func() bool { return p.number("#ov-events") == "3" })
		for sel, want := range map[string]string{
			"#ov-journal-id": hex.EncodeToString(info.GetJournalId()),
			"#ov-events":     strconv.FormatUint(info.GetEvents(), 10),
			"#ov-first":      strconv.FormatUint(info.GetFirstOffset(), 10),
			"#ov-last":       strconv.FormatUint(info.GetLastOffset(), 10),
			"#ov-health":     "SERVING",
		} {
			if got := p.number(sel); got != want {
				t.Errorf("%s shows %q, the API says %q", sel, got, want)
			}
		}
		if got, want := p.js(`document.querySelector('#ov-bytes').dataset.value`), strconv.FormatUint(info.GetBytes(), 10); got != want {
			t.Errorf("event bytes show %s, the API says %s", got, want)
		}
		// The disk figures are the metrics': the same measures, sampled a
		// moment apart. Free space moves with whatever else writes to the
		// disk: within 1% of the file system's size; the journal's bytes on
		// disk within 10% of themselves (its sparse value log, counted by
		// its length, would be far more).
		size := metric(t, eu.MetricsAddr, "streamd_disk_size_bytes")
		p.waitFor("free disk as the metrics say", func() bool {
			shown, _ := strconv.ParseFloat(p.js(`document.querySelector('#ov-free').dataset.value`), 64)
			return math.Abs(shown-metric(t, eu.MetricsAddr, "streamd_disk_free_bytes")) <= size/100
		})
		p.waitFor("the bytes on disk as the metrics say", func() bool {
			shown, _ := strconv.ParseFloat(p.js(`document.querySelector('#ov-disk').dataset.value`), 64)
			return shown > 0 && math.Abs(shown-metric(t, eu.MetricsAddr, "streamd_journal_disk_bytes")) <= shown/10
		})
		// Live: events published after the page loaded show without a reload.
		eu.publish(t, "car-4", "sports")
		eu.publish(t, "car-5")
		p.waitFor("the overview counts the 2 new events", func() bool { return p.number("#ov-events") == "5" })
		if got, want := p.number("#ov-last"), strconv.FormatUint(eu.info(t).GetLastOffset(), 10); got != want {
			t.Errorf("#ov-last shows %q after publishing, the API says %q", got, want)
		}
		p.waitFor("the rate chart shows the publishes", func() bool {
			return p.js(`document.querySelectorAll('#chart-rate polyline').length`) == "1" && p.text("#chart-rate text") != "max 0.00"
		})
		// The rates over the samples add up to the events appended since
		// the console started, before the first: every one the metrics count.
		p.waitFor("the rate chart's events are the metrics' appends", func() bool {
			return p.js(`Math.round(snap.rate.reduce((s, r, i) => i ? s + r * (snap.times[i] - snap.times[i-1]) / 1000 : 0, 0))`) ==
				strconv.FormatFloat(metric(t, eu.MetricsAddr, "streamd_journal_events_appended_total"), 'f', -1, 64)
		})
		// So do the fsync chart's group commits, and their mean fsync is
		// the histogram's.
		p.waitFor("the fsync chart's commits and mean are the metrics'", func() bool {
			count, sum := metric(t, eu.MetricsAddr, "streamd_journal_fsync_seconds_count"), metric(t, eu.MetricsAddr, "streamd_journal_fsync_seconds_sum")
			n, _ := strconv.ParseFloat(p.js(`snap.commits.reduce((s, n) => s + n, 0)`), 64)
			ms, _ := strconv.ParseFloat(p.js(`snap.fsync_ms.reduce((s, f, i) => s + f * snap.commits[i], 0) / snap.commits.reduce((s, n) => s + n, 0)`), 64)
			return count > 0 && n == count && math.Abs(ms-sum/count*1000) <= 1e-6*ms
		})
		if *updateScreenshot {
			// Publishes paced over some seconds, for charts worth a look.
			for i := range 60 {
				eu.publish(t, fmt.Sprintf("car-%d", 100+i))
				time.Sleep(time.Duration(50+i%20*10) * time.Millisecond)
			}
			want := strconv.FormatUint(eu.info(t).GetEvents(), 10)
			p.waitFor("the overview shows the paced publishes", func() bool { return p.number("#ov-events") == want })
		}
		png := p.screenshot("overview.png")
		if *updateScreenshot {
			if err := os.WriteFile(filepath.Join("..", "docs", "console.png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	})

	row := fmt.Sprintf(`#consumers tr[data-consumer=%q]`, link)
	t.Run("consumers", func(t *testing.T) {
		p.t = t
		p.click(`nav a[data-page="consumers"]`)
		c := eu.consumer(t, link)
		p.waitFor("the consumers page lists the replication", func() bool { return p.text(row+" .c-connected") == "yes" })
		if got, want := p.number(row+" .c-offset"), strconv.FormatUint(c.Producers[0].Offset, 10); got != want {
			t.Errorf("offset shows %q, the API says %q", got, want)
		}
		if got, want := p.number(row+" .c-lag"), strconv.FormatUint(c.Producers[0].Lag, 10); got != want {
			t.Errorf("lag shows %q, the API says %q", got, want)
		}
		if got := p.text(row + " .c-producer"); got != us.Addr {
			t.Errorf("producer shows %q, want %q", got, us.Addr)
		}
		if got, want := p.text(row+" .c-running"), map[bool]string{true: "yes", false: "no"}[c.Running]; got != want {
			t.Errorf("running shows %q, the API says %v", got, c.Running)
		}
		if got, want := p.text(row+" .c-stream"), cmp.Or(c.Stream, "all"); got != want {
			t.Errorf("stream shows %q, the API says %q", got, c.Stream)
		}
		if got := p.text(row + " .c-behind"); got != "caught up" {
			t.Errorf("behind for shows %q, the API says lag %d", got, c.Producers[0].Lag)
		}

		// A filter criterion added through the page: previewed, then executed.
		p.click(row + " .c-name")
		p.set("#filter-text", "exclude tag=internal ttl=30m")
		p.click("#filter-preview")
		p.waitFor("the filter preview", func() bool { return strings.Contains(p.text("#filter-out"), "exclude tag=internal until=") })
		if out := streamctl(t, "--addr", eu.Addr, "filters", "list", "--consumer", link); strings.Contains(out, "tag=internal") {
			t.Fatalf("the preview changed the filter:\n%s", out)
		}
		p.click("#filter-execute")
		p.waitFor("the filter change is done", func() bool { return p.text("#filter-done") != "" })
		if out := streamctl(t, "--addr", eu.Addr, "filters", "list", "--consumer", link); !strings.Contains(out, "exclude tag=internal until=") {
			t.Fatalf("streamctl filters list does not show the criterion added in the console:\n%s", out)
		}
		p.waitFor("the filter shows with its expiry", func() bool {
			return strings.Contains(p.text(row+" .c-filter"), "exclude tag=internal") && strings.HasPrefix(p.text(row+" .countdown"), "expires in 29m")
		})
		p.screenshot("consumers.png")
	})

	t.Run("tail", func(t *testing.T) {
		p.t = t
		p.click(`nav a[data-page="tail"]`)
		p.set("#tail-filter", "include bogus=1")
		p.click("#tail-start")
		p.waitFor("the filter error inline", func() bool { return strings.HasPrefix(p.text("#tail-error"), "line 1: ") })
		p.set("#tail-filter", "include tag=sports")
		p.set("#tail-from", "earliest")
		p.click("#tail-start")
		offsets := func() string {
			return p.js(`[...document.querySelectorAll('#tail-rows tr')].map(r => r.dataset.offset).join(' ')`)
		}
		p.waitFor("the sports events since the earliest", func() bool { return offsets() == "1 3 4" })
		live := eu.publish(t, "car-6", "sports")
		p.waitFor("an event published now appears", func() bool { return offsets() == "1 3 4 "+strconv.FormatUint(live, 10) })
		p.click("#tail-pause")
		paused := eu.publish(t, "car-7", "sports")
		p.waitFor("the paused tail buffers it", func() bool { return strings.HasPrefix(p.text("#tail-status"), "paused, 1 buffered") })
		if strings.Contains(offsets(), strconv.FormatUint(paused, 10)) {
			t.Fatalf("an event was shown while paused: %s", offsets())
		}
		p.click("#tail-pause")
		p.waitFor("resuming shows it", func() bool { return strings.HasSuffix(offsets(), " "+strconv.FormatUint(paused, 10)) })
		p.click(fmt.Sprintf(`#tail-rows tr[data-offset="%d"]`, live))
		var ev map[string]any
		p.waitFor("the event's JSON", func() bool { return json.Unmarshal([]byte(p.text("#tail-json")), &ev) == nil })
		if ev["entity_id"] != "car-6" || ev["payload"] != "lap of car-6" {
			t.Errorf("JSON view shows %v, want car-6's event", ev)
		}
		p.screenshot("tail.png")
		p.click("#tail-start") // stop
	})

	linkRow := fmt.Sprintf(`#links tr[data-link=%q]`, link)
	t.Run("regions", func(t *testing.T) {
		p.t = t
		p.click(`nav a[data-page="regions"]`)
		c := eu.consumer(t, link)
		p.waitFor("the link to us is up", func() bool {
			return p.text(linkRow+" .l-connected") == "yes" && p.js(fmt.Sprintf(`document.querySelector('#regions-map line[data-link=%q]').getAttribute('class')`, link)) == "up"
		})
		if got, want := p.number(linkRow+" .l-offset"), strconv.FormatUint(c.Producers[0].Offset, 10); got != want {
			t.Errorf("link offset shows %q, the API says %q", got, want)
		}
		// The offsets/s over the samples add up to the offset the link
		// moved to since the console started (from none).
		if got, want := p.js(fmt.Sprintf(`Math.round(snap.offsets_per_second[%q].reduce((s, r, i) => i ? s + r * (snap.times[i] - snap.times[i-1]) / 1000 : 0, 0))`, link)),
			strconv.FormatUint(c.Producers[0].Offset, 10); got != want {
			t.Errorf("the link's offsets/s add up to %s, the API says offset %s", got, want)
		}
		if got, want := p.number(linkRow+" .l-lag"), strconv.FormatUint(c.Producers[0].Lag, 10); got != want {
			t.Errorf("link lag shows %q, the API says %q", got, want)
		}
		if got := p.text(linkRow + " .l-running"); got != "yes" || !c.Running {
			t.Errorf("link running shows %q, the API says %v", got, c.Running)
		}
		if got := p.text(linkRow + " td:nth-child(4)"); got != us.Addr {
			t.Errorf("link addrs show %q, want %q", got, us.Addr)
		}
		if got := p.text("#rg-name"); got != "eu" {
			t.Errorf("region shows %q, want eu", got)
		}
		p.screenshot("regions.png")
	})

	// us's console lists eu's replication among the consumers reading from it.
	t.Run("readers", func(t *testing.T) {
		p.t = t
		p.run(chromedp.Navigate("http://" + us.MetricsAddr + "/console/#consumers"))
		reader := fmt.Sprintf(`#readers tr[data-reader="all/%s"]`, link)
		p.waitFor("us lists the replication reading from it", func() bool { return p.number(reader+" .r-lag") == "0" })
		resp, err := us.admin.ListConsumers(context.Background(), &streamdv1.ListConsumersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetReaders() {
			if r.GetConsumer() != link {
				continue
			}
			p.waitFor("the reader's stored offset as the API lists it", func() bool {
				return p.number(reader+" .r-offset") == strconv.FormatUint(r.GetStoredOffset(), 10)
			})
			if got := p.text(reader + " td:nth-child(4)"); got != map[bool]string{true: "yes", false: "no"}[r.GetConnected()] {
				t.Errorf("connected shows %q, the API says %v", got, r.GetConnected())
			}
			if got := p.text(reader + " .r-lag-time"); r.GetLagNanos() != 0 || got != "0s" {
				t.Errorf("lag in time shows %q, the API says %dns", got, r.GetLagNanos())
			}
		}
		p.screenshot("readers.png")
		p.run(chromedp.Navigate(base + "#regions"))
		p.waitFor("eu's console again", func() bool { return p.text(linkRow+" .l-connected") == "yes" })
	})

	// With us stopped the replication cannot catch up again, so the moved
	// offset stays where the console put it for streamctl to see.
	t.Run("move offset", func(t *testing.T) {
		p.t = t
		if err := us.Stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
			t.Fatalf("stop us: %v", err)
		}
		p.waitFor("the link shows down", func() bool { return p.text(linkRow+" .l-connected") == "no" })
		p.screenshot("regions-down.png")
		p.click(`nav a[data-page="consumers"]`)
		p.click(row + " .c-name")
		p.set("#move-to", "offset")
		p.set("#move-at", "1")
		p.click("#move-preview")
		p.waitFor("the move preview", func() bool { return p.text("#move-out .ch-to") != "" })
		if from, to := p.text("#move-out .ch-from"), p.text("#move-out .ch-to"); from != "offset 3" || to != "offset 1" {
			t.Fatalf("preview shows from %q to %q, want from \"offset 3\" to \"offset 1\"", from, to)
		}
		stored := func() uint64 {
			var e struct{ Offset uint64 }
			json.Unmarshal([]byte(streamctl(t, "-o", "json", "--addr", eu.Addr, "offsets", "list", "--consumer", link)), &e)
			return e.Offset
		}
		if got := stored(); got != 3 {
			t.Fatalf("after the preview streamctl lists offset %d, want 3 (unchanged)", got)
		}
		p.click("#move-execute")
		p.waitFor("the move is done", func() bool { return p.text("#move-done") != "" })
		if got := stored(); got != 1 {
			t.Fatalf("streamctl lists offset %d after the console moved it to 1", got)
		}
		p.screenshot("consumers-moved.png")
	})
}

// Behind --auth-token-file the console asks for a token: a wrong one is
// refused on the form, one granted a stream shows the views without the
// actions, one granted "*" shows the actions too.
func TestConsoleLoginInBrowser(t *testing.T) {
	exe := chromium(t)
	d := startRegion(t, "--region", "eu", "--auth-token-file", writeFile(t, "tokens", "admin-tok *\nreader-tok all\n"))
	p := newPage(t, exe)
	p.run(chromedp.Navigate("http://" + d.MetricsAddr + "/console/#consumers"))
	loginForm := func() bool {
		return p.js(`document.querySelector('#login').hidden`) == "false" && p.js(`document.querySelector('#pages').hidden`) == "true"
	}
	login := func(token string) {
		t.Helper()
		p.waitFor("the login form, and no pages", loginForm)
		p.set("#login-token", token)
		p.click("#login-submit")
	}
	login("wrong-tok")
	p.waitFor("the refusal", func() bool { return strings.Contains(p.text("#login-error"), "unknown token") })

	login("reader-tok") // the page reloads
	p.waitFor("the pages after login", func() bool { return p.text("#ov-health") == "SERVING" })
	p.js(`(select('replicate-x'), 1)`)
	if p.js(`document.querySelector('#act-denied').hidden`) != "false" || p.js(`document.querySelector('#actions .act').hidden`) != "true" {
		t.Fatal("a token granted a stream is offered the actions")
	}
	p.screenshot("login-reader.png")
	p.click("#logout") // the page reloads
	login("admin-tok")
	p.waitFor("the pages after login", func() bool { return p.text("#ov-health") == "SERVING" })
	p.js(`(select('replicate-x'), 1)`)
	if p.js(`document.querySelector('#act-denied').hidden`) != "true" || p.js(`document.querySelector('#actions .act').hidden`) != "false" {
		t.Fatal(`a token granted "*" is not offered the actions`)
	}
}

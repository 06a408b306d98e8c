package console_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// failoverTypes are the entity types of the project of the three regions,
// us, eu and ap: order is pinned to us.
const failoverTypes = `default_mode: local
entity_types:
  - {name: order, mode: pinned, primary: us}
`

// failoverReport is the report of streamctl primary failover (text): its
// table's rows (REGION REACHABLE APPLIED KNOWN) and the notes after it.
func failoverReport(t *testing.T, out string) (rows [][]string, notes []string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || strings.Join(strings.Fields(lines[0]), " ") != "REGION REACHABLE APPLIED KNOWN" {
		t.Fatalf("streamctl primary failover printed %q, want its table first", out)
	}
	for _, l := range lines[1:] {
		if f := strings.Fields(l); len(notes) == 0 && len(f) == 4 && !strings.Contains(l, ":") {
			rows = append(rows, f)
		} else {
			notes = append(notes, l)
		}
	}
	return rows, notes
}

// The failover form on the regions page: with us, the primary of order,
// killed, eu's console runs the dry run (its report is streamctl's for the
// same regions, and nothing changes), then executes it: order's primary
// is eu in every region, and a write of an order in ap is forwarded to eu.
func TestConsoleFailoverInBrowser(t *testing.T) {
	exe := chromium(t)
	regions := startProject(t, failoverTypes, "us", "eu", "ap")
	us, eu, ap := regions[0], regions[1], regions[2]
	euPrimary, apPrimary := streamdv1.NewPrimaryServiceClient(eu.conn), streamdv1.NewPrimaryServiceClient(ap.conn)
	ctx := context.Background()
	for i := range 3 {
		if _, err := us.events.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{
			{EntityType: "order", EntityId: fmt.Sprintf("o%d", i), EventType: "Placed", Payload: []byte("{}")}}}); err != nil {
			t.Fatal(err)
		}
	}
	last := us.info(t).GetLastOffset()
	testwait.For(t, 20*time.Second, "eu and ap have applied us's journal", func() bool {
		plan, err := euPrimary.Failover(ctx, &streamdv1.FailoverRequest{From: "us", To: "eu"})
		if err != nil || len(plan.GetProgress()) != 2 {
			return false
		}
		for _, p := range plan.GetProgress() {
			if p.GetAppliedOffset() < last {
				return false
			}
		}
		return true
	})
	us.Kill()

	p := newPage(t, exe)
	p.run(chromedp.Navigate("http://" + eu.MetricsAddr + "/console/#regions"))
	p.waitFor("the failover form", func() bool {
		return p.js(`!document.querySelector('#rg-failover').hidden && document.querySelector('#fo-from').options.length > 0`) == "true"
	})
	if p.js(`document.querySelector('#fo-execute').hidden`) != "true" {
		t.Fatal("Execute is shown before a dry run")
	}
	// Only the region taking over runs a failover: the API's error says so.
	p.set("#fo-from", "us")
	p.set("#fo-to", "ap")
	p.click("#fo-dry-run")
	p.waitFor("the refusal of a failover to ap", func() bool { return strings.Contains(p.text("#fo-error"), `a failover to "ap" runs in region "ap"`) })
	if p.js(`document.querySelector('#fo-execute').hidden`) != "true" {
		t.Fatal("Execute is shown after a refused dry run")
	}
	p.set("#fo-to", "eu")
	p.click("#fo-dry-run")
	p.waitFor("the dry run's report", func() bool { return p.js(`document.querySelectorAll('#fo-out .fo-progress tbody tr').length`) == "2" })

	rows, notes := failoverReport(t, streamctl(t, "--addr", eu.Addr, "primary", "failover", "--from", "us", "--to", "eu"))
	if len(rows) != 2 || len(notes) < 4 {
		t.Fatalf("streamctl's dry run: rows %q, notes %q; want eu's and ap's progress and the notes", rows, notes)
	}
	for _, r := range rows {
		row := fmt.Sprintf(`#fo-out tr[data-region=%q]`, r[0])
		got := []string{r[0], p.text(row + " .fo-reachable"),
			p.js(`document.querySelector('` + row + ` .fo-applied').dataset.value`), p.js(`document.querySelector('` + row + ` .fo-known').dataset.value`)}
		if strings.Join(got, " ") != strings.Join(r, " ") {
			t.Errorf("the page's row of %s is %q, streamctl's %q", r[0], got, r)
		}
	}
	var shown []string
	for i := range notes {
		shown = append(shown, p.js(fmt.Sprintf(`(document.querySelectorAll('#fo-out .fo-notes li')[%d] || {}).textContent || ''`, i)))
	}
	// The last note says what was done: the page names its own button.
	if strings.Join(shown[:len(notes)-1], "\n") != strings.Join(notes[:len(notes)-1], "\n") || !strings.HasPrefix(shown[len(notes)-1], "dry run: nothing changed") {
		t.Errorf("the page's notes:\n%s\nstreamctl's:\n%s", strings.Join(shown, "\n"), strings.Join(notes, "\n"))
	}
	if !strings.HasPrefix(notes[0], "pinned types moving from us to eu: order") || !strings.HasPrefix(notes[2], "at risk: ") {
		t.Errorf("streamctl's notes %q: want order moving and what is at risk", notes)
	}
	p.screenshot("failover.png")
	if resp, err := euPrimary.GetPrimary(ctx, &streamdv1.GetPrimaryRequest{EntityType: "order"}); err != nil || resp.GetPrimary() != "us" {
		t.Fatalf("after the dry runs order's primary in eu is %v (%v), want us: a dry run changes nothing", resp.GetPrimary(), err)
	}

	p.click("#fo-execute")
	p.waitFor("the failover done", func() bool { return p.text("#fo-done") != "" })
	if got := p.text("#fo-done"); !strings.HasPrefix(got, "failed over from us to eu (record at offset ") {
		t.Fatalf("after Execute the page says %q", got)
	}
	if got := streamctl(t, "--addr", eu.Addr, "primary", "get", "--type", "order"); !strings.Contains(got, "\nprimary:      eu\n") {
		t.Fatalf("streamctl primary get in eu after the failover:\n%s", got)
	}
	p.waitFor("ap has the failover record", func() bool {
		resp, err := apPrimary.GetPrimary(ctx, &streamdv1.GetPrimaryRequest{EntityType: "order"})
		return err == nil && resp.GetPrimary() == "eu"
	})
	out := streamctl(t, "--addr", ap.Addr, "publish", "--type", "order", "--entity", "o1", "--event-type", "Paid", "--data", "{}")
	if lines := strings.Split(out, "\n"); len(lines) < 2 || strings.Fields(lines[1])[0] != "eu" {
		t.Fatalf("a write of an order in ap after the failover:\n%s\nwant it written in eu", out)
	}
	p.waitFor("the page shows the new primary", func() bool { return p.text(`#entity-types tr[data-type="order"] .t-primary`) == "eu" })
	p.screenshot("failover-done.png")
}

package console_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/streamd/streamd/filters"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// interestTypes are the entity types of the project of both regions, us
// and eu: a cart is replicated to a region while it has interest in it, an
// auction's summaries always and its bids on demand.
const interestTypes = `default_primary: us
entity_types:
  - {name: cart, mode: replicated, replication: on-demand, inactivity: 2m}
  - {name: auction, mode: pinned, primary: us, replication: on-demand, summary_types: [auction-summary]}
  - {name: auction-summary, mode: pinned, primary: us}
`

// The regions page of a region with on-demand entity types shows each with
// its summary types and inactivity; once a read in this region registers
// interest in an entity of another, the page lists the entry as
// InterestService.ListInterests and streamctl interest list give it, its
// expiry counting down, counts it for its type as the metrics do, and shows
// the on-demand link's include of it.
func TestConsoleInterestInBrowser(t *testing.T) {
	exe := chromium(t)
	regions := startProject(t, interestTypes, "us", "eu")
	us, eu := regions[0], regions[1]
	euInterest := streamdv1.NewInterestServiceClient(eu.conn)
	list := func() []*streamdv1.EntityInterest {
		resp, err := euInterest.ListInterests(context.Background(), &streamdv1.ListInterestsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetInterests()
	}

	p := newPage(t, exe)
	p.run(chromedp.Navigate("http://" + eu.MetricsAddr + "/console/#regions"))
	typeRow := func(name string) string { return fmt.Sprintf(`#on-demand-types tr[data-type=%q]`, name) }
	p.waitFor("the on-demand types", func() bool { return p.text(typeRow("cart")+" .o-name") == "cart" })
	for _, tc := range []struct {
		name, summaries, inactivity string
		ns                          time.Duration
	}{
		{"cart", "—", "2m 0s", 2 * time.Minute},
		{"auction", "auction-summary", "10m 0s", 10 * time.Minute}, // the default
	} {
		row := typeRow(tc.name)
		if got := p.text(row + " .o-summaries"); got != tc.summaries {
			t.Errorf("%s: summary types %q, want %q", tc.name, got, tc.summaries)
		}
		if got, v := p.text(row+" .o-inactivity"), p.js(`document.querySelector('`+row+` .o-inactivity').dataset.value`); got != tc.inactivity || v != strconv.FormatInt(int64(tc.ns), 10) {
			t.Errorf("%s: inactivity %q (%s ns), want %q", tc.name, got, v, tc.inactivity)
		}
	}
	if got := p.js(`document.querySelectorAll('#on-demand-types tbody tr').length`); got != "2" {
		t.Errorf("%s rows of on-demand types, want 2 (auction-summary is replicated always)", got)
	}
	if n := len(list()); n != 0 || p.js(`document.querySelectorAll('#interests tr[data-entity]').length`) != "0" {
		t.Fatalf("before any use: ListInterests lists %d entries, the page %s", n, p.js(`document.querySelectorAll('#interests tr[data-entity]').length`))
	}

	// The cart is written in us and read in eu: eu has interest in it.
	streamctl(t, "--addr", us.Addr, "publish", "--type", "cart", "--entity", "c1", "--add", "items=apple", "--add", "items=pear")
	if out := streamctl(t, "--addr", eu.Addr, "state", "--type", "cart", "--entity", "c1"); !regexp.MustCompile(`(?m)^set\s+items\s+apple pear$`).MatchString(out) {
		t.Fatalf("state of c1 in eu:\n%s\nwant its history from us", out)
	}
	api := list()
	if len(api) != 1 || api[0].GetEntityId() != "c1" || !slices.Equal(api[0].GetEntityTypes(), []string{"cart"}) || !slices.Equal(api[0].GetRegions(), []string{"us"}) {
		t.Fatalf("ListInterests after the read = %v, want c1 (cart) from us", api)
	}
	x := api[0]
	var cli []string // ENTITY TYPES REGIONS SINCE EXPIRES
	for line := range strings.Lines(streamctl(t, "--addr", eu.Addr, "interest", "list")) {
		if f := strings.Fields(line); len(f) == 5 && f[0] == "c1" {
			cli = f
		}
	}
	if cli == nil {
		t.Fatal("streamctl interest list in eu does not list c1")
	}

	entry := `#interests tr[data-entity="c1"]`
	value := func(sel string) string { return p.js(`document.querySelector('` + sel + `').dataset.value`) }
	p.waitFor("the page lists the entry", func() bool { return p.text(entry+" .i-entity") == "c1" })
	for _, c := range []struct{ what, got, want string }{
		{"types", p.text(entry + " .i-types"), cli[1]},
		{"regions", p.text(entry + " .i-regions"), cli[2]},
		{"since", p.text(entry + " .i-since"), cli[3]},
		{"expires", p.text(entry + " .i-expires"), cli[4]},
		{"since, ms", value(entry + " .i-since"), strconv.FormatInt(x.GetSinceUnixNano()/1e6, 10)},
		{"expires, ms", value(entry + " .i-expires"), strconv.FormatInt(x.GetExpiresAtUnixNano()/1e6, 10)},
	} {
		if c.got != c.want {
			t.Errorf("%s: the page shows %q, ListInterests and streamctl interest list say %q", c.what, c.got, c.want)
		}
	}
	// The expiry counts down, from at most the cart's inactivity.
	left := func() int {
		m := regexp.MustCompile(`^expires in (?:(\d+)m )?(\d+)s$`).FindStringSubmatch(p.text(entry + " .countdown"))
		if m == nil {
			t.Fatalf("countdown %q, want expires in [Mm ]Ss", p.text(entry+" .countdown"))
		}
		mins, _ := strconv.Atoi(m[1])
		secs, _ := strconv.Atoi(m[2])
		return mins*60 + secs
	}
	first := left()
	if first <= 0 || first > 120 {
		t.Errorf("countdown at %ds, want within the inactivity, 2m", first)
	}
	p.waitFor("the countdown moves", func() bool { return left() < first })

	// The on-demand link from us runs with an include of c1 that expires
	// with the interest: its row shows the filter it runs with now.
	const odLink = "on-demand-us"
	var include *streamdv1.FilterCriterion
	for _, c := range eu.consumer(t, odLink).GetFilter() {
		if c.GetField() == streamdv1.FilterField_FILTER_FIELD_ENTITY_ID && c.GetValue() == "c1" {
			include = c
		}
	}
	if include == nil || include.GetExpiresAtUnixNano() != x.GetExpiresAtUnixNano() {
		t.Fatalf("the filter of %s includes c1 as %v, want until the interest expires, %d", odLink, include, x.GetExpiresAtUnixNano())
	}
	linkFilter := fmt.Sprintf(`#links tr[data-link=%q] .l-filter .criterion`, odLink)
	p.waitFor("the on-demand link's filter includes c1", func() bool {
		return p.js(`[...document.querySelectorAll('`+linkFilter+`')].some((e) => e.querySelector('.c-text').textContent === `+strconv.Quote(filters.Format(include))+
			` && e.querySelector('.countdown').textContent.startsWith('expires in '))`) == "true"
	})

	// Counted for its type as streamd_interest_entities counts it.
	carts := metric(t, eu.MetricsAddr, "streamd_interest_entities", `entity_type="cart"`)
	p.waitFor("the count of carts with interest", func() bool { return value(typeRow("cart")+" .o-entities") == strconv.FormatFloat(carts, 'f', -1, 64) })
	if carts != 1 || p.number(typeRow("auction")+" .o-entities") != "0" {
		t.Errorf("streamd_interest_entities{cart} = %v; the page counts %s auctions, want 0", carts, p.number(typeRow("auction")+" .o-entities"))
	}
	p.screenshot("regions.png")
}

package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/streamd/streamd/topology/crdt"
)

// table writes one row per cart and region: its items, its address, and
// whether its state is Equal to the cart's state in every other region
// ("no, ≠ us" names those it differs from).
func (s snapshot) table(out io.Writer, regions, carts []string) {
	var buf bytes.Buffer // one Write, not interleaved with progress lines
	defer func() { out.Write(buf.Bytes()) }()
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  cart\tregion\titems\taddress\tequal?")
	for _, c := range carts {
		states := s[c]
		for i, st := range states {
			var differ []string
			for j, o := range states {
				if j != i && !st.Equal(o) {
					differ = append(differ, regions[j])
				}
			}
			equal := "yes"
			if len(differ) > 0 {
				equal = "no, ≠ " + strings.Join(differ, ",")
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c, regions[i], items(st), address(st), equal)
		}
	}
	tw.Flush()
}

// print writes the final table, what became of the scripted conflicts, and
// whether every cart is Equal in every region.
func (res *result) print(out io.Writer, w *world) error {
	fmt.Fprintf(out, "every region holds every event %v after the edits stopped; the carts:\n", res.converged.Round(time.Millisecond))
	res.final.table(out, w.names(), res.carts)
	if c := res.conflict; c != nil {
		if err := c.explain(out, res.final[conflictCart][0]); err != nil {
			return err
		}
	}
	if n := res.final.differing(); n > 0 {
		return fmt.Errorf("cart: %d of %d carts differ between regions after convergence", n, len(res.carts))
	}
	fmt.Fprintf(out, "all %d carts are Equal in all %d regions\n", len(res.carts), len(w.regions))
	return nil
}

// explain says what became of the scripted conflicts, from the converged
// state of the cart and the address writes in the isolated region's journal.
func (c *conflict) explain(out io.Writer, s *crdt.State) error {
	a, b := c.isolated.name, c.other.name
	fmt.Fprintf(out, "%s, the conflicting edits made while %s was cut off:\n", conflictCart, a)
	if s.Contains(itemsField, conflictSKU) {
		fmt.Fprintf(out, "  - %s removed %s (the tag it had seen) while %s added %s×%d (a new tag): add wins, it is in the cart, ×%d (%s's remove took back only the quantity it had seen)\n",
			a, conflictSKU, b, conflictSKU, c.addedByOther, s.Counter(quantityField(conflictSKU)), a)
	} else {
		fmt.Fprintf(out, "  - %s removed %s while %s added one: it is NOT in the cart\n", a, conflictSKU, b)
	}
	writes, err := lastAddressWrites(c.isolated)
	if err != nil {
		return err
	}
	wa, wb := writes[a], writes[b]
	winner, _ := s.Register(addressField)
	var why string
	switch {
	case wa.Timestamp != wb.Timestamp:
		later := a
		if wb.Timestamp > wa.Timestamp {
			later = b
		}
		why = fmt.Sprintf("%s's timestamp is later, by %v", later, time.Duration(abs(wa.Timestamp-wb.Timestamp)))
	default:
		why = fmt.Sprintf("equal timestamps: the greater region name, %s, breaks the tie", max(a, b))
	}
	fmt.Fprintf(out, "  - %s set the address %q at %s and %s set %q at %s: last writer wins, %q (%s)\n",
		a, wa.Value, stamp(wa.Timestamp), b, wb.Value, stamp(wb.Timestamp), winner, why)
	return nil
}

func stamp(ns int64) string { return time.Unix(0, ns).UTC().Format("15:04:05.000000000") }

func abs(d int64) int64 {
	if d < 0 {
		return -d
	}
	return d
}

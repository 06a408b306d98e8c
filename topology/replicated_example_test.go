package topology_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/crdt"
)

// A shared shopping cart is a composition of CRDTs: its items are an OR-set
// (an item added in one region while another removes it stays: add wins),
// each item's quantity a counter, the shipping address an LWW register.
const cartType = "cart"

func addItem(sku string, quantity int64) []crdt.Change {
	return []crdt.Change{crdt.AddElement("items", sku), crdt.Increment("quantity/"+sku, quantity)}
}

// removeItem takes the quantity it sees back to 0: what another region adds
// concurrently survives, with the item.
func removeItem(sku string) []crdt.Change {
	return []crdt.Change{crdt.RemoveElement("items", sku), crdt.ResetCounter("quantity/" + sku)}
}

func setAddress(address string) []crdt.Change {
	return []crdt.Change{crdt.SetRegister("address", address)}
}

// cart shows a cart's state as "sku×quantity … → address".
func cart(s *crdt.State) string {
	var b strings.Builder
	for _, sku := range s.Elements("items") {
		fmt.Fprintf(&b, "%s×%d ", sku, s.Counter("quantity/"+sku))
	}
	address, _ := s.Register("address")
	return b.String() + "→ " + address
}

// replicationEvents is what a replicator would append to the journal of the
// region toRegion: every event of from that did not originate there, with its
// origin fields, as a new event of the destination journal.
func replicationEvents(from *journal.Journal, toRegion string) ([]*streamdv1.Event, error) {
	events, err := from.Read(1, 1<<20, nil)
	if err != nil {
		return nil, err
	}
	var out []*streamdv1.Event
	for _, e := range events {
		if e.Origin == toRegion {
			continue // never back to its origin
		}
		c := proto.CloneOf(e)
		c.Offset, c.SeqNr, c.Slice, c.TimestampUnixNano = 0, 0, 0, 0
		out = append(out, c)
	}
	return out, nil
}

// replicateAll stands in for the replicator. It copies everything each time:
// duplicates change no state.
func replicateAll(ctx context.Context, from, to *journal.Journal, toRegion string) error {
	events, err := replicationEvents(from, toRegion)
	if err != nil || len(events) == 0 {
		return err
	}
	_, err = to.Append(ctx, events...)
	return err
}

func ExampleReplicated() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "streamd-cart-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	// Two regions, each with its journal; their clocks read the same instant,
	// so that the address written in both is decided by the region tie-break.
	clock := func() time.Time { return time.Unix(1_700_000_000, 0) }
	open := func(region string) (*journal.Journal, *topology.Replicated) {
		j, err := journal.Open(filepath.Join(dir, region), journal.Options{})
		if err != nil {
			log.Fatal(err)
		}
		r, err := topology.NewReplicated(j, topology.ReplicatedOptions{Region: region, Now: clock})
		if err != nil {
			log.Fatal(err)
		}
		return j, r
	}
	euJournal, eu := open("eu")
	defer euJournal.Close()
	usJournal, us := open("us")
	defer usJournal.Close()
	must := func(_ *crdt.State, err error) {
		if err != nil {
			log.Fatal(err)
		}
	}

	// A family shares cart-1 from both sides of the Atlantic at once.
	must(eu.Apply(ctx, cartType, "cart-1", addItem("sku-1", 2)...))
	must(eu.Apply(ctx, cartType, "cart-1", setAddress("1 Rue de Rivoli, Paris")...))
	must(us.Apply(ctx, cartType, "cart-1", addItem("sku-2", 1)...))
	must(us.Apply(ctx, cartType, "cart-1", setAddress("5th Avenue, New York")...))
	for _, err := range []error{replicateAll(ctx, euJournal, usJournal, "us"), replicateAll(ctx, usJournal, euJournal, "eu")} {
		if err != nil {
			log.Fatal(err)
		}
	}
	// Then eu removes sku-1 while us, not knowing yet, adds one more.
	must(eu.Apply(ctx, cartType, "cart-1", removeItem("sku-1")...))
	must(us.Apply(ctx, cartType, "cart-1", addItem("sku-1", 1)...))
	for _, err := range []error{replicateAll(ctx, euJournal, usJournal, "us"), replicateAll(ctx, usJournal, euJournal, "eu")} {
		if err != nil {
			log.Fatal(err)
		}
	}

	for _, r := range []*topology.Replicated{eu, us} {
		s, err := r.State(ctx, cartType, "cart-1")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %s\n", r.Region(), cart(s))
	}
	// Output:
	// eu: sku-1×1 sku-2×1 → 5th Avenue, New York
	// us: sku-1×1 sku-2×1 → 5th Avenue, New York
}

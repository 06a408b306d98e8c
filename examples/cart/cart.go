package main

import (
	"fmt"
	"strings"

	"github.com/streamd/streamd/topology/crdt"
)

// A shared cart is a composition of CRDTs, as in topology's ExampleReplicated:
// its items are an OR-set (an add concurrent with a remove of the same item
// wins), each item's quantity a counter ("quantity/<sku>"), the shipping
// address an LWW register.
const (
	cartType     = "cart"
	itemsField   = "items"
	addressField = "address"
)

func quantityField(sku string) string { return "quantity/" + sku }

// A command is decided against the cart as the writing region sees it
// (topology.Replicated.Update may decide it again when a replicated event of
// the cart lands first), so that what it removes or resets is what that
// region had observed.
type command interface {
	decide(s *crdt.State) []crdt.Change
	String() string
}

// addItem adds quantity of sku. Every add tags the item afresh, which is what
// makes it survive a concurrent remove. When the region does not show the
// item, the add also clears what is left in its counter (increments that
// were concurrent with an earlier remove), so the quantity starts at the one
// added.
type addItem struct {
	sku      string
	quantity int64
}

func (c addItem) decide(s *crdt.State) []crdt.Change {
	var changes []crdt.Change
	if !s.Contains(itemsField, c.sku) && s.Counter(quantityField(c.sku)) != 0 {
		changes = append(changes, crdt.ResetCounter(quantityField(c.sku)))
	}
	return append(changes, crdt.AddElement(itemsField, c.sku), crdt.Increment(quantityField(c.sku), c.quantity))
}

func (c addItem) String() string { return fmt.Sprintf("add %s×%d", c.sku, c.quantity) }

// changeQuantity changes the quantity of an item in the cart, the pick-th of
// those the region shows (modulo their number): up by one, or down by one
// when the region sees at least two. A cart without items is left alone.
type changeQuantity struct {
	pick int
	up   bool
}

func (c changeQuantity) decide(s *crdt.State) []crdt.Change {
	items := s.Elements(itemsField)
	if len(items) == 0 {
		return nil
	}
	sku := items[c.pick%len(items)]
	switch {
	case c.up:
		return []crdt.Change{crdt.Increment(quantityField(sku), 1)}
	case s.Counter(quantityField(sku)) >= 2:
		return []crdt.Change{crdt.Increment(quantityField(sku), -1)}
	}
	return nil
}

func (c changeQuantity) String() string {
	if c.up {
		return "quantity +1"
	}
	return "quantity -1"
}

// removeItem removes an item: the named sku, or when sku is "" the pick-th
// of the items the region shows. It removes the tags the region has seen and
// takes the quantity the region sees back to 0; an add made concurrently
// elsewhere keeps the item, with the quantity it added.
type removeItem struct {
	sku  string
	pick int
}

func (c removeItem) decide(s *crdt.State) []crdt.Change {
	sku := c.sku
	if sku == "" {
		items := s.Elements(itemsField)
		if len(items) == 0 {
			return nil
		}
		sku = items[c.pick%len(items)]
	}
	if !s.Contains(itemsField, sku) {
		return nil
	}
	return []crdt.Change{crdt.RemoveElement(itemsField, sku), crdt.ResetCounter(quantityField(sku))}
}

func (c removeItem) String() string {
	if c.sku == "" {
		return "remove an item"
	}
	return "remove " + c.sku
}

// setAddress sets the shipping address: of concurrent ones, the write with
// the greatest (timestamp, region) wins in every region.
type setAddress struct{ address string }

func (c setAddress) decide(*crdt.State) []crdt.Change {
	return []crdt.Change{crdt.SetRegister(addressField, c.address)}
}

func (c setAddress) String() string { return "address " + c.address }

// items shows a cart's items as "sku×quantity …", sorted by sku, or "-".
func items(s *crdt.State) string {
	var parts []string
	for _, sku := range s.Elements(itemsField) {
		parts = append(parts, fmt.Sprintf("%s×%d", sku, s.Counter(quantityField(sku))))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}

// address shows a cart's address, or "-".
func address(s *crdt.State) string {
	if a, ok := s.Register(addressField); ok {
		return a
	}
	return "-"
}

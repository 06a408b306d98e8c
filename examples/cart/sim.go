package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/streamd/streamd/topology/crdt"
)

// catalog is what the simulated users put in carts.
var catalog = []string{"apples", "bread", "coffee", "milk", "soap", "tea"}

// addresses are the shipping addresses users choose from.
var addresses = []string{
	"Rue de Rivoli 1, Paris",
	"5th Avenue 10, New York",
	"Shibuya 2-1, Tokyo",
	"Via Roma 5, Milano",
	"Drottninggatan 7, Stockholm",
}

// randomCommand draws a user's next edit: add an item (of the catalog),
// change a quantity, remove an item, or set the address.
func randomCommand(rng *rand.Rand) command {
	switch n := rng.IntN(100); {
	case n < 35:
		return addItem{sku: catalog[rng.IntN(len(catalog))], quantity: 1 + rng.Int64N(3)}
	case n < 60:
		return changeQuantity{pick: rng.IntN(1 << 20), up: rng.IntN(2) == 0}
	case n < 80:
		return removeItem{pick: rng.IntN(1 << 20)}
	default:
		return setAddress{address: addresses[rng.IntN(len(addresses))]}
	}
}

// userCarts are the carts the simulated users edit: cart-1 … cart-n.
func userCarts(n int) []string {
	carts := make([]string, n)
	for i := range carts {
		carts[i] = fmt.Sprintf("cart-%d", i+1)
	}
	return carts
}

// user edits random carts in region r, rate times a second, until ctx is
// done. An edit that has started completes, so that what the ledger holds
// is exactly what was acknowledged.
func (w *world) user(ctx context.Context, r *region, carts []string, rng *rand.Rand) error {
	t := time.NewTicker(time.Duration(float64(time.Second) / w.opts.rate))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := w.edit(context.WithoutCancel(ctx), r, carts[rng.IntN(len(carts))], randomCommand(rng)); err != nil {
			return err
		}
	}
}

// runUsers runs opts.users users per region until ctx is done or one fails,
// which stops the others; it returns the first error.
func (w *world) runUsers(ctx context.Context, carts []string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for i, r := range w.regions {
		for u := range w.opts.users {
			rng := rand.New(rand.NewPCG(w.opts.seed, uint64(i*w.opts.users+u)))
			wg.Go(func() {
				if err := w.user(ctx, r, carts, rng); err != nil {
					once.Do(func() { first = err })
					cancel()
				}
			})
		}
	}
	wg.Wait()
	return first
}

// The scripted conflicts are on a cart of their own, which the random users
// do not touch, so that their outcome can be read off the result.
const (
	conflictCart = "cart-0"
	conflictSKU  = "gift-card"
)

// conflict names the regions of the scripted conflicts: isolated removes
// the gift card while other adds one, and both set the address at once.
type conflict struct {
	isolated, other  *region
	initialAddress   string
	addressIsolated  string
	addressOther     string
	initialGiftCards int64
	addedByOther     int64
	done             bool // the conflicting edits were made
}

func (w *world) newConflict() *conflict {
	isolated := w.region(w.opts.isolate)
	other := w.regions[slices.IndexFunc(w.regions, func(r *region) bool { return r != isolated })]
	return &conflict{
		isolated: isolated, other: other,
		initialAddress: addresses[0], addressIsolated: addresses[3], addressOther: addresses[1],
		initialGiftCards: 1, addedByOther: 1,
	}
}

// prepare puts a gift card in the cart, in the isolated region, and waits
// until every region holds it.
func (c *conflict) prepare(ctx context.Context, w *world) error {
	for _, cmd := range []command{addItem{conflictSKU, c.initialGiftCards}, setAddress{c.initialAddress}} {
		if err := w.edit(ctx, c.isolated, conflictCart, cmd); err != nil {
			return err
		}
	}
	want, err := c.isolated.state(ctx, conflictCart)
	if err != nil {
		return err
	}
	return w.waitFor(ctx, "every region to hold "+conflictCart, w.opts.convergeTimeout, func() (bool, error) {
		for _, r := range w.regions {
			s, err := r.state(ctx, conflictCart)
			if err != nil || !s.Equal(want) {
				return false, err
			}
		}
		return true, nil
	})
}

// run makes the conflicting edits, both regions at the same time; the
// partition keeps each from seeing the other's.
func (c *conflict) run(ctx context.Context, w *world) error {
	var isolatedErr, otherErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		isolatedErr = w.edit(ctx, c.isolated, conflictCart, removeItem{sku: conflictSKU})
		if isolatedErr == nil {
			isolatedErr = w.edit(ctx, c.isolated, conflictCart, setAddress{c.addressIsolated})
		}
	})
	wg.Go(func() {
		otherErr = w.edit(ctx, c.other, conflictCart, addItem{conflictSKU, c.addedByOther})
		if otherErr == nil {
			otherErr = w.edit(ctx, c.other, conflictCart, setAddress{c.addressOther})
		}
	})
	wg.Wait()
	c.done = isolatedErr == nil && otherErr == nil
	return errors.Join(isolatedErr, otherErr)
}

// lastAddressWrites returns each region's last write of the conflict cart's
// address, decoded from r's journal.
func lastAddressWrites(r *region) (map[string]crdt.RegisterSet, error) {
	evs, err := r.events(conflictCart)
	if err != nil {
		return nil, err
	}
	out := map[string]crdt.RegisterSet{}
	for _, e := range evs {
		if e.EventType != crdt.EventRegisterSet {
			continue
		}
		op, err := crdt.Decode(e.EventType, e.Payload)
		if err != nil {
			return nil, fmt.Errorf("cart: %s: %w", r.name, err)
		}
		if op.Field == addressField && op.Register.Timestamp >= out[op.Register.Region].Timestamp {
			out[op.Register.Region] = *op.Register
		}
	}
	return out, nil
}

package crdt

import "maps"

// Counter is a PN counter: per region, the running totals of its increments
// and decrements. The value is the sum of increments minus the sum of
// decrements, in int64 arithmetic (it wraps on overflow). The zero value is a
// counter at 0.
type Counter struct {
	regions map[string]PN
}

// PN is one region's running totals in a Counter.
type PN struct {
	Inc uint64 `json:"inc"`
	Dec uint64 `json:"dec"`
}

// CounterUpdate is the op that changes a Counter: the writing region's totals
// after the change.
type CounterUpdate struct {
	Region string `json:"region"`
	Inc    uint64 `json:"inc"`
	Dec    uint64 `json:"dec"`
}

// Value is the counter's value.
func (c *Counter) Value() int64 {
	var v uint64
	for _, pn := range c.regions {
		v += pn.Inc - pn.Dec
	}
	return int64(v)
}

// Totals returns region's totals.
func (c *Counter) Totals(region string) PN { return c.regions[region] }

// AddOp returns the op by which region adds delta (a decrement when negative).
// It does not change c.
func (c *Counter) AddOp(region string, delta int64) CounterUpdate {
	pn := c.regions[region]
	if delta >= 0 {
		pn.Inc += uint64(delta)
	} else {
		pn.Dec += uint64(-(delta + 1)) + 1 // no overflow at math.MinInt64
	}
	return CounterUpdate{Region: region, Inc: pn.Inc, Dec: pn.Dec}
}

// Apply receives a region's totals; each total only ever grows, so the
// greater one is the later.
func (c *Counter) Apply(op CounterUpdate) {
	c.receive(op.Region, PN{Inc: op.Inc, Dec: op.Dec})
}

func (c *Counter) receive(region string, in PN) {
	if in == (PN{}) {
		return // the zero totals are implied; storing them would make Equal fail
	}
	pn := c.regions[region]
	pn.Inc, pn.Dec = max(pn.Inc, in.Inc), max(pn.Dec, in.Dec)
	if c.regions == nil {
		c.regions = make(map[string]PN)
	}
	c.regions[region] = pn
}

// Merge receives every region's totals of another replica.
func (c *Counter) Merge(o *Counter) {
	for region, pn := range o.regions {
		c.receive(region, pn)
	}
}

// Equal reports whether both counters hold the same totals for every region.
func (c *Counter) Equal(o *Counter) bool { return maps.Equal(c.regions, o.regions) }

// Clone returns an independent copy.
func (c *Counter) Clone() *Counter { return &Counter{regions: maps.Clone(c.regions)} }

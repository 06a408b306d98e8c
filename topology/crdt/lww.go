package crdt

import (
	"cmp"
	"math"
)

// LWWRegister is a last-writer-wins register. Of all writes it has received,
// it holds the one with the greatest (timestamp, region, value); the zero value
// is an unset register.
type LWWRegister struct {
	value     string
	timestamp int64
	region    string
	set       bool
}

// RegisterSet is the op that writes an LWWRegister.
type RegisterSet struct {
	Value string `json:"value"`
	// Timestamp is Unix nanoseconds by the writing region's clock, raised above
	// the timestamp that region had seen.
	Timestamp int64  `json:"ts"`
	Region    string `json:"region"`
}

// Value is the winning value, and whether the register was ever written.
func (r *LWWRegister) Value() (string, bool) { return r.value, r.set }

// Timestamp and Region are those of the winning write.
func (r *LWWRegister) Timestamp() int64 { return r.timestamp }

// Region is the region of the winning write.
func (r *LWWRegister) Region() string { return r.region }

// SetOp returns the op by which region writes value at time now. Its timestamp
// is above the current winner's even when region's clock is behind, so the
// write wins over everything region had observed (short of the largest
// int64 timestamp, which nothing is above). It does not change r.
func (r *LWWRegister) SetOp(value string, now int64, region string) RegisterSet {
	ts := now
	if r.set && ts <= r.timestamp {
		ts = r.timestamp
		if ts < math.MaxInt64 {
			ts++
		}
	}
	return RegisterSet{Value: value, Timestamp: ts, Region: region}
}

// Apply receives a write: it wins if it is greater than the current winner.
func (r *LWWRegister) Apply(op RegisterSet) {
	if !r.set || compareWrites(op, RegisterSet{Value: r.value, Timestamp: r.timestamp, Region: r.region}) > 0 {
		*r = LWWRegister{value: op.Value, timestamp: op.Timestamp, region: op.Region, set: true}
	}
}

// Merge receives the winner of another replica of the register.
func (r *LWWRegister) Merge(o *LWWRegister) {
	if o.set {
		r.Apply(RegisterSet{Value: o.value, Timestamp: o.timestamp, Region: o.region})
	}
}

// Equal reports whether both registers hold the same write.
func (r *LWWRegister) Equal(o *LWWRegister) bool { return *r == *o }

// compareWrites orders writes by timestamp, then region, then value: a total
// order, so every replica picks the same winner.
func compareWrites(a, b RegisterSet) int {
	if c := cmp.Compare(a.Timestamp, b.Timestamp); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Region, b.Region); c != 0 {
		return c
	}
	return cmp.Compare(a.Value, b.Value)
}

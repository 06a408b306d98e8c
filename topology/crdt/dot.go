package crdt

import (
	"cmp"
	"strconv"
)

// Dot names one write: the region that made it and a number that no other
// write of that region to the same entity has. It is the unique tag of an
// OR-set add.
type Dot struct {
	Region  string `json:"region"`
	Counter uint64 `json:"n"`
}

// String is "region:counter".
func (d Dot) String() string { return d.Region + ":" + strconv.FormatUint(d.Counter, 10) }

func compareDots(a, b Dot) int {
	if c := cmp.Compare(a.Region, b.Region); c != 0 {
		return c
	}
	return cmp.Compare(a.Counter, b.Counter)
}

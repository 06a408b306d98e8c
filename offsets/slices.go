package offsets

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// AllSlices is the range a single consumer instance owns when the slices are
// not split.
var AllSlices = SliceRange{First: 0, Last: journal.Slices - 1}

// SliceRange is an inclusive range of slices, First <= Last <= 1023. Its text
// form is "first-last", for example "0-255".
type SliceRange struct {
	First, Last uint32
}

// Validate reports why r is not a usable slice range.
func (r SliceRange) Validate() error {
	if r.Last >= journal.Slices {
		return invalidf("slice range %d-%d: last slice is above %d", r.First, r.Last, journal.Slices-1)
	}
	if r.First > r.Last {
		return invalidf("slice range %d-%d: first slice is above the last", r.First, r.Last)
	}
	return nil
}

// String returns "first-last", the form ParseSliceRange reads.
func (r SliceRange) String() string {
	return strconv.FormatUint(uint64(r.First), 10) + "-" + strconv.FormatUint(uint64(r.Last), 10)
}

// Len is the number of slices in r (0 if r is invalid).
func (r SliceRange) Len() int {
	if r.First > r.Last {
		return 0
	}
	return int(r.Last-r.First) + 1
}

// Contains reports whether slice is in r.
func (r SliceRange) Contains(slice uint32) bool {
	return r.First <= slice && slice <= r.Last
}

// Overlaps reports whether r and o share at least one slice.
func (r SliceRange) Overlaps(o SliceRange) bool {
	return r.First <= o.Last && o.First <= r.Last
}

// Proto converts r to its wire form.
func (r SliceRange) Proto() *streamdv1.SliceRange {
	return &streamdv1.SliceRange{First: r.First, Last: r.Last}
}

// SliceRangeFromProto converts and validates a wire slice range. A nil range
// is an error: what an absent range means is the caller's decision.
func SliceRangeFromProto(p *streamdv1.SliceRange) (SliceRange, error) {
	if p == nil {
		return SliceRange{}, invalidf("slice range is missing")
	}
	r := SliceRange{First: p.GetFirst(), Last: p.GetLast()}
	return r, r.Validate()
}

// ParseSliceRange reads "first-last" (decimal, inclusive, for example
// "0-255") or a single slice "7" (the range 7-7).
func ParseSliceRange(s string) (SliceRange, error) {
	bad := func(why string) (SliceRange, error) {
		return SliceRange{}, invalidf("slice range %q: %s (want first-last, for example 0-255)", s, why)
	}
	if s == "" {
		return bad("empty")
	}
	firstText, lastText, isRange := strings.Cut(s, "-")
	if !isRange {
		lastText = firstText
	}
	first, err := parseSlice(firstText)
	if err != nil {
		return bad("first slice " + err.Error())
	}
	last, err := parseSlice(lastText)
	if err != nil {
		return bad("last slice " + err.Error())
	}
	r := SliceRange{First: first, Last: last}
	if r.First > r.Last {
		return bad("first slice is above the last")
	}
	return r, nil
}

func parseSlice(s string) (uint32, error) {
	if s == "" {
		return 0, fmt.Errorf("is empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is not a decimal number", s)
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n >= journal.Slices {
		return 0, fmt.Errorf("%s is above %d", s, journal.Slices-1)
	}
	return uint32(n), nil
}

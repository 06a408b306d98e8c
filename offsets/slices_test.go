package offsets

import (
	"errors"
	"strings"
	"testing"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestParseSliceRange(t *testing.T) {
	tests := []struct {
		in      string
		want    SliceRange
		wantErr string // substring; "" = no error
	}{
		{in: "0-1023", want: SliceRange{0, 1023}},
		{in: "0-255", want: SliceRange{0, 255}},
		{in: "512-1023", want: SliceRange{512, 1023}},
		{in: "7", want: SliceRange{7, 7}},
		{in: "7-7", want: SliceRange{7, 7}},
		{in: "007-010", want: SliceRange{7, 10}},
		{in: "", wantErr: "empty"},
		{in: "-", wantErr: "first slice is empty"},
		{in: "3-", wantErr: "last slice is empty"},
		{in: "-3", wantErr: "first slice is empty"},
		{in: "5-3", wantErr: "first slice is above the last"},
		{in: "0-1024", wantErr: "above 1023"},
		{in: "1024", wantErr: "above 1023"},
		{in: "0-99999999999999999999", wantErr: "above 1023"},
		{in: "a-b", wantErr: "not a decimal number"},
		{in: "+1-2", wantErr: "not a decimal number"},
		{in: " 1-2", wantErr: "not a decimal number"},
		{in: "1-2-3", wantErr: "not a decimal number"},
		{in: "1_0-20", wantErr: "not a decimal number"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSliceRange(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrInvalid) ||
					!strings.HasPrefix(err.Error(), "offsets: ") {
					t.Fatalf("ParseSliceRange(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSliceRange(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestSliceRange(t *testing.T) {
	r := SliceRange{100, 199}
	if r.String() != "100-199" || AllSlices.String() != "0-1023" {
		t.Errorf("String = %q, %q", r.String(), AllSlices.String())
	}
	if r.Len() != 100 || AllSlices.Len() != journal.Slices {
		t.Errorf("Len = %d, %d", r.Len(), AllSlices.Len())
	}
	for _, tt := range []struct {
		slice uint32
		want  bool
	}{{99, false}, {100, true}, {150, true}, {199, true}, {200, false}} {
		if got := r.Contains(tt.slice); got != tt.want {
			t.Errorf("%v.Contains(%d) = %v", r, tt.slice, got)
		}
	}
	for _, tt := range []struct {
		o    SliceRange
		want bool
	}{{SliceRange{0, 99}, false}, {SliceRange{0, 100}, true}, {SliceRange{199, 300}, true},
		{SliceRange{200, 300}, false}, {SliceRange{120, 130}, true}, {AllSlices, true}} {
		if got := r.Overlaps(tt.o); got != tt.want || tt.o.Overlaps(r) != tt.want {
			t.Errorf("%v.Overlaps(%v) = %v", r, tt.o, got)
		}
	}
	for _, bad := range []SliceRange{{5, 3}, {0, 1024}, {1024, 1024}} {
		if err := bad.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%v.Validate() = %v", bad, err)
		}
	}
	got, err := SliceRangeFromProto(r.Proto())
	if err != nil || got != r {
		t.Errorf("proto round trip = %v, %v", got, err)
	}
	if _, err := SliceRangeFromProto(nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("SliceRangeFromProto(nil) = %v", err)
	}
	if _, err := SliceRangeFromProto(&streamdv1.SliceRange{First: 9, Last: 2}); !errors.Is(err, ErrInvalid) {
		t.Errorf("SliceRangeFromProto(9-2) = %v", err)
	}
}

func FuzzParseSliceRange(f *testing.F) {
	for _, s := range []string{"0-1023", "0-255", "7", "5-3", "", "-", "1024", "1-2-3", "+1-2", "00000000000000000001-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseSliceRange(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "offsets: ") {
				t.Fatalf("ParseSliceRange(%q): error %v is not an offsets ErrInvalid", s, err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("ParseSliceRange(%q) = %v, which does not validate: %v", s, r, err)
		}
		again, err := ParseSliceRange(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseSliceRange(%q) = %v; its String %q parses to %v, %v", s, r, r.String(), again, err)
		}
	})
}

package bytesize

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
	}{
		{"0", 0}, {"1048576", 1 << 20}, {"512KiB", 512 << 10}, {"64MiB", 64 << 20}, {"64mib", 64 << 20},
		{"1 GiB", 1 << 30}, {" 2TiB ", 2 << 40}, {"1GB", 1e9}, {"1kB", 1000}, {"3MB", 3e6}, {"7B", 7},
		{"8589934591GiB", 8589934591 << 30},
	} {
		got, err := Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"", "MiB", "-1", "-1MiB", "1.5GiB", "64M", "64 MiBs", "1e6", "0x10", "9223372036854775808", "8589934592TiB", "8589934592GiB"} {
		if got, err := Parse(in); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %d, %v; want ErrSyntax", in, got, err)
		}
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		in   Size
		want string
	}{{0, "0"}, {1, "1"}, {1023, "1023"}, {KiB, "1KiB"}, {64 * MiB, "64MiB"}, {208 * MiB, "208MiB"}, {GiB, "1GiB"}, {1e6, "1000000"}, {3 * TiB, "3TiB"}} {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("%d.String() = %q, want %q", int64(tc.in), got, tc.want)
		}
	}
}

// FuzzParse: whatever Parse accepts prints as a size that parses back to
// the same value.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "64MiB", "1 GiB", "1GB", "512kib", "-1", "1.5GiB", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("Parse(%q): %v is not ErrSyntax", s, err)
			}
			return
		}
		if v < 0 {
			t.Fatalf("Parse(%q) = %d < 0", s, v)
		}
		if back, err := Parse(v.String()); err != nil || back != v {
			t.Fatalf("Parse(%q) = %d prints %q, which parses to %d, %v", s, v, v.String(), back, err)
		}
	})
}

// Package bytesize is the one parser of byte sizes on the command line and
// in STREAMD_* environment variables: a plain number of bytes (1048576) or a
// whole number with a unit, binary (KiB, MiB, GiB, TiB: powers of 1024) or
// decimal (kB, MB, GB, TB: powers of 1000), case-insensitive, with or without
// a space (64MiB, 1 GiB, 1GB). Sizes print in the largest binary unit that
// divides them exactly (64MiB), else in bytes.
//
// It takes no fractions (1.5GiB) and no negative sizes.
package bytesize

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// Size is a number of bytes. *Size is a flag value (cli.Generic).
type Size int64

// Binary units.
const (
	KiB Size = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

var units = map[string]Size{
	"": 1, "b": 1,
	"kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
}

// ErrSyntax wraps every error of Parse.
var ErrSyntax = errors.New("bytesize: want bytes, or a whole number with a unit: 512KiB, 64MiB, 1GiB, 1GB")

// Parse reads a size: "1048576", "64MiB", "1 GiB", "1GB".
func Parse(s string) (Size, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	if i < 0 {
		i = len(t)
	}
	unit, ok := units[strings.ToLower(strings.TrimSpace(t[i:]))]
	if i == 0 || !ok {
		return 0, fmt.Errorf("%w; got %q", ErrSyntax, s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/int64(unit) {
		return 0, fmt.Errorf("%w; got %q, which is too large", ErrSyntax, s)
	}
	return Size(n) * unit, nil
}

// String prints s in the largest binary unit that divides it: 64MiB, 1GiB,
// 1000000 (1MB is not a whole number of MiB).
func (s Size) String() string {
	for _, u := range []struct {
		name string
		size Size
	}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s != 0 && s%u.size == 0 {
			return strconv.FormatInt(int64(s/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// Set implements cli.Generic (and flag.Value).
func (s *Size) Set(text string) error {
	v, err := Parse(text)
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Flag is a size flag with a default and its STREAMD_* environment variable
// (env "" for none). defaultText, if not "", is shown in --help instead of
// def (for a default computed from other flags).
func Flag(name string, def Size, env, usage, defaultText string) *cli.GenericFlag {
	v := def
	f := &cli.GenericFlag{Name: name, Value: &v, Usage: usage, DefaultText: defaultText}
	if env != "" {
		f.EnvVars = []string{env}
	}
	return f
}

// Get is the value of the size flag name, which Flag made.
func Get(c *cli.Context, name string) Size {
	if v, ok := c.Generic(name).(*Size); ok {
		return *v
	}
	panic("bytesize: --" + name + " is not a bytesize.Flag")
}

// Int is s as an int, for options that take one; false if it does not fit.
func (s Size) Int() (int, bool) {
	return int(s), int64(s) <= math.MaxInt
}

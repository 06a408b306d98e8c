package crdt

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// prepareAll makes the changes in region at time now, one dot each, applying
// each op before the next change is prepared, as topology.Replicated does.
func prepareAll(t *testing.T, s *State, region string, first uint64, now int64, changes ...Change) []Op {
	t.Helper()
	var ops []Op
	for i, c := range changes {
		op, err := s.Prepare(c, Dot{region, first + uint64(i)}, now)
		if err != nil {
			t.Fatalf("Prepare(%v): %v", c, err)
		}
		if err := s.Apply(op); err != nil {
			t.Fatal(err)
		}
		ops = append(ops, op)
	}
	return ops
}

func TestStatePrepare(t *testing.T) {
	for _, tc := range []struct {
		name    string
		changes []Change
		check   func(t *testing.T, s *State)
	}{
		{"register", []Change{SetRegister("address", "a"), SetRegister("address", "b")}, func(t *testing.T, s *State) {
			// Same clock reading twice: the second write still wins.
			if v, ok := s.Register("address"); !ok || v != "b" {
				t.Fatalf("address %q (%v), want b", v, ok)
			}
		}},
		{"counter", []Change{Increment("n", 5), Increment("n", -7), Increment("m", 1)}, func(t *testing.T, s *State) {
			if s.Counter("n") != -2 || s.Counter("m") != 1 || s.Counter("never") != 0 {
				t.Fatalf("n=%d m=%d never=%d, want -2 1 0", s.Counter("n"), s.Counter("m"), s.Counter("never"))
			}
		}},
		{"reset counter", []Change{Increment("n", 5), ResetCounter("n"), Increment("n", 2)}, func(t *testing.T, s *State) {
			if s.Counter("n") != 2 {
				t.Fatalf("n=%d, want 2", s.Counter("n"))
			}
		}},
		{"reset a negative counter", []Change{Increment("n", -5), ResetCounter("n")}, func(t *testing.T, s *State) {
			if s.Counter("n") != 0 {
				t.Fatalf("n=%d, want 0", s.Counter("n"))
			}
		}},
		{"set", []Change{AddElement("s", "a"), AddElement("s", "b"), RemoveElement("s", "a"), AddElement("s", "c")}, func(t *testing.T, s *State) {
			if got := s.Elements("s"); !slices.Equal(got, []string{"b", "c"}) || s.Contains("s", "a") || !s.Contains("s", "b") {
				t.Fatalf("s=%q, want [b c]", got)
			}
		}},
		{"add, remove, add again", []Change{AddElement("s", "a"), RemoveElement("s", "a"), AddElement("s", "a")}, func(t *testing.T, s *State) {
			if !s.Contains("s", "a") {
				t.Fatal("a is not in s")
			}
		}},
		{"kinds have their own names", []Change{SetRegister("x", "r"), Increment("x", 3), AddElement("x", "e")}, func(t *testing.T, s *State) {
			v, _ := s.Register("x")
			if v != "r" || s.Counter("x") != 3 || !s.Contains("x", "e") {
				t.Fatalf("state %v", s)
			}
			if !slices.Equal(s.Registers(), []string{"x"}) || !slices.Equal(s.Counters(), []string{"x"}) || !slices.Equal(s.Sets(), []string{"x"}) {
				t.Fatalf("names %q %q %q", s.Registers(), s.Counters(), s.Sets())
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s State
			ops := prepareAll(t, &s, "eu", 1, 1000, tc.changes...)
			tc.check(t, &s)
			// The ops, encoded and decoded, rebuild the same state elsewhere.
			var elsewhere State
			for _, op := range ops {
				et, payload, err := Encode(op)
				if err != nil {
					t.Fatal(err)
				}
				dec, err := Decode(et, payload)
				if err != nil {
					t.Fatal(err)
				}
				if err := elsewhere.Apply(dec); err != nil {
					t.Fatal(err)
				}
			}
			if !elsewhere.Equal(&s) {
				t.Fatalf("replayed %v, want %v", &elsewhere, &s)
			}
		})
	}
}

func TestStatePrepareRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Change
		dot  Dot
		msg  string
	}{
		{"zero change", Change{}, Dot{"eu", 1}, "zero Change"},
		{"empty name", Increment("", 1), Dot{"eu", 1}, "name is empty"},
		{"empty region", AddElement("s", "a"), Dot{"", 1}, "region is empty"},
		{"invalid UTF-8", SetRegister("a", "\xff"), Dot{"eu", 1}, "not valid UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s State
			if _, err := s.Prepare(tc.c, tc.dot, 1); !errors.Is(err, ErrInvalidChange) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Prepare = %v, want ErrInvalidChange saying %q", err, tc.msg)
			}
		})
	}
	var s State
	if err := s.Apply(Op{Field: "a"}); !errors.Is(err, ErrInvalidOp) {
		t.Fatalf("Apply of an op of no kind = %v, want ErrInvalidOp", err)
	}
}

func TestStateEqualIgnoresOpsWithoutEffect(t *testing.T) {
	var a, b State
	prepareAll(t, &a, "eu", 1, 1, Increment("n", 1))
	prepareAll(t, &b, "eu", 1, 1, Increment("n", 1))
	// Effectless ops: a zero increment of a new counter, a remove of nothing.
	prepareAll(t, &b, "eu", 2, 1, Increment("m", 0), RemoveElement("s", "absent"))
	if !a.Equal(&b) || !b.Equal(&a) {
		t.Fatalf("%v and %v differ", &a, &b)
	}
	if len(b.Counters()) != 1 || len(b.Sets()) != 0 {
		t.Fatalf("fields without content are listed: %q %q", b.Counters(), b.Sets())
	}
	prepareAll(t, &b, "eu", 4, 1, Increment("n", 1))
	if a.Equal(&b) {
		t.Fatal("states with different counters are Equal")
	}
}

func TestStateCloneAndMerge(t *testing.T) {
	var eu, us State
	prepareAll(t, &eu, "eu", 1, 10, AddElement("items", "a"), Increment("qty/a", 2), SetRegister("address", "eu st"))
	prepareAll(t, &us, "us", 1, 10, AddElement("items", "b"), Increment("qty/a", 1), SetRegister("address", "us st"))

	snapshot := eu.Clone()
	merged := eu.Clone()
	merged.Merge(&us)
	if !eu.Equal(snapshot) {
		t.Fatal("Merge into a clone changed the original")
	}
	other := us.Clone()
	other.Merge(&eu)
	if !merged.Equal(other) {
		t.Fatalf("merge is not commutative:\n%v\n%v", merged, other)
	}
	addr, _ := merged.Register("address")
	if got := merged.Elements("items"); !slices.Equal(got, []string{"a", "b"}) || merged.Counter("qty/a") != 3 || addr != "us st" {
		t.Fatalf("merged %v", merged)
	}
	want := `register address="us st" (ts 10, us); counter qty/a=3; set items=["a" "b"]`
	if merged.String() != want {
		t.Fatalf("String() = %s, want %s", merged, want)
	}
}

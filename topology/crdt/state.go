package crdt

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"
)

// State is the replicated state of one entity: LWW registers, counters and
// OR-sets, each addressed by a name within its kind. A user's entity is a
// composition of them (a shopping cart: an OR-set of items, a counter per
// item's quantity, a register for the address). The zero value is an empty
// state; a field that was never written reads as its zero value.
type State struct {
	registers map[string]*LWWRegister
	counters  map[string]*Counter
	sets      map[string]*ORSet
}

// Register returns the value of the named register and whether it was ever
// written.
func (s *State) Register(name string) (string, bool) {
	if r := s.registers[name]; r != nil {
		return r.Value()
	}
	return "", false
}

// Counter returns the value of the named counter.
func (s *State) Counter(name string) int64 {
	if c := s.counters[name]; c != nil {
		return c.Value()
	}
	return 0
}

// Elements returns the elements of the named set, sorted.
func (s *State) Elements(name string) []string {
	if set := s.sets[name]; set != nil {
		return set.Elements()
	}
	return nil
}

// Contains reports whether the named set contains element.
func (s *State) Contains(name, element string) bool {
	if set := s.sets[name]; set != nil {
		return set.Contains(element)
	}
	return false
}

// Registers, Counters and Sets return the names of the fields of each kind
// that ever received an op with an effect, sorted.
func (s *State) Registers() []string { return slices.Sorted(maps.Keys(s.registers)) }

// Counters returns the names of the counters; see Registers.
func (s *State) Counters() []string { return slices.Sorted(maps.Keys(s.counters)) }

// Sets returns the names of the sets; see Registers.
func (s *State) Sets() []string { return slices.Sorted(maps.Keys(s.sets)) }

// Apply receives one op. Ops commute and are idempotent: any order and any
// duplication of the same ops gives an Equal state. It fails only for an op
// with no or several kinds set.
func (s *State) Apply(op Op) error {
	switch op.EventType() {
	case EventRegisterSet:
		r := field(s.registers, op.Field, new(LWWRegister))
		r.Apply(*op.Register)
		s.registers = keep(s.registers, op.Field, r, r.set)
	case EventCounterUpdated:
		c := field(s.counters, op.Field, new(Counter))
		c.Apply(*op.Counter)
		s.counters = keep(s.counters, op.Field, c, len(c.regions) > 0)
	case EventElementAdded:
		set := field(s.sets, op.Field, new(ORSet))
		set.ApplyAdd(*op.Add)
		s.sets = keep(s.sets, op.Field, set, !set.isZero())
	case EventElementRemoved:
		set := field(s.sets, op.Field, new(ORSet))
		set.ApplyRemove(*op.Remove)
		s.sets = keep(s.sets, op.Field, set, !set.isZero())
	default:
		return fmt.Errorf("%w: exactly one of register, counter, add and remove must be set", ErrInvalidOp)
	}
	return nil
}

func (s *ORSet) isZero() bool { return len(s.live) == 0 && len(s.removed) == 0 }

// field returns m[name], or zero when there is none.
func field[T any](m map[string]*T, name string, zero *T) *T {
	if v := m[name]; v != nil {
		return v
	}
	return zero
}

// keep stores v under name if it holds anything, so that Equal states have
// the same names whatever ops without effect they received.
func keep[T any](m map[string]*T, name string, v *T, nonZero bool) map[string]*T {
	if !nonZero {
		return m
	}
	if m == nil {
		m = make(map[string]*T)
	}
	m[name] = v
	return m
}

// Merge receives everything another replica of the entity holds.
func (s *State) Merge(o *State) {
	for name, r := range o.registers {
		mine := field(s.registers, name, new(LWWRegister))
		mine.Merge(r)
		s.registers = keep(s.registers, name, mine, true)
	}
	for name, c := range o.counters {
		mine := field(s.counters, name, new(Counter))
		mine.Merge(c)
		s.counters = keep(s.counters, name, mine, true)
	}
	for name, set := range o.sets {
		mine := field(s.sets, name, new(ORSet))
		mine.Merge(set)
		s.sets = keep(s.sets, name, mine, true)
	}
}

// Equal reports whether both states hold the same fields with the same
// content, tombstones and per-region totals included: what replicas that
// received the same ops have.
func (s *State) Equal(o *State) bool {
	return maps.EqualFunc(s.registers, o.registers, (*LWWRegister).Equal) &&
		maps.EqualFunc(s.counters, o.counters, (*Counter).Equal) &&
		maps.EqualFunc(s.sets, o.sets, (*ORSet).Equal)
}

// Clone returns an independent copy.
func (s *State) Clone() *State {
	c := &State{}
	for name, r := range s.registers {
		cp := *r
		c.registers = keep(c.registers, name, &cp, true)
	}
	for name, v := range s.counters {
		c.counters = keep(c.counters, name, v.Clone(), true)
	}
	for name, set := range s.sets {
		c.sets = keep(c.sets, name, set.Clone(), true)
	}
	return c
}

// String shows the values, for logs and test failures.
func (s *State) String() string {
	var b strings.Builder
	for _, name := range s.Registers() {
		r := s.registers[name]
		fmt.Fprintf(&b, "register %s=%q (ts %d, %s); ", name, r.value, r.timestamp, r.region)
	}
	for _, name := range s.Counters() {
		fmt.Fprintf(&b, "counter %s=%d; ", name, s.Counter(name))
	}
	for _, name := range s.Sets() {
		fmt.Fprintf(&b, "set %s=%q; ", name, s.Elements(name))
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// ErrInvalidChange wraps every refusal of a Change by Prepare.
var ErrInvalidChange = errors.New("crdt: invalid change")

type changeKind uint8

const (
	changeSetRegister changeKind = iota + 1
	changeIncrement
	changeResetCounter
	changeAddElement
	changeRemoveElement
)

// Change is what a command asks for, before it is an Op: State.Prepare turns
// it into the op that does it, given the state the writing region sees.
type Change struct {
	kind  changeKind
	field string
	value string // register value or set element
	delta int64
}

// SetRegister writes value to the named register.
func SetRegister(name, value string) Change {
	return Change{kind: changeSetRegister, field: name, value: value}
}

// Increment adds delta to the named counter (a decrement when negative).
func Increment(name string, delta int64) Change {
	return Change{kind: changeIncrement, field: name, delta: delta}
}

// ResetCounter brings the named counter to 0 as the writing region sees it:
// increments made concurrently elsewhere survive it.
func ResetCounter(name string) Change { return Change{kind: changeResetCounter, field: name} }

// AddElement adds element to the named set.
func AddElement(name, element string) Change {
	return Change{kind: changeAddElement, field: name, value: element}
}

// RemoveElement removes element from the named set, as far as the writing
// region has observed its adds: a concurrent add elsewhere wins.
func RemoveElement(name, element string) Change {
	return Change{kind: changeRemoveElement, field: name, value: element}
}

// String shows the change.
func (c Change) String() string {
	switch c.kind {
	case changeSetRegister:
		return fmt.Sprintf("SetRegister(%q, %q)", c.field, c.value)
	case changeIncrement:
		return fmt.Sprintf("Increment(%q, %d)", c.field, c.delta)
	case changeResetCounter:
		return fmt.Sprintf("ResetCounter(%q)", c.field)
	case changeAddElement:
		return fmt.Sprintf("AddElement(%q, %q)", c.field, c.value)
	case changeRemoveElement:
		return fmt.Sprintf("RemoveElement(%q, %q)", c.field, c.value)
	}
	return "Change{}"
}

// Prepare returns the op that makes change c in the region dot.Region, at
// Unix nanoseconds now, against s as that region sees it. dot must be unique
// to this op among the entity's ops (topology.Replicated uses the region and
// its entry of the entity's version vector); an added element is tagged with
// it. Prepare does not change s: Apply the op.
func (s *State) Prepare(c Change, dot Dot, now int64) (Op, error) {
	switch {
	case c.kind == 0:
		return Op{}, fmt.Errorf("%w: the zero Change", ErrInvalidChange)
	case c.field == "":
		return Op{}, fmt.Errorf("%w: %v: name is empty", ErrInvalidChange, c)
	case dot.Region == "":
		return Op{}, fmt.Errorf("%w: %v: region is empty", ErrInvalidChange, c)
	case !utf8.ValidString(c.field) || !utf8.ValidString(c.value) || !utf8.ValidString(dot.Region):
		return Op{}, fmt.Errorf("%w: %v: not valid UTF-8", ErrInvalidChange, c)
	}
	op := Op{Field: c.field}
	switch c.kind {
	case changeSetRegister:
		set := field(s.registers, c.field, new(LWWRegister)).SetOp(c.value, now, dot.Region)
		op.Register = &set
	case changeIncrement:
		u := field(s.counters, c.field, new(Counter)).AddOp(dot.Region, c.delta)
		op.Counter = &u
	case changeResetCounter:
		ctr := field(s.counters, c.field, new(Counter))
		u := ctr.AddOp(dot.Region, -ctr.Value())
		op.Counter = &u
	case changeAddElement:
		add := field(s.sets, c.field, new(ORSet)).AddOp(c.value, dot)
		op.Add = &add
	case changeRemoveElement:
		rm := field(s.sets, c.field, new(ORSet)).RemoveOp(c.value)
		op.Remove = &rm
	}
	return op, nil
}

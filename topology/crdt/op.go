package crdt

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Event types of the ops, as written in journal events.
const (
	EventRegisterSet    = "crdt.RegisterSet"
	EventCounterUpdated = "crdt.CounterUpdated"
	EventElementAdded   = "crdt.ElementAdded"
	EventElementRemoved = "crdt.ElementRemoved"
)

// ErrInvalidOp wraps every refusal of an op: malformed, or not encodable.
var ErrInvalidOp = errors.New("crdt: invalid op")

// Op is one change to one named field of a State: exactly one of Register,
// Counter, Add and Remove is set. Fields are named per kind: a register and a
// counter may share a name.
type Op struct {
	Field    string
	Register *RegisterSet
	Counter  *CounterUpdate
	Add      *ElementAdd
	Remove   *ElementRemove
}

// EventType names the op's kind ("" for an op with no or several kinds set).
func (op Op) EventType() string {
	kind := ""
	for _, k := range []struct {
		set  bool
		name string
	}{
		{op.Register != nil, EventRegisterSet},
		{op.Counter != nil, EventCounterUpdated},
		{op.Add != nil, EventElementAdded},
		{op.Remove != nil, EventElementRemoved},
	} {
		if k.set {
			if kind != "" {
				return ""
			}
			kind = k.name
		}
	}
	return kind
}

// The payloads: the field next to the op's own fields, one JSON object.
type (
	registerSetPayload struct {
		Field string `json:"field"`
		RegisterSet
	}
	counterUpdatedPayload struct {
		Field string `json:"field"`
		CounterUpdate
	}
	elementAddedPayload struct {
		Field string `json:"field"`
		ElementAdd
	}
	elementRemovedPayload struct {
		Field string `json:"field"`
		ElementRemove
	}
)

// Encode returns the op's event type and its JSON payload, for example
// crdt.ElementAdded {"field":"items","element":"sku-1","tag":{"region":"eu","n":3}}.
// It refuses an op that Decode would refuse, or whose strings are not valid
// UTF-8 (JSON would alter them, and replicas would diverge).
func Encode(op Op) (eventType string, payload []byte, err error) {
	if err := op.validate(); err != nil {
		return "", nil, err
	}
	var v any
	switch {
	case op.Register != nil:
		v = registerSetPayload{op.Field, *op.Register}
	case op.Counter != nil:
		v = counterUpdatedPayload{op.Field, *op.Counter}
	case op.Add != nil:
		v = elementAddedPayload{op.Field, *op.Add}
	default:
		v = elementRemovedPayload{op.Field, *op.Remove}
	}
	payload, err = json.Marshal(v)
	if err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrInvalidOp, err)
	}
	return op.EventType(), payload, nil
}

// Decode reads an op written by Encode. An unknown event type or a malformed
// payload is an error wrapping ErrInvalidOp.
func Decode(eventType string, payload []byte) (Op, error) {
	var head struct {
		Field string `json:"field"`
	}
	op := Op{}
	var body any // the op's own fields, beside the field in the same object
	switch eventType {
	case EventRegisterSet:
		op.Register = new(RegisterSet)
		body = op.Register
	case EventCounterUpdated:
		op.Counter = new(CounterUpdate)
		body = op.Counter
	case EventElementAdded:
		op.Add = new(ElementAdd)
		body = op.Add
	case EventElementRemoved:
		op.Remove = new(ElementRemove)
		body = op.Remove
	default:
		return Op{}, fmt.Errorf("%w: unknown event type %q", ErrInvalidOp, eventType)
	}
	err := json.Unmarshal(payload, &head)
	if err == nil {
		err = json.Unmarshal(payload, body)
	}
	if err != nil {
		return Op{}, fmt.Errorf("%w: %s: %v", ErrInvalidOp, eventType, err)
	}
	op.Field = head.Field
	if err := op.validate(); err != nil {
		return Op{}, err
	}
	return op, nil
}

func (op Op) validate() error {
	kind := op.EventType()
	if kind == "" {
		return fmt.Errorf("%w: exactly one of register, counter, add and remove must be set", ErrInvalidOp)
	}
	fail := func(what string) error { return fmt.Errorf("%w: %s: %s", ErrInvalidOp, kind, what) }
	if op.Field == "" {
		return fail("field is empty")
	}
	strs := []string{op.Field}
	var regions []string
	switch {
	case op.Register != nil:
		strs = append(strs, op.Register.Value)
		regions = append(regions, op.Register.Region)
	case op.Counter != nil:
		regions = append(regions, op.Counter.Region)
	case op.Add != nil:
		strs = append(strs, op.Add.Element)
		regions = append(regions, op.Add.Tag.Region)
	default:
		strs = append(strs, op.Remove.Element)
		for _, t := range op.Remove.Tags {
			regions = append(regions, t.Region)
		}
	}
	for _, r := range regions {
		if r == "" {
			return fail("region is empty")
		}
	}
	for _, s := range append(strs, regions...) {
		if !utf8.ValidString(s) {
			return fail(fmt.Sprintf("%q is not valid UTF-8", s))
		}
	}
	return nil
}

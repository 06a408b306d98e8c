package crdt

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		op        Op
		eventType string
		payload   string
	}{
		{Op{Field: "address", Register: &RegisterSet{"1 Main St", 17, "eu"}}, EventRegisterSet,
			`{"field":"address","value":"1 Main St","ts":17,"region":"eu"}`},
		{Op{Field: "qty/sku-1", Counter: &CounterUpdate{"us", 5, 2}}, EventCounterUpdated,
			`{"field":"qty/sku-1","region":"us","inc":5,"dec":2}`},
		{Op{Field: "items", Add: &ElementAdd{"sku-1", Dot{"eu", 3}}}, EventElementAdded,
			`{"field":"items","element":"sku-1","tag":{"region":"eu","n":3}}`},
		{Op{Field: "items", Remove: &ElementRemove{"sku-1", []Dot{{"eu", 3}, {"us", 1}}}}, EventElementRemoved,
			`{"field":"items","element":"sku-1","tags":[{"region":"eu","n":3},{"region":"us","n":1}]}`},
		{Op{Field: "items", Remove: &ElementRemove{Element: "never-seen"}}, EventElementRemoved,
			`{"field":"items","element":"never-seen","tags":null}`},
		{Op{Field: "ünïcødé", Register: &RegisterSet{"", -5, "ap-south"}}, EventRegisterSet,
			`{"field":"ünïcødé","value":"","ts":-5,"region":"ap-south"}`},
	} {
		t.Run(tc.eventType, func(t *testing.T) {
			et, payload, err := Encode(tc.op)
			if err != nil {
				t.Fatal(err)
			}
			if et != tc.eventType || string(payload) != tc.payload {
				t.Fatalf("Encode = %s %s, want %s %s", et, payload, tc.eventType, tc.payload)
			}
			got, err := Decode(et, payload)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.op) {
				t.Fatalf("Decode = %+v, want %+v", got, tc.op)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, eventType, payload, msg string
	}{
		{"unknown event type", "crdt.Nope", `{}`, `unknown event type "crdt.Nope"`},
		{"event type of another kind of event", "ItemAdded", `{"field":"items"}`, "unknown event type"},
		{"not JSON", EventRegisterSet, `{"field":`, "unexpected end"},
		{"trailing data", EventCounterUpdated, `{"field":"c","region":"eu","inc":1} x`, "invalid character"},
		{"wrong type", EventCounterUpdated, `{"field":"c","region":"eu","inc":-1}`, "cannot unmarshal"},
		{"null payload", EventElementAdded, `null`, "field is empty"},
		{"no field", EventRegisterSet, `{"value":"v","ts":1,"region":"eu"}`, "field is empty"},
		{"register without region", EventRegisterSet, `{"field":"a","value":"v","ts":1}`, "region is empty"},
		{"counter without region", EventCounterUpdated, `{"field":"c","inc":1}`, "region is empty"},
		{"tag without region", EventElementAdded, `{"field":"s","element":"x","tag":{"n":1}}`, "region is empty"},
		{"removed tag without region", EventElementRemoved, `{"field":"s","element":"x","tags":[{"region":"eu","n":1},{"n":2}]}`, "region is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode(tc.eventType, []byte(tc.payload))
			if !errors.Is(err, ErrInvalidOp) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Decode(%s, %s) = %v, want ErrInvalidOp saying %q", tc.eventType, tc.payload, err, tc.msg)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		op   Op
		msg  string
	}{
		{"no kind", Op{Field: "a"}, "exactly one"},
		{"two kinds", Op{Field: "a", Register: &RegisterSet{Region: "eu"}, Counter: &CounterUpdate{Region: "eu"}}, "exactly one"},
		{"invalid UTF-8 value", Op{Field: "a", Register: &RegisterSet{"\xff", 1, "eu"}}, "not valid UTF-8"},
		{"invalid UTF-8 element", Op{Field: "s", Add: &ElementAdd{"\xc3", Dot{"eu", 1}}}, "not valid UTF-8"},
		{"invalid UTF-8 region", Op{Field: "c", Counter: &CounterUpdate{Region: "e\xffu"}}, "not valid UTF-8"},
		{"empty field", Op{Counter: &CounterUpdate{Region: "eu"}}, "field is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := Encode(tc.op); !errors.Is(err, ErrInvalidOp) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Encode = %v, want ErrInvalidOp saying %q", err, tc.msg)
			}
		})
	}
}

// FuzzDecode: payloads come from other regions. Whatever decodes encodes
// again to an op that decodes the same, so every region applies the same op.
func FuzzDecode(f *testing.F) {
	for _, seed := range []struct{ et, payload string }{
		{EventRegisterSet, `{"field":"address","value":"x","ts":17,"region":"eu"}`},
		{EventCounterUpdated, `{"field":"q","region":"us","inc":5,"dec":2}`},
		{EventElementAdded, `{"field":"items","element":"a","tag":{"region":"eu","n":3}}`},
		{EventElementRemoved, `{"field":"items","element":"a","tags":[{"region":"eu","n":3}]}`},
		{EventElementRemoved, `{"field":"items","element":"a","tags":[]}`},
		{EventRegisterSet, `{"field":"a","value":"\ud800","ts":1,"region":"eu","extra":1}`},
	} {
		f.Add(seed.et, []byte(seed.payload))
	}
	f.Fuzz(func(t *testing.T, eventType string, payload []byte) {
		op, err := Decode(eventType, payload)
		if err != nil {
			if !errors.Is(err, ErrInvalidOp) {
				t.Fatalf("error %v does not wrap ErrInvalidOp", err)
			}
			return
		}
		et, again, err := Encode(op)
		if err != nil {
			t.Fatalf("decoded op %+v does not encode: %v", op, err)
		}
		if et != eventType {
			t.Fatalf("event type %q encodes as %q", eventType, et)
		}
		op2, err := Decode(et, again)
		if err != nil {
			t.Fatalf("re-encoded %s does not decode: %v", again, err)
		}
		if !reflect.DeepEqual(op, op2) {
			t.Fatalf("round trip changed the op: %+v vs %+v", op, op2)
		}
		var s State
		if err := s.Apply(op); err != nil {
			t.Fatalf("a decoded op does not apply: %v", err)
		}
	})
}

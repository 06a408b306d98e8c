package aggregate

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Config text (a group-by key, a time field, a value field, an entity id
// template) is validated without panicking; what Validate accepts, a stage
// can be made of, and its entity ids render.
func FuzzOptions(f *testing.F) {
	f.Add("tag", "t", "speed", "{region}/{tag}")
	f.Add("topic[2]", "a.b", "x.y.z", "{topic[2]}-{stage}")
	f.Add("payload.model", "", "v", "")
	f.Add("topic[-1]", "..", "", "{")
	j, err := journal.Open(f.TempDir(), journal.Options{Region: "eu"})
	if err != nil {
		f.Fatal(err)
	}
	defer j.Close()
	f.Fuzz(func(t *testing.T, key, timeField, field, template string) {
		o := Options{Name: "f", Journal: j, Window: 1e9, GroupBy: []string{key}, TimeField: timeField,
			Values: []Value{{Field: field, Ops: ops}}, Output: Output{EntityType: "s", EventType: "S", EntityID: template}}
		if o.Validate() != nil {
			return
		}
		s, err := New(o)
		if err != nil {
			t.Fatalf("Validate accepted %+v, New refused: %v", o, err)
		}
		id := s.entityID([]string{"v"})
		if template != "" && !strings.Contains(template, "{") && id != template {
			t.Errorf("template %q without placeholders rendered %q", template, id)
		}
	})
}

// Any payload is aggregated or counted as skipped; none panics.
func FuzzPayload(f *testing.F) {
	f.Add([]byte(`{"t":1000,"speed":10,"engine":{"rpm":3},"model":"m"}`))
	f.Add([]byte(`{"t":-5,"speed":1e308,"engine":{"rpm":-1e308},"model":7}`))
	f.Add([]byte(`not json`))
	f.Add([]byte(`{"t":"x"}`))
	f.Add([]byte(`{"t":1.5,"speed":null}`))
	j, err := journal.Open(f.TempDir(), journal.Options{Region: "eu"})
	if err != nil {
		f.Fatal(err)
	}
	defer j.Close()
	o := carOptions(j)
	o.GroupBy = append(o.GroupBy, "payload.model")
	f.Fuzz(func(t *testing.T, payload []byte) {
		s, err := New(o)
		if err != nil {
			t.Fatal(err)
		}
		s.cp.SeqNrs, s.open = map[string]uint64{}, map[string]*window{}
		e := &streamdv1.Event{Offset: 1, EntityType: "car", EntityId: "c", Tags: []string{"sports"}, Payload: payload}
		if err := s.add(&journal.Record{Offset: 1, Raw: mustMarshal(t, e)}); err != nil {
			t.Fatal(err)
		}
		c := s.cp.Counters
		if c.Read != 1 || c.Aggregated+c.Late+c.Skipped() != 1 {
			t.Fatalf("payload %q: counters %+v, want one event aggregated, late or skipped", payload, c)
		}
		for _, w := range s.open {
			if _, err := s.summary(w); err != nil {
				t.Fatalf("payload %q: %v", payload, err)
			}
		}
	})
}

func mustMarshal(t *testing.T, e *streamdv1.Event) []byte {
	t.Helper()
	b, err := proto.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lookup finds what decoding into maps finds, for any payload and path.
func FuzzLookup(f *testing.F) {
	f.Add([]byte(`{"a":{"b":[1,{"c":"}"}],"c":2},"a\u0062":3, "x" : "y\"z"}`), "a.c")
	f.Add([]byte(` { "t" : 1 , "t":null }`), "t")
	f.Add([]byte(`{"ab":"x","a":{"b":true}}`), "ab")
	f.Add([]byte(`[1]`), "a")
	f.Fuzz(func(t *testing.T, payload []byte, path string) {
		p, err := parsePath(path)
		if err != nil {
			return
		}
		var want json.RawMessage
		var wantOK bool
		var m map[string]json.RawMessage
		if json.Unmarshal(payload, &m) == nil && m != nil {
			for i, name := range p {
				v, ok := m[name]
				if !ok {
					break
				}
				if i == len(p)-1 {
					want, wantOK = v, string(v) != "null"
					break
				}
				m = nil
				if json.Unmarshal(v, &m) != nil || m == nil {
					break
				}
			}
		}
		if isObject(payload) != (json.Valid(payload) && json.Unmarshal(payload, &map[string]json.RawMessage{}) == nil) {
			t.Fatalf("isObject(%q) = %v", payload, isObject(payload))
		}
		if !isObject(payload) {
			return
		}
		got, ok := lookup(payload, p)
		if ok != wantOK || (ok && !bytes.Equal(got, want)) {
			t.Errorf("lookup(%q, %q) = %q, %v; decoding finds %q, %v", payload, path, got, ok, want, wantOK)
		}
	})
}

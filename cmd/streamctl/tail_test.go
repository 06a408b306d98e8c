package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// TestEventJSONHasEveryField: tail -o json prints every field of the
// proto's Event, so a field added to the proto must be added here too.
func TestEventJSONHasEveryField(t *testing.T) {
	origin := time.Date(2026, 11, 22, 10, 0, 0, 5, time.UTC)
	e := &streamdv1.Event{
		Offset: 7, EntityType: "cart", EntityId: "c1", SeqNr: 3, Slice: 9, TimestampUnixNano: origin.Add(time.Second).UnixNano(),
		Tags: []string{"a"}, Topic: "cart/c1", EventType: "Added", Payload: []byte("x"), Metadata: map[string]string{"k": "v"},
		Origin: "us", OriginSeqNr: 2, OriginTimestampUnixNano: origin.UnixNano(), VersionVector: map[string]uint64{"us": 2, "eu": 1},
		CrdtOps: []*streamdv1.CrdtOp{{Field: "items", Op: &streamdv1.CrdtOp_AddElement{AddElement: "x"}}},
	}
	var out bytes.Buffer
	tb := (&printer{w: &out, json: true}).table()
	printEvent(tb, e)
	var got map[string]any
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%s: %v", out.Bytes(), err)
	}
	// The JSON key of each proto field: times lose their _unix_nano, as
	// they print in RFC 3339.
	fields := e.ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		key := strings.TrimSuffix(string(fields.Get(i).Name()), "_unix_nano")
		if _, ok := got[key]; !ok {
			t.Errorf("field %s is missing from tail's JSON (key %q): %s", fields.Get(i).Name(), key, out.Bytes())
		}
	}
	if got["origin_timestamp"] != "2026-11-22T10:00:00.000000005Z" {
		t.Errorf("origin_timestamp = %v", got["origin_timestamp"])
	}
	if vv, _ := got["version_vector"].(map[string]any); vv["us"] != 2.0 || vv["eu"] != 1.0 {
		t.Errorf("version_vector = %v", got["version_vector"])
	}
	if ops, _ := got["crdt_ops"].([]any); len(ops) != 1 || fmt.Sprint(ops[0]) != "map[add_element:x field:items]" {
		t.Errorf("crdt_ops = %v", got["crdt_ops"])
	}
}

// Package eventjson is the JSON form of an event that `streamctl tail -o
// json` prints and the console shows: every field of the proto's Event,
// times in RFC 3339, CRDT operations as protojson prints them, and the
// payload as text when it is printable UTF-8, else in base64.
package eventjson

import (
	"encoding/base64"
	"encoding/json"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Event is an event in JSON.
type Event struct {
	Offset        uint64            `json:"offset"`
	EntityType    string            `json:"entity_type"`
	EntityID      string            `json:"entity_id"`
	SeqNr         uint64            `json:"seq_nr"`
	Slice         uint32            `json:"slice"`
	Timestamp     string            `json:"timestamp"`
	EventType     string            `json:"event_type"`
	Tags          []string          `json:"tags"`
	Topic         string            `json:"topic,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	Origin        string            `json:"origin,omitempty"`
	OriginSeqNr   uint64            `json:"origin_seq_nr,omitempty"`
	OriginTime    string            `json:"origin_timestamp,omitempty"`
	VersionVector map[string]uint64 `json:"version_vector,omitempty"`
	CrdtOps       []json.RawMessage `json:"crdt_ops,omitempty"`
	Payload       *string           `json:"payload,omitempty"`
	PayloadBase64 *string           `json:"payload_base64,omitempty"`
}

// Of is e in JSON.
func Of(e *streamdv1.Event) Event {
	j := Event{
		Offset: e.Offset, EntityType: e.EntityType, EntityID: e.EntityId, SeqNr: e.SeqNr, Slice: e.Slice,
		Timestamp: time.Unix(0, e.TimestampUnixNano).UTC().Format(time.RFC3339Nano),
		EventType: e.EventType, Tags: e.Tags, Topic: e.Topic, Metadata: e.Metadata,
		Origin: e.Origin, OriginSeqNr: e.OriginSeqNr, VersionVector: e.VersionVector,
	}
	if e.OriginTimestampUnixNano != 0 {
		j.OriginTime = time.Unix(0, e.OriginTimestampUnixNano).UTC().Format(time.RFC3339Nano)
	}
	for _, op := range e.CrdtOps {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(op)
		if err != nil { // a message this build knows always marshals
			b, _ = json.Marshal(err.Error())
		}
		j.CrdtOps = append(j.CrdtOps, b)
	}
	if j.Tags == nil {
		j.Tags = []string{}
	}
	if text, isText := PayloadText(e.Payload); isText {
		j.Payload = &text
	} else {
		j.PayloadBase64 = &text
	}
	return j
}

// PayloadText is the payload as text when it is printable UTF-8 (isText),
// else in base64.
func PayloadText(b []byte) (s string, isText bool) {
	if !utf8.Valid(b) {
		return base64.StdEncoding.EncodeToString(b), false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && r != ' ' {
			return base64.StdEncoding.EncodeToString(b), false
		}
	}
	return string(b), true
}

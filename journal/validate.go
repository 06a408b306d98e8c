package journal

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// validate refuses an append before anything is written. It returns the
// encoded size of the batch (before offsets are assigned).
func (l Limits) validate(events []*streamdv1.Event) (int, error) {
	if len(events) == 0 {
		return 0, invalid("no events")
	}
	if len(events) > l.MaxBatchEvents {
		return 0, invalid("%d events in one append exceed the limit of %d", len(events), l.MaxBatchEvents)
	}
	size := 0
	for i, e := range events {
		if e == nil {
			return 0, invalid("event %d is nil", i)
		}
		if err := l.validateEvent(e); err != nil {
			return 0, invalid("event %d (%s/%s): %v", i, e.GetEntityType(), e.GetEntityId(), err)
		}
		size += proto.Size(e) + recordRoom
	}
	if size > l.MaxBatchBytes {
		return 0, invalid("append of %d bytes exceeds the limit of %d", size, l.MaxBatchBytes)
	}
	return size, nil
}

// recordRoom is what the journal adds to an event it stores: offset,
// seqNr, slice, timestamp.
const recordRoom = 32

// MaxEventBytes is the largest event, encoded as given, that an append of
// it alone takes (MaxBatchBytes less the room the journal adds).
func (l Limits) MaxEventBytes() int { return l.MaxBatchBytes - recordRoom }

// maxRegionLen bounds region names (Options.Region, Event.origin).
const maxRegionLen = 128

type fieldError string

func (f fieldError) Error() string { return string(f) }

func checkName(what, v string, max int, required bool) error {
	switch {
	case v == "" && required:
		return fieldError(what + " is empty")
	case len(v) > max:
		return fieldError(what + " is longer than " + strconv.Itoa(max) + " bytes")
	case !utf8.ValidString(v):
		return fieldError(what + " is not valid UTF-8")
	case strings.IndexByte(v, 0) >= 0:
		return fieldError(what + " contains a NUL byte")
	}
	return nil
}

func (l Limits) validateEvent(e *streamdv1.Event) error {
	if err := checkName("entity type", e.EntityType, l.MaxEntityTypeLen, true); err != nil {
		return err
	}
	if err := checkName("entity id", e.EntityId, l.MaxEntityIDLen, true); err != nil {
		return err
	}
	if err := checkName("event type", e.EventType, l.MaxEventTypeLen, false); err != nil {
		return err
	}
	if err := checkName("topic", e.Topic, l.MaxTopicLen, false); err != nil {
		return err
	}
	if len(e.Tags) > l.MaxTags {
		return fieldError(strconv.Itoa(len(e.Tags)) + " tags exceed the limit of " + strconv.Itoa(l.MaxTags))
	}
	for _, t := range e.Tags {
		if err := checkName("tag", t, l.MaxTagLen, true); err != nil {
			return err
		}
	}
	if len(e.Metadata) > l.MaxMetadataEntries {
		return fieldError(strconv.Itoa(len(e.Metadata)) + " metadata entries exceed the limit of " + strconv.Itoa(l.MaxMetadataEntries))
	}
	md := 0
	for k, v := range e.Metadata {
		md += len(k) + len(v)
	}
	if md > l.MaxMetadataBytes {
		return fieldError("metadata of " + strconv.Itoa(md) + " bytes exceeds the limit of " + strconv.Itoa(l.MaxMetadataBytes))
	}
	if len(e.Payload) > l.MaxPayloadBytes {
		return fieldError("payload of " + strconv.Itoa(len(e.Payload)) + " bytes exceeds the limit of " + strconv.Itoa(l.MaxPayloadBytes))
	}
	if err := checkName("origin", e.Origin, maxRegionLen, false); err != nil {
		return err
	}
	if e.Origin == "" && e.OriginSeqNr != 0 {
		return fieldError("origin seqNr is set without an origin")
	}
	if e.Offset != 0 {
		return fieldError("offset is set; the journal assigns offsets")
	}
	return nil
}

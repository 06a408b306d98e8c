package journal

import (
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Record is one committed event with its stored encoding, so that a server
// can send it on without encoding it again. Records from the live ring are
// shared between readers and already decoded; records read from Badger are
// decoded on first use.
type Record struct {
	Offset uint64
	// Raw is the event's protobuf encoding. It must not be modified.
	Raw   []byte
	event *streamdv1.Event
}

// DecodeInto decodes the event into e, which it resets first, and keeps
// nothing of it: for a reader that looks at each event once, with one e for
// all of them.
func (r *Record) DecodeInto(e *streamdv1.Event) error { return decodeEvent(r.Raw, r.Offset, e) }

// Event returns the decoded event. It must not be modified.
func (r *Record) Event() (*streamdv1.Event, error) {
	if r.event == nil {
		e := new(streamdv1.Event)
		if err := decodeEvent(r.Raw, r.Offset, e); err != nil {
			return nil, err
		}
		r.event = e
	}
	return r.event, nil
}

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

// Peek returns the decoded event without keeping it: the record's own if
// it holds one (those of the live ring do), or else the event decoded into
// scratch, which it resets first. For a reader that looks at each event
// once, with one scratch for all of them; it must not modify the event,
// nor keep it past its next use of scratch.
func (r *Record) Peek(scratch *streamdv1.Event) (*streamdv1.Event, error) {
	if r.event != nil {
		return r.event, nil
	}
	return scratch, decodeEvent(r.Raw, r.Offset, scratch)
}

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

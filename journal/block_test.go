package journal

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// blockEvents encodes events (offsets from first on, one timestamp) into
// blocks and returns the events as stored and the blocks' changes.
func blockEvents(t testing.TB, first uint64, ts int64, events []*streamdv1.Event) ([]*streamdv1.Event, changes) {
	t.Helper()
	var (
		c changes
		b = blockWriter{start: -1}
	)
	for i, e := range events {
		e.Offset, e.Slice, e.TimestampUnixNano = first+uint64(i), SliceOf(e.EntityId), ts
		raw, err := b.add(&c, e)
		if err != nil {
			t.Fatal(err)
		}
		var back streamdv1.Event
		if err := proto.Unmarshal(raw, &back); err != nil || !proto.Equal(&back, e) {
			t.Fatalf("add returned an encoding of %v (%v), want %v", &back, err, e)
		}
	}
	b.flush(&c)
	return events, c
}

// walkAll decodes every event of the blocks in c from offset from on.
func walkAll(c changes, from uint64) ([]*streamdv1.Event, error) {
	var out []*streamdv1.Event
	for _, ch := range c {
		var derr error
		err := walkBlock(lastOffsetOfBlockKey(ch.key), ch.value, from, func(off uint64, raw []byte) bool {
			e := new(streamdv1.Event)
			derr = decodeEvent(raw, off, e)
			out = append(out, e)
			return derr == nil
		})
		if err := errors.Join(err, derr); err != nil {
			return out, err
		}
	}
	return out, nil
}

// A block gives back every field of every event, whatever they hold; the
// fields it stores apart (entity, event type, offset, slice, timestamp)
// included, and from any offset inside it.
func TestBlockKeepsEveryField(t *testing.T) {
	var events []*streamdv1.Event
	for i := range 600 {
		e := &streamdv1.Event{
			EntityType: []string{"order", "cart", "device"}[i%3],
			EntityId:   fmt.Sprintf("e%d", i%41),
			SeqNr:      uint64(i/41 + 1),
			Payload:    fmt.Appendf(nil, "payload %d", i),
		}
		switch i % 5 {
		case 0:
			e.EventType = "Placed"
		case 1:
			e.EventType = fmt.Sprintf("Type%d", i) // a new string every event
			e.Tags, e.Topic = []string{"a", "b"}, "t/1"
		case 2:
			e.Metadata = map[string]string{"k": "v", "trace": fmt.Sprint(i)}
		case 3:
			e.Origin, e.OriginSeqNr, e.OriginTimestampUnixNano = "eu", uint64(i), 42
			e.VersionVector = map[string]uint64{"eu": 3, "us": uint64(i)}
		case 4:
			e.CrdtOps = []*streamdv1.CrdtOp{{Field: "n", Op: &streamdv1.CrdtOp_AddCounter{AddCounter: -2}}}
		}
		events = append(events, e)
	}
	events[7].EntityId = "e-slice-0" // any slice, 0 too
	events[7].Slice = SliceOf(events[7].EntityId)
	stored, c := blockEvents(t, 1000, 1_733_000_000_123_456_789, events)
	if len(c) < 1 {
		t.Fatal("no block")
	}
	for _, from := range []uint64{0, 1000, 1001, 1299, 1599} {
		got, err := walkAll(c, from)
		if err != nil {
			t.Fatal(err)
		}
		want := stored[max(from, 1000)-1000:]
		if len(got) != len(want) {
			t.Fatalf("from %d: %d events, want %d", from, len(got), len(want))
		}
		for i := range got {
			if !proto.Equal(got[i], want[i]) {
				t.Fatalf("from %d, event %d:\n got %v\nwant %v", from, i, got[i], want[i])
			}
		}
	}
}

// A block is smaller than its events' encodings by what it leaves out.
func TestBlockLeavesOutDerivableFields(t *testing.T) {
	var events []*streamdv1.Event
	encoded := 0
	for i := range 1000 {
		e := &streamdv1.Event{EntityType: "device", EntityId: fmt.Sprintf("device-%d", 1000+i), SeqNr: 1, EventType: "Measured", Payload: make([]byte, 128)}
		events = append(events, e)
	}
	_, c := blockEvents(t, 1_000_000, 1_733_000_000_123_456_789, events)
	for _, e := range events {
		encoded += proto.Size(e)
	}
	stored := 0
	for _, ch := range c {
		stored += len(ch.value)
	}
	// Per event: payload 130, entity id 12, seqNr 2, lengths 2, string
	// references 2.
	t.Logf("%.1f bytes per event stored, %.1f encoded", float64(stored)/1000, float64(encoded)/1000)
	if perEvent := float64(stored) / 1000; perEvent > 150 {
		t.Fatalf("%.1f bytes per event stored (%d encoded), want at most 150", perEvent, encoded/1000)
	}
}

// Damaged blocks are ErrCorrupt, never a panic or a wrong event.
func TestBlockDamage(t *testing.T) {
	events := []*streamdv1.Event{
		{EntityType: "order", EntityId: "o1", SeqNr: 1, EventType: "Placed", Payload: []byte("x")},
		{EntityType: "order", EntityId: "o2", SeqNr: 1, EventType: "Placed", Payload: []byte("y")},
	}
	_, c := blockEvents(t, 10, 5, events)
	block := c[0].value
	for cut := 0; cut < len(block); cut++ {
		damaged := changes{{key: c[0].key, value: block[:cut]}}
		if _, err := walkAll(damaged, 0); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("block cut at %d of %d: %v, want ErrCorrupt", cut, len(block), err)
		}
	}
	trailing := changes{{key: c[0].key, value: append(append([]byte(nil), block...), 0)}}
	if _, err := walkAll(trailing, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("block with a trailing byte: %v, want ErrCorrupt", err)
	}
	badRef := append([]byte(nil), block...)
	badRef[blockHeader+len("order")+2+len("o1")+1] = 9 // event type: a reference past the table
	if _, err := walkAll(changes{{key: c[0].key, value: badRef}}, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("block referring past its table: %v, want ErrCorrupt", err)
	}
}

// FuzzBlock: any bytes walked as a block give ErrCorrupt or events that
// decode, never a panic; events made from the input come back equal.
func FuzzBlock(f *testing.F) {
	f.Add([]byte("order"), []byte("o1"), []byte("Placed"), []byte("payload"), uint8(3))
	f.Add([]byte{blockFormat, 0, 0, 0, 1}, []byte{}, []byte{}, []byte{0, 0}, uint8(1))
	f.Fuzz(func(t *testing.T, entityType, entityID, eventType, payload []byte, n uint8) {
		_, _ = walkAll(changes{{key: blockKey(uint64(len(payload)) + 1), value: payload}}, 0)
		if len(entityType) == 0 || len(entityID) == 0 || n == 0 {
			return
		}
		var events []*streamdv1.Event
		for i := range int(n % 16) {
			events = append(events, &streamdv1.Event{
				EntityType: string(entityType), EntityId: fmt.Sprintf("%s%d", entityID, i%3), SeqNr: uint64(i + 1),
				EventType: string(eventType[:min(len(eventType), i)]), Payload: payload,
			})
		}
		if len(events) == 0 {
			return
		}
		var (
			c changes
			b = blockWriter{start: -1}
		)
		for i, e := range events {
			e.Offset, e.Slice, e.TimestampUnixNano = uint64(i+1), SliceOf(e.EntityId), 7
			if _, err := b.add(&c, e); err != nil {
				return // not valid UTF-8: the journal refuses such events before
			}
		}
		b.flush(&c)
		got, err := walkAll(c, 0)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if !proto.Equal(got[i], events[i]) {
				t.Fatalf("event %d: got %v, want %v", i, got[i], events[i])
			}
		}
	})
}

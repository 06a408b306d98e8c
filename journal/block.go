package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Events are stored in blocks: one run of consecutive offsets of one group
// commit, kept in the WAL segment that logged it (segstore.go), with one
// Badger entry keyed by the block's last offset, so that Seek(blockKey(x))
// lands on the block holding x. A block is
//
//	[3][count uint32 BE][timestamp int64 BE] then count × event
//
// and an event
//
//	[entity type][entity id: uvarint length, bytes][event type]
//	[uvarint length][the Event's encoding without the fields below]
//
// The fields a block makes derivable are left out of the stored encoding:
// the offset (from the position in the block), the slice (from the entity
// id), the timestamp (one per group commit), and the entity id, entity type
// and event type, written before it. An entity type or event type is a
// string of the block's table: uvarint 0 and the string (uvarint length,
// bytes), which becomes the table's next entry, or uvarint k ≥ 1 for its
// k-th entry. A reader puts the fields back in front of the rest (protobuf
// takes fields in any order), so the events it returns are whole encodings.
// Blocks of format 1, written before, are [1][count uint32 BE] then count
// × [length uint32 BE][Event].
//
// Fewer, larger blocks keep Badger's per-key cost off the append path and
// make catch-up reads sequential; the table and the fields left out keep
// the bytes of an event on disk close to its payload and entity id.
const (
	blockFormat1  = 1
	blockHeader1  = 1 + 4
	blockFormat   = 3
	blockHeader   = 1 + 4 + 8
	maxBlockBytes = 256 << 10
)

func blockKey(last uint64) []byte {
	k := make([]byte, 2+8)
	copy(k, prefixEvent)
	binary.BigEndian.PutUint64(k[2:], last)
	return k
}

func lastOffsetOfBlockKey(k []byte) uint64 { return binary.BigEndian.Uint64(k[2:]) }

var (
	marshalOpts    = proto.MarshalOptions{Deterministic: true}
	errShortBlock  = fmt.Errorf("%w: truncated block", ErrCorrupt)
	errBlockFormat = fmt.Errorf("%w: unknown block format", ErrCorrupt)
)

// derived marks the Event fields a block stores apart from the rest of the
// encoding (see above).
func derived(n protowire.Number) bool {
	switch n {
	case fieldOffset, fieldEntityType, fieldEntityID, fieldSlice, fieldTimestamp, fieldEventType:
		return true
	}
	return false
}

// The Event fields blocks store apart (proto/streamd/v1/streamd.proto).
const (
	fieldOffset     protowire.Number = 1
	fieldEntityType protowire.Number = 2
	fieldEntityID   protowire.Number = 3
	fieldSlice      protowire.Number = 5
	fieldTimestamp  protowire.Number = 6
	fieldEventType  protowire.Number = 9
)

// blockWriter appends blocks to one buffer and adds each to a group's
// changes; the events' whole encodings go to another (the live ring's).
type blockWriter struct {
	buf     []byte
	encoded []byte
	start   int // start of the open block in buf, -1 if none
	count   uint32
	last    uint64
	ts      int64
	strings map[string]uint64 // the open block's table
}

// add encodes e (its offset, slice and timestamp set, the timestamp the
// group's) into the open block, and returns its whole encoding.
func (b *blockWriter) add(c *changes, e *streamdv1.Event) ([]byte, error) {
	if b.start >= 0 && len(b.buf)-b.start >= maxBlockBytes {
		b.flush(c)
	}
	if b.start < 0 {
		b.start = len(b.buf)
		b.buf = append(b.buf, blockFormat, 0, 0, 0, 0)
		b.buf = binary.BigEndian.AppendUint64(b.buf, uint64(e.TimestampUnixNano))
		b.ts, b.count = e.TimestampUnixNano, 0
		if b.strings == nil {
			b.strings = map[string]uint64{}
		}
		clear(b.strings)
	}
	if e.TimestampUnixNano != b.ts {
		return nil, fmt.Errorf("journal: event at offset %d has timestamp %d in a block of %d", e.Offset, e.TimestampUnixNano, b.ts)
	}
	at := len(b.encoded)
	var err error
	if b.encoded, err = marshalOpts.MarshalAppend(b.encoded, e); err != nil {
		return nil, err
	}
	raw := b.encoded[at:len(b.encoded):len(b.encoded)]
	// The size of the fields kept, before anything goes into the block.
	rest := 0
	for p := raw; len(p) > 0; {
		n, size := nextField(p)
		if size < 0 {
			return nil, fmt.Errorf("journal: event at offset %d: %w", e.Offset, protowire.ParseError(size))
		}
		if !derived(n) {
			rest += size
		}
		p = p[size:]
	}
	b.buf = b.appendString(b.buf, e.EntityType)
	b.buf = protowire.AppendString(b.buf, e.EntityId)
	b.buf = b.appendString(b.buf, e.EventType)
	b.buf = protowire.AppendVarint(b.buf, uint64(rest))
	for p := raw; len(p) > 0; {
		n, size := nextField(p)
		if !derived(n) {
			b.buf = append(b.buf, p[:size]...)
		}
		p = p[size:]
	}
	b.count++
	b.last = e.Offset
	return raw, nil
}

// nextField returns the number and encoded size of the field p begins
// with; size < 0 is a protowire error.
func nextField(p []byte) (protowire.Number, int) {
	n, t, tl := protowire.ConsumeTag(p)
	if tl < 0 {
		return 0, tl
	}
	vl := protowire.ConsumeFieldValue(n, t, p[tl:])
	if vl < 0 {
		return 0, vl
	}
	return n, tl + vl
}

// appendString appends s as a reference to the open block's table.
func (b *blockWriter) appendString(dst []byte, s string) []byte {
	if k, ok := b.strings[s]; ok {
		return protowire.AppendVarint(dst, k)
	}
	b.strings[s] = uint64(len(b.strings) + 1)
	return protowire.AppendString(append(dst, 0), s)
}

// flush adds the open block to c. The change refers to buf until it is
// applied, so a flushed region of buf is never written again.
func (b *blockWriter) flush(c *changes) {
	if b.start < 0 {
		return
	}
	binary.BigEndian.PutUint32(b.buf[b.start+1:], b.count)
	val := b.buf[b.start:len(b.buf):len(b.buf)]
	b.start = -1
	c.block(blockKey(b.last), val)
}

// walkBlock calls fn with the offset and whole encoding of each event of
// the block from offset `from` on, until fn returns false. The encodings
// are fn's to keep.
func walkBlock(last uint64, val []byte, from uint64, fn func(off uint64, raw []byte) bool) error {
	return walkBlockInto(last, val, from, nil, fn)
}

// walkBlockInto is walkBlock, with the encodings of a block of the current
// format appended to *into (nil: a buffer of their own), which it then
// holds; of an older format they are val's. An encoding stays valid until
// *into is reused.
func walkBlockInto(last uint64, val []byte, from uint64, into *[]byte, fn func(off uint64, raw []byte) bool) error {
	if len(val) < 1 {
		return errShortBlock
	}
	switch val[0] {
	case blockFormat:
		return walkBlock3(last, val, from, into, fn)
	case blockFormat1:
		return walkBlock1(last, val, from, fn)
	}
	return errBlockFormat
}

// blockCount reads and checks a block's count of events.
func blockCount(last uint64, val []byte, header int) (uint64, error) {
	if len(val) < header {
		return 0, errShortBlock
	}
	count := uint64(binary.BigEndian.Uint32(val[1:]))
	if count == 0 || count > last {
		return 0, fmt.Errorf("%w: block ending at offset %d claims %d events", ErrCorrupt, last, count)
	}
	return count, nil
}

func walkBlock3(last uint64, val []byte, from uint64, into *[]byte, fn func(off uint64, raw []byte) bool) error {
	count, err := blockCount(last, val, blockHeader)
	if err != nil {
		return err
	}
	ts := int64(binary.BigEndian.Uint64(val[5:]))
	first := last - count + 1
	if from > last {
		from = last + 1 // nothing to give; the block is still checked
	}
	// Room for the events from `from` on, with the fields put back.
	n := last + 1 - max(from, first)
	room := int(uint64(len(val))*n/count + n*48)
	var (
		table []string
		out   []byte
		p     = val[blockHeader:]
	)
	if into == nil {
		out = make([]byte, 0, room)
	} else {
		out = slices.Grow(*into, room)
		defer func() { *into = out }()
	}
	str := func() (string, bool) {
		k, n := protowire.ConsumeVarint(p)
		if n < 0 {
			return "", false
		}
		p = p[n:]
		if k == 0 {
			s, n := protowire.ConsumeBytes(p)
			if n < 0 {
				return "", false
			}
			p = p[n:]
			table = append(table, string(s))
			return table[len(table)-1], true
		}
		if k > uint64(len(table)) {
			return "", false
		}
		return table[k-1], true
	}
	for off := first; off <= last; off++ {
		entityType, ok1 := str()
		id, n := protowire.ConsumeBytes(p)
		if !ok1 || n < 0 {
			return errShortBlock
		}
		p = p[n:]
		eventType, ok2 := str()
		rest, n := protowire.ConsumeBytes(p)
		if !ok2 || n < 0 {
			return fmt.Errorf("%w: event at offset %d", errShortBlock, off)
		}
		p = p[n:]
		if off < from {
			continue
		}
		// Appending may move out; the encodings given to fn before stay
		// where they are.
		at := len(out)
		out = protowire.AppendTag(out, fieldOffset, protowire.VarintType)
		out = protowire.AppendVarint(out, off)
		out = protowire.AppendTag(out, fieldEntityType, protowire.BytesType)
		out = protowire.AppendString(out, entityType)
		out = protowire.AppendTag(out, fieldEntityID, protowire.BytesType)
		out = protowire.AppendBytes(out, id)
		if slice := sliceOf(id); slice != 0 {
			out = protowire.AppendTag(out, fieldSlice, protowire.VarintType)
			out = protowire.AppendVarint(out, uint64(slice))
		}
		if ts != 0 {
			out = protowire.AppendTag(out, fieldTimestamp, protowire.VarintType)
			out = protowire.AppendVarint(out, uint64(ts))
		}
		if eventType != "" {
			out = protowire.AppendTag(out, fieldEventType, protowire.BytesType)
			out = protowire.AppendString(out, eventType)
		}
		out = append(out, rest...)
		if !fn(off, out[at:len(out):len(out)]) {
			return nil
		}
	}
	if len(p) != 0 {
		return fmt.Errorf("%w: block ending at offset %d has trailing bytes", ErrCorrupt, last)
	}
	return nil
}

func walkBlock1(last uint64, val []byte, from uint64, fn func(off uint64, raw []byte) bool) error {
	count, err := blockCount(last, val, blockHeader1)
	if err != nil {
		return err
	}
	off, p := last-count+1, val[blockHeader1:]
	for ; off <= last; off++ {
		if len(p) < 4 {
			return errShortBlock
		}
		n := int(binary.BigEndian.Uint32(p))
		if len(p)-4 < n {
			return errShortBlock
		}
		raw := p[4 : 4+n]
		p = p[4+n:]
		if off >= from && !fn(off, raw) {
			return nil
		}
	}
	if len(p) != 0 {
		return fmt.Errorf("%w: block ending at offset %d has trailing bytes", ErrCorrupt, last)
	}
	return nil
}

// decodeEvent decodes one stored event and checks it is the one expected.
func decodeEvent(raw []byte, offset uint64, e *streamdv1.Event) error {
	if err := proto.Unmarshal(raw, e); err != nil {
		return fmt.Errorf("%w: event at offset %d: %v", ErrCorrupt, offset, err)
	}
	if e.Offset != offset {
		return fmt.Errorf("%w: event stored at offset %d says offset %d", ErrCorrupt, offset, e.Offset)
	}
	return nil
}

// getEvent reads the event at one offset: badger.ErrKeyNotFound if
// retention deleted it (below the floor in txn's snapshot), ErrCorrupt if
// it should be there and is not, or does not decode.
func (j *Journal) getEvent(txn *badger.Txn, offset uint64) (*streamdv1.Event, error) {
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixEvent, PrefetchValues: false})
	defer it.Close()
	it.Seek(blockKey(offset))
	if !it.Valid() {
		return nil, missingEvent(txn, offset)
	}
	var (
		e     *streamdv1.Event
		found bool
	)
	last := lastOffsetOfBlockKey(it.Item().Key())
	val, err := j.readBlock(it.Item(), nil)
	if err == nil {
		err = walkBlock(last, val, offset, func(off uint64, raw []byte) bool {
			if off != offset {
				return false // the block starts after offset
			}
			found, e = true, new(streamdv1.Event)
			if err := decodeEvent(raw, off, e); err != nil {
				e = nil
			}
			return false
		})
	}
	switch {
	case err != nil:
		return nil, err
	case !found:
		return nil, missingEvent(txn, offset)
	case e == nil:
		return nil, fmt.Errorf("%w: event at offset %d does not decode", ErrCorrupt, offset)
	}
	return e, nil
}

// missingEvent explains an offset the journal does not hold: deleted by
// retention if it is below the floor of txn's snapshot (the floor is written
// in the deletion's transaction), otherwise lost: the data is corrupt.
func missingEvent(txn *badger.Txn, offset uint64) error {
	v, err := getValue(txn, keyFloor)
	if err != nil {
		return fmt.Errorf("%w: event at offset %d is missing and the retention floor is unreadable: %v", ErrCorrupt, offset, err)
	}
	if floor := readU64(v); offset < floor {
		return badger.ErrKeyNotFound
	}
	return fmt.Errorf("%w: event at offset %d is missing (above the retention floor); a damaged file, or a table Badger could not read", ErrCorrupt, offset)
}

// indexChanges derives the index keys of a block's events in formats 1 to
// 3 (one per event, unlogged), for the replay of such a journal's WAL
// before its index is converted to runs.
func indexChanges(key, block []byte) (changes, error) {
	var (
		c    changes
		derr error
	)
	err := walkBlock(lastOffsetOfBlockKey(key), block, 0, func(off uint64, raw []byte) bool {
		var e streamdv1.Event
		if derr = decodeEvent(raw, off, &e); derr != nil {
			return false
		}
		c.set(indexKey(EntityKey(e.EntityType, e.EntityId), e.SeqNr), u64(off))
		return true
	})
	return c, errors.Join(err, derr)
}

package journal

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Events are stored in blocks: one run of consecutive offsets of one group
// commit, kept in the WAL segment that logged it (segstore.go), with one
// Badger entry keyed by the block's last offset, so that Seek(blockKey(x))
// lands on the block holding x. A block is
//
//	[format byte][count uint32 BE] then count × [length uint32 BE][Event proto]
//
// Fewer, larger blocks keep Badger's per-key cost off the append path and
// make catch-up reads sequential.
const (
	blockFormat   = 1
	blockHeader   = 5
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

// blockWriter appends blocks to one buffer and adds each to a group's
// changes.
type blockWriter struct {
	buf   []byte
	start int // start of the open block in buf, -1 if none
	count uint32
	last  uint64
}

func (b *blockWriter) add(c *changes, e *streamdv1.Event) ([]byte, error) {
	if b.start >= 0 && len(b.buf)-b.start >= maxBlockBytes {
		b.flush(c)
	}
	if b.start < 0 {
		b.start = len(b.buf)
		b.buf = append(b.buf, blockFormat, 0, 0, 0, 0)
		b.count = 0
	}
	at := len(b.buf)
	b.buf = append(b.buf, 0, 0, 0, 0)
	var err error
	if b.buf, err = marshalOpts.MarshalAppend(b.buf, e); err != nil {
		return nil, err
	}
	n := len(b.buf) - at - 4
	binary.BigEndian.PutUint32(b.buf[at:], uint32(n))
	b.count++
	b.last = e.Offset
	return b.buf[at+4 : len(b.buf) : len(b.buf)], nil
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

// walkBlock calls fn with the offset and encoding of each event of the block
// from offset `from` on, until fn returns false.
func walkBlock(last uint64, val []byte, from uint64, fn func(off uint64, raw []byte) bool) error {
	if len(val) < blockHeader {
		return errShortBlock
	}
	if val[0] != blockFormat {
		return errBlockFormat
	}
	count := uint64(binary.BigEndian.Uint32(val[1:]))
	if count == 0 || count > last {
		return fmt.Errorf("%w: block ending at offset %d claims %d events", ErrCorrupt, last, count)
	}
	off, p := last-count+1, val[blockHeader:]
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
	val, err := j.readBlock(it.Item())
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

// indexChanges derives the index entries of a block's events (what stage
// set for them, unlogged), for a recovery.
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

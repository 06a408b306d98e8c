package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"math"
	"os"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// Event blocks live in the WAL segments, written once: the frame that
// makes a batch durable is where its events stay until retention removes
// the whole segment. Badger holds, under e/<last offset>, a reference to
// the block (blockRef), so the LSM carries keys and 25-byte references,
// never payloads, and compactions never rewrite event bytes.
//
// A journal written by a build before this layout (format version 1)
// holds its blocks inline in Badger; they are read as they are and go with
// retention, while new blocks are references (readBlock tells them apart
// by their first byte).

// refFormat is the first byte of a blockRef value; an inline block begins
// with blockFormat.
const refFormat = 2

const refBytes = 1 + 8 + 8 + 4 + 4

// blockRef is where a block lives: segment, byte position of the block in
// the segment file, length, and the block's crc32c.
type blockRef struct {
	segment uint64
	pos     uint64
	length  uint32
	crc     uint32
}

func (r blockRef) encode() []byte {
	b := make([]byte, 0, refBytes)
	b = append(b, refFormat)
	b = binary.BigEndian.AppendUint64(b, r.segment)
	b = binary.BigEndian.AppendUint64(b, r.pos)
	b = binary.BigEndian.AppendUint32(b, r.length)
	return binary.BigEndian.AppendUint32(b, r.crc)
}

func decodeRef(v []byte) (blockRef, bool) {
	if len(v) != refBytes || v[0] != refFormat {
		return blockRef{}, false
	}
	return blockRef{
		segment: binary.BigEndian.Uint64(v[1:]),
		pos:     binary.BigEndian.Uint64(v[9:]),
		length:  binary.BigEndian.Uint32(v[17:]),
		crc:     binary.BigEndian.Uint32(v[21:]),
	}, true
}

// segmentFiles reads blocks from the segments, keeping up to
// maxOpenSegments of them open (closing the oldest first: reads go
// forward) and none that was removed.
type segmentFiles struct {
	dir   string // <journal>/wal
	mu    sync.RWMutex
	files map[uint64]*os.File
}

// maxOpenSegments bounds the segment files kept open for reading.
const maxOpenSegments = 64

func newSegmentFiles(dir string) *segmentFiles {
	return &segmentFiles{dir: dir, files: map[uint64]*os.File{}}
}

// errSegmentGone: the segment of a block was removed, by retention when
// the block is below the floor.
var errSegmentGone = errors.New("segment removed")

// read reads the block r refers to into buf (grown if it is too small)
// and checks it.
func (s *segmentFiles) read(r blockRef, buf []byte) ([]byte, error) {
	if cap(buf) < int(r.length) {
		buf = make([]byte, r.length)
	}
	buf = buf[:r.length]
	path := segmentPath(s.dir, r.segment)
	for {
		f, err := s.file(r.segment)
		if err != nil {
			return nil, err
		}
		s.mu.RLock()
		if s.files[r.segment] != f { // closed meanwhile: open it again
			s.mu.RUnlock()
			continue
		}
		_, err = f.ReadAt(buf, int64(r.pos))
		s.mu.RUnlock()
		if err != nil {
			return nil, fmt.Errorf("%w: read block at byte %d of WAL segment %s: %v", ErrCorrupt, r.pos, path, err)
		}
		break
	}
	if crc32.Checksum(buf, castagnoli) != r.crc {
		return nil, fmt.Errorf("%w: block at byte %d of WAL segment %s fails its checksum; restore the directory from a backup", ErrCorrupt, r.pos, path)
	}
	return buf, nil
}

func (s *segmentFiles) file(id uint64) (*os.File, error) {
	s.mu.RLock()
	f := s.files[id]
	s.mu.RUnlock()
	if f != nil {
		return f, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.files[id]; f != nil {
		return f, nil
	}
	f, err := os.Open(segmentPath(s.dir, id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errSegmentGone
	}
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	if len(s.files) >= maxOpenSegments {
		oldest := uint64(math.MaxUint64)
		for open := range s.files {
			oldest = min(oldest, open)
		}
		s.files[oldest].Close()
		delete(s.files, oldest)
	}
	s.files[id] = f
	return f, nil
}

// forget closes segment id, which is about to be removed.
func (s *segmentFiles) forget(id uint64) {
	s.mu.Lock()
	if f := s.files[id]; f != nil {
		f.Close()
		delete(s.files, id)
	}
	s.mu.Unlock()
}

func (s *segmentFiles) close() {
	s.mu.Lock()
	for id, f := range s.files {
		f.Close()
		delete(s.files, id)
	}
	s.mu.Unlock()
}

// readBlock returns the block an e/ item holds or refers to, read into buf
// if it is in a segment (nil: a new buffer). The block is the caller's.
func (j *Journal) readBlock(item *badger.Item, buf []byte) ([]byte, error) {
	var (
		ref    blockRef
		isRef  bool
		inline []byte
	)
	err := item.Value(func(v []byte) error {
		if ref, isRef = decodeRef(v); !isRef {
			inline = append([]byte(nil), v...)
		}
		return nil
	})
	if err != nil || !isRef {
		return inline, err
	}
	b, err := j.segments.read(ref, buf)
	if errors.Is(err, errSegmentGone) {
		if lastOffsetOfBlockKey(item.Key()) < j.floor.Load() {
			return nil, badger.ErrKeyNotFound // retention removed it under the reader
		}
		return nil, fmt.Errorf("%w: WAL segment %s is missing but holds events at or before offset %d, above the retention floor; restore the directory from a backup",
			ErrCorrupt, segmentPath(j.segments.dir, ref.segment), lastOffsetOfBlockKey(item.Key()))
	}
	return b, err
}

// reclaim removes the segments that hold nothing a recovery replays and
// no event retention kept: those below both the first segment a recovery
// replays and the segment of the oldest block kept. Retention's deletions
// that Badger holds but may lose in a crash are in segments a recovery
// replays, so it deletes the same blocks again.
func (j *Journal) reclaim() error {
	below := j.wal.state.replayFrom()
	err := j.db.View(func(txn *badger.Txn) error {
		live, ok, err := liveSegment(txn)
		if ok {
			below = min(below, live)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("journal: reclaim segments: %w", err)
	}
	ids, err := segments(j.segments.dir)
	if err != nil {
		return fmt.Errorf("journal: reclaim segments: %w", err)
	}
	removed := 0
	for _, id := range ids {
		if id >= below {
			break
		}
		j.segments.forget(id)
		if err := os.Remove(segmentPath(j.segments.dir, id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("journal: reclaim segments: %w", err)
		}
		removed++
	}
	if removed == 0 {
		return nil
	}
	j.opts.Logger.Debug("journal: reclaimed WAL segments", "count", removed, "below", below)
	return syncDir(j.segments.dir)
}

// liveSegment is the segment of the oldest block retention kept (the
// first block at or above the floor of txn's snapshot held by reference),
// and whether there is one: no older segment holds a live event.
func liveSegment(txn *badger.Txn) (uint64, bool, error) {
	v, err := getValue(txn, keyFloor)
	if err != nil {
		return 0, false, fmt.Errorf("retention floor: %w", err)
	}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixEvent, PrefetchValues: false})
	defer it.Close()
	for it.Seek(blockKey(readU64(v))); it.Valid(); it.Next() {
		var (
			ref   blockRef
			isRef bool
		)
		if err := it.Item().Value(func(v []byte) error { ref, isRef = decodeRef(v); return nil }); err != nil {
			return 0, false, err
		}
		if isRef {
			return ref.segment, true, nil
		}
	}
	return 0, false, nil
}

// checkSegments refuses a journal whose segments have a hole, or lack the
// one its oldest block kept is in: segments are made one after the other
// and reclaimed oldest first.
func (j *Journal) checkSegments() error {
	ids, err := segments(j.segments.dir)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	var (
		live uint64
		ok   bool
	)
	if err := j.db.View(func(txn *badger.Txn) (err error) {
		live, ok, err = liveSegment(txn)
		return err
	}); err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	missing := uint64(0)
	switch {
	case ok && (len(ids) == 0 || ids[0] > live):
		missing = live
	default:
		for i := 1; i < len(ids); i++ {
			if ids[i] != ids[i-1]+1 {
				missing = ids[i-1] + 1
				break
			}
		}
	}
	if missing == 0 {
		return nil
	}
	return fmt.Errorf("%w: WAL segment %s is missing: it holds events the journal kept; restore the directory from a backup",
		ErrCorrupt, segmentPath(j.segments.dir, missing))
}

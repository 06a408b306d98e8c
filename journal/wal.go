package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/streamd/streamd/internal/datasync"
	"github.com/streamd/streamd/internal/diskspace"
)

// The journal's write-ahead log, which is also where its events live.
// Every group's changes are written in sequence into a segment file under
// <dir>/wal and, with sync durability, fdatasync'd before they are applied
// to Badger, which runs without SyncWrites. One write and one fdatasync
// make a batch durable. An event block is written once, there: Badger gets
// a reference to where the frame holds it (segstore.go), so the segments
// stay until retention has deleted every event in them. The per-entity
// index is not logged: Open derives what Badger may lack of it from the
// blocks (index.go); journals of formats 1 to 3 derive their per-event
// index keys from each block replayed.
//
// Recovery: Badger holds everything up to the last checkpoint durably, and
// some arbitrary part of what was applied after it. Everything applied after
// it is in the segments (a change is logged before it is applied), so
// replaying every segment in order sets each key they touch to its last
// logged value, and leaves every other key as the checkpoint had it: the
// state after the last logged batch, whatever Badger kept of its tail.
//
// Recovery refuses (ErrCorrupt, naming the file and the byte) whatever it
// cannot tell from an interrupted write, rather than lose acknowledged
// appends and hand their offsets out again:
//
//   - A torn tail is only what an interrupted write leaves: in the last
//     segment, after the last whole frame, a frame cut by the end of the
//     file, or one whose trailer is missing (a write ends with its
//     trailer), or a header that does not check, each followed by nothing
//     but the segment's zero fill. It was never acknowledged (an append is
//     answered after its frame's fdatasync) and is dropped. A whole frame
//     (trailer in place) whose checksum fails, anything but zeros after a
//     bad frame, or a bad frame in an earlier segment is damage.
//   - The WAL state file (STREAMD-WAL) records the segments a recovery
//     replays: the oldest one whose changes Badger may not hold durably,
//     and the newest one created (recorded before a frame is written to
//     it). A checkpoint records the new oldest, a clean Close and a replay
//     record that none is to be replayed. A missing segment in that range
//     is refused, and so is a hole among the segments kept, or a missing
//     segment that holds the oldest block kept (checkSegments).
//   - Every batch applied to Badger sets the key m/wal to the segment and
//     the byte its frame ends at: a WAL shorter than what Badger applied
//     (cut, or a frame damaged before that point) is refused.
//
// Together with the identity file (integrity.go, the last offset at a
// clean Close) this keeps the next offset above every offset acknowledged,
// within what a process crash and damage to the WAL can do. What it cannot
// see: frames acknowledged but not yet applied to Badger (a few batches
// at most), cut off at a frame boundary or deleted with the state file; and
// after a power loss that also took Badger's memtable log, a WAL cut at a
// frame boundary.
//
// Checkpoint: once a segment is closed, or an Update waits, the journal
// makes Badger durable (syncBadger) and records in the state file where a
// recovery starts: the next segment, or the byte of the current one where
// the Update's batch ends (from=), so an Update closes no segment. Writes
// to Badger that are not logged (Update) wait for it, so that no older
// logged change is replayed over them. A checkpoint
// then reclaims (removes) the segments below both the first one a
// recovery replays and the one holding the oldest block retention kept:
// retention's deletions that Badger may still lose in a crash are in
// segments a recovery replays, so they are made again.
//
// A segment begins with a header, written with its first frame:
//
//	"SDWAL\x00\x00\x02" | segment id uint64 | crc32c(magic, id) uint32
//
// then holds a sequence of frames, one per fsync'd batch:
//
//	length uint32 | crc32c(payload) uint32 | hsum uint32 | payload | hsum uint32
//
// where hsum is crc32c(length, crc32c(payload)), and a payload a sequence
// of changes: a kind byte (0 set, 1 delete, 2 event block), the key
// (uvarint length, bytes) and for a set or a block the value (the same
// way). A block's reference in Badger names the segment, the byte its
// value begins at, its length and its crc32c.

// walDirName is the directory of the segments inside the journal directory.
const walDirName = "wal"

// defaultSegmentBytes is the size past which a segment is closed and
// checkpointed; retention reclaims disk a segment at a time.
const defaultSegmentBytes = 4 << 20

// Segments are written into files filled with zeros beforehand (spares,
// made in the background): a write into allocated blocks changes no file
// metadata, so its fdatasync is one disk write, not two (measured on this
// machine: 190-210 µs against 290-420 µs for an append to the file's end).
// Zeros end the replay like the end of a file: no frame has length 0.
// A spare is named as the next segment and recorded in the state file as
// soon as it is filled, so that starting it (rotate) is a swap of files on
// the writer, not a rename and three fsyncs; a recovery takes the end
// of the last segment written for a torn write when only such empty
// segments follow it, then removes them and cuts that segment at its last
// frame (endReplay), as a clean Close cuts the segment it ends.

const (
	frameHeader  = 12
	frameTrailer = 4
	segHeader    = 20
)

var segMagic = []byte("SDWAL\x00\x00\x02")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// change is one write to Badger.
type change struct {
	key, value []byte
	delete     bool
	// block: value is an event block, which stays in the segment; Badger
	// gets a blockRef to it once it is logged (wal.write, recoverWAL).
	block bool
	// derived: not logged; Open derives it from the blocks (a flush of
	// the index: index.go).
	derived bool
	at      int // decodeChanges: where value begins in the payload
}

// The kind byte of a change in a frame.
const (
	kindSet    = 0
	kindDelete = 1
	kindBlock  = 2
)

// changes are what one group writes to Badger, in order.
type changes []change

func (c *changes) set(key, value []byte) { *c = append(*c, change{key: key, value: value}) }
func (c *changes) del(key []byte)        { *c = append(*c, change{key: key, delete: true}) }
func (c *changes) block(key, value []byte) {
	*c = append(*c, change{key: key, value: value, block: true})
}

// stage adds the change to txn.
func (ch change) stage(txn *badger.Txn) error {
	if ch.delete {
		return txn.Delete(ch.key)
	}
	return txn.Set(ch.key, ch.value)
}

// stage adds the changes to txn.
func (c changes) stage(txn *badger.Txn) error {
	for _, ch := range c {
		if err := ch.stage(txn); err != nil {
			return err
		}
	}
	return nil
}

func (c changes) appendTo(b []byte) []byte {
	for _, ch := range c {
		b, _ = ch.appendTo(b)
	}
	return b
}

// appendTo appends the change to b, and returns where its value begins
// in b.
func (ch change) appendTo(b []byte) ([]byte, int) {
	kind := byte(kindSet)
	switch {
	case ch.delete:
		kind = kindDelete
	case ch.block:
		kind = kindBlock
	}
	b = append(b, kind)
	b = binary.AppendUvarint(b, uint64(len(ch.key)))
	b = append(b, ch.key...)
	if ch.delete {
		return b, len(b)
	}
	b = binary.AppendUvarint(b, uint64(len(ch.value)))
	return append(b, ch.value...), len(b)
}

// decodeChanges decodes a frame's payload; the changes point into p.
func decodeChanges(p []byte) (changes, error) {
	var c changes
	size := len(p)
	bytesOf := func() ([]byte, error) {
		n, k := binary.Uvarint(p)
		if k <= 0 || n > uint64(len(p)-k) {
			return nil, errors.New("length runs past the frame")
		}
		b := p[k : k+int(n) : k+int(n)]
		p = p[k+int(n):]
		return b, nil
	}
	for len(p) > 0 {
		kind := p[0]
		p = p[1:]
		if kind > kindBlock {
			return nil, fmt.Errorf("change kind %d", kind)
		}
		key, err := bytesOf()
		if err != nil {
			return nil, err
		}
		ch := change{key: key, delete: kind == kindDelete, block: kind == kindBlock}
		if !ch.delete {
			if ch.value, err = bytesOf(); err != nil {
				return nil, err
			}
			ch.at = size - len(p) - len(ch.value)
		}
		c = append(c, ch)
	}
	return c, nil
}

// wal appends frames to the current segment. It is used by writeLoop, and
// prepare runs beside it.
type wal struct {
	dir          string // <journal>/wal
	segmentBytes int64
	f            *os.File
	id           uint64 // the current segment
	state        *walState
	size         int64 // bytes written to it
	prefilled    bool  // it was a spare
	sync         bool  // fdatasync each frame (DurabilitySync)
	buf          []byte

	// mu orders rotate and prepare's naming of a spare: id changes, and a
	// spare is named id+1, under it.
	mu       sync.Mutex
	spares   chan *os.File // the spare made by prepare and named id+1, if it is ready
	taken    chan struct{} // rotate took it: prepare makes the next
	minFree  int64         // prepare keeps this much space free on the filesystem
	log      *slog.Logger
	stop     chan struct{}
	stopOnce sync.Once
	prepared chan struct{} // closed when prepare returns
}

func segmentPath(dir string, id uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d.wal", id))
}

// segments lists the segment ids in dir, in order.
func segments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".wal")
		if !ok {
			continue
		}
		id, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: not a WAL segment name", ErrCorrupt, e.Name())
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, nil
}

// recoverWAL replays the segments of the journal in dir into db, makes db
// durable and removes them. It returns the WAL state, for the next segment.
func recoverWAL(db *badger.DB, dir string, deriveIndex bool, log *slog.Logger) (*walState, error) {
	wdir := filepath.Join(dir, walDirName)
	st, found, err := readWALState(dir)
	if err != nil {
		return nil, err
	}
	applied, marked, err := appliedMark(db)
	if err != nil {
		return nil, err
	}
	if marked && !found {
		return nil, fmt.Errorf("%w: %s is missing but Badger holds changes logged to WAL segment %d: the WAL directory was removed or replaced; acknowledged appends may be lost; restore the directory from a backup",
			ErrCorrupt, st.path, applied.segment)
	}
	ids, err := segments(wdir)
	if err != nil {
		return nil, err
	}
	for id := st.first; id <= st.last; id++ {
		if _, ok := slices.BinarySearch(ids, id); !ok {
			return nil, fmt.Errorf("%w: WAL segment %s is missing (%s needs segments %d to %d): acknowledged appends may be lost; restore the directory from a backup",
				ErrCorrupt, segmentPath(wdir, id), st.path, st.first, st.last)
		}
	}
	if marked && applied.segment >= st.first {
		if _, ok := slices.BinarySearch(ids, applied.segment); !ok {
			return nil, fmt.Errorf("%w: WAL segment %s is missing but Badger applied frames of it: acknowledged appends may be lost; restore the directory from a backup",
				ErrCorrupt, segmentPath(wdir, applied.segment))
		}
	}
	if len(ids) == 0 {
		return st, nil
	}
	frames, changed := 0, 0
	ends := map[uint64]int{} // per segment replayed, the end of its frames (0: none, not even a header)
	txn := db.NewTransaction(true)
	defer func() { txn.Discard() }()
	apply := func(ch change) error {
		err := ch.stage(txn)
		if errors.Is(err, badger.ErrTxnTooBig) {
			// A replay need not be atomic: a crash during it replays
			// everything again.
			if err := txn.Commit(); err != nil {
				return err
			}
			txn = db.NewTransaction(true)
			err = ch.stage(txn)
		}
		return err
	}
	for i, id := range ids {
		if id < st.first {
			continue // Badger holds its changes durably: it is kept for its events
		}
		path := segmentPath(wdir, id)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		end, err := checkSegHeader(data, id, path)
		if err != nil {
			return nil, err
		}
		if id == st.first && st.from > uint64(end) {
			// Badger holds what is logged before it durably (an Update's checkpoint).
			if st.from > uint64(len(data)) {
				return nil, fmt.Errorf("%w: WAL segment %s has %d bytes but %s says Badger holds what was logged up to byte %d: the segment was cut short; acknowledged appends may be lost; restore the directory from a backup",
					ErrCorrupt, path, len(data), st.path, st.from)
			}
			end = int(st.from)
		}
		for pos := end; pos < len(data); {
			payload, next, ok := frameAt(data, pos)
			if !ok {
				if allZero(data[pos:]) {
					break // the end of what was written into a spare
				}
				later, err := writtenAfter(wdir, ids[i+1:])
				if err != nil {
					return nil, err
				}
				if later || !tornAt(data, pos) {
					return nil, damaged(path, data, pos, later)
				}
				// The end of the last segment: a write never acknowledged.
				log.Warn("journal: dropped the unfinished end of the WAL (never acknowledged)",
					"segment", path, "at", pos, "bytes", len(data)-pos)
				break
			}
			c, err := decodeChanges(payload)
			if err != nil {
				return nil, fmt.Errorf("%w: WAL segment %s: frame at byte %d: %v", ErrCorrupt, path, pos, err)
			}
			for _, ch := range c {
				var index changes
				if ch.block && deriveIndex {
					if index, err = indexChanges(ch.key, ch.value); err != nil {
						return nil, fmt.Errorf("%w: WAL segment %s: frame at byte %d: %v", ErrCorrupt, path, pos, err)
					}
				}
				if ch.block {
					ref := blockRef{segment: id, pos: uint64(pos + frameHeader + ch.at), length: uint32(len(ch.value)),
						crc: crc32.Checksum(ch.value, castagnoli)}
					ch = change{key: ch.key, value: ref.encode()}
				}
				for _, ch := range append(changes{ch}, index...) {
					if err := apply(ch); err != nil {
						return nil, fmt.Errorf("journal: replay WAL segment %s: %w", path, err)
					}
				}
			}
			frames, changed = frames+1, changed+len(c)
			pos, end = next, next
		}
		if marked && applied.segment == id && end < int(applied.end) {
			return nil, fmt.Errorf("%w: WAL segment %s: valid frames end at byte %d but Badger applied frames up to byte %d: the segment was cut short or damaged; acknowledged appends may be lost; restore the directory from a backup",
				ErrCorrupt, path, end, applied.end)
		}
		ends[id] = end
	}
	if err := txn.Commit(); err != nil {
		return nil, fmt.Errorf("journal: replay WAL: %w", err)
	}
	if err := syncBadger(db, dir); err != nil {
		return nil, fmt.Errorf("journal: sync after WAL replay: %w", err)
	}
	if err := endReplay(wdir, st, ids, ends); err != nil {
		return nil, err
	}
	log.Info("journal: replayed the WAL", "segments", len(ids), "batches", frames, "changes", changed)
	return st, nil
}

// endReplay records that the replay made Badger durable up to the last
// segment written, and removes what a crash leaves after its last frame:
// the spares named after it, which hold nothing (ends[id] == 0), and its
// own zero fill (or torn write) past its frames. Kept, they would take
// disk until retention passed them, each crash again. The one save of the
// state that records the replay also ends it before those spares, so it
// never names a segment removed, and nothing is replayed from the one cut.
func endReplay(wdir string, st *walState, ids []uint64, ends map[uint64]int) error {
	k := len(ids)
	for k > 0 {
		if end, ok := ends[ids[k-1]]; !ok || end > 0 {
			break
		}
		k--
	}
	if k < len(ids) {
		if err := st.end(ids[k] - 1); err != nil {
			return err
		}
	} else {
		st.last = max(st.last, ids[len(ids)-1])
		if err := st.advance(walPos{segment: st.last + 1}); err != nil {
			return err
		}
	}
	for _, id := range ids[k:] {
		if err := os.Remove(segmentPath(wdir, id)); err != nil {
			return fmt.Errorf("journal: remove empty WAL segment: %w", err)
		}
	}
	if k == 0 {
		return nil
	}
	end, ok := ends[ids[k-1]]
	if !ok {
		return nil // not replayed: cut at its Close
	}
	f, err := os.OpenFile(segmentPath(wdir, ids[k-1]), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("journal: cut WAL segment at its last frame: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("journal: cut WAL segment at its last frame: %w", err)
	}
	if fi.Size() <= int64(end) {
		return nil
	}
	if err := f.Truncate(int64(end)); err != nil {
		return fmt.Errorf("journal: cut WAL segment at its last frame: %w", err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("journal: cut WAL segment at its last frame: %w", err)
	}
	return nil
}

// writtenAfter reports whether any of the segments ids holds more than
// zeros: a spare named and never written does not (see prepare).
func writtenAfter(wdir string, ids []uint64) (bool, error) {
	for _, id := range ids {
		data, err := os.ReadFile(segmentPath(wdir, id))
		if err != nil {
			return false, err
		}
		if !allZero(data) {
			return true, nil
		}
	}
	return false, nil
}

// damaged describes damage at pos of a segment, where no valid frame
// begins: what follows it, and what to do.
func damaged(path string, data []byte, pos int, later bool) error {
	what := "and later segments follow"
	switch {
	case later:
	case validFrameAfter(data, pos):
		what = "and valid frames follow it"
	default:
		if n, hsum, ok := headerAt(data, pos); ok && pos+frameHeader+n+frameTrailer <= len(data) &&
			binary.BigEndian.Uint32(data[pos+frameHeader+n:]) == hsum {
			what = fmt.Sprintf("a whole frame of %d bytes whose checksum fails (if the machine lost power while writing it, it was never acknowledged: cut it off with `truncate -s %d %s` to open without it)",
				frameHeader+n+frameTrailer, pos, path)
		} else {
			what = "and data other than the segment's zero fill follows"
		}
	}
	return fmt.Errorf("%w: WAL segment %s: damaged frame at byte %d of %d, %s: acknowledged appends may be lost; restore the directory from a backup",
		ErrCorrupt, path, pos, len(data), what)
}

// validFrameAfter reports whether a valid frame begins anywhere after pos.
func validFrameAfter(data []byte, pos int) bool {
	for p := pos + 1; p+frameHeader+frameTrailer < len(data); p++ {
		if _, _, ok := frameAt(data, p); ok {
			return true
		}
	}
	return false
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// headerAt returns the payload length and hsum of the frame header at pos,
// if a whole valid one is there.
func headerAt(data []byte, pos int) (n int, hsum uint32, ok bool) {
	if len(data)-pos < frameHeader {
		return 0, 0, false
	}
	h := data[pos : pos+frameHeader]
	hsum = binary.BigEndian.Uint32(h[8:])
	if crc32.Checksum(h[:8], castagnoli) != hsum {
		return 0, 0, false
	}
	return int(binary.BigEndian.Uint32(h)), hsum, true
}

// frameAt returns the payload of the frame at pos and the position after
// it, if a whole valid frame is there.
func frameAt(data []byte, pos int) (payload []byte, next int, ok bool) {
	n, hsum, ok := headerAt(data, pos)
	if !ok || n == 0 || n > len(data)-pos-frameHeader-frameTrailer {
		return nil, 0, false
	}
	payload = data[pos+frameHeader : pos+frameHeader+n]
	next = pos + frameHeader + n + frameTrailer
	if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(data[pos+4:]) ||
		binary.BigEndian.Uint32(data[next-frameTrailer:]) != hsum {
		return nil, 0, false
	}
	return payload, next, true
}

// tornAt reports whether the bytes from pos, where no valid frame begins,
// are what an interrupted write of one frame leaves: a write fills a frame
// from its header to its trailer, so a frame that was cut by the end of the
// file or lacks its trailer, or a header that does not check, each with
// only zeros after it. A whole frame with a wrong checksum is damage.
func tornAt(data []byte, pos int) bool {
	n, hsum, ok := headerAt(data, pos)
	if !ok {
		return allZero(data[min(pos+frameHeader, len(data)):])
	}
	end := pos + frameHeader + n + frameTrailer
	if n == 0 || end > len(data) {
		return n > 0
	}
	return binary.BigEndian.Uint32(data[end-frameTrailer:]) != hsum && allZero(data[end:])
}

// appendSegHeader appends the header of segment id to b.
func appendSegHeader(b []byte, id uint64) []byte {
	start := len(b)
	b = append(b, segMagic...)
	b = binary.BigEndian.AppendUint64(b, id)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// checkSegHeader checks the header of segment id and returns where its
// frames begin. A segment with no frame yet is empty or all zeros.
func checkSegHeader(data []byte, id uint64, path string) (int, error) {
	if allZero(data[:min(segHeader, len(data))]) {
		if !allZero(data) {
			return 0, fmt.Errorf("%w: WAL segment %s has no header but holds data: damaged, or written by an older streamd (open it with that version and close it cleanly); acknowledged appends may be lost; restore the directory from a backup",
				ErrCorrupt, path)
		}
		return 0, nil
	}
	if len(data) < segHeader || !bytes.Equal(data[:len(segMagic)], segMagic) ||
		crc32.Checksum(data[:segHeader-4], castagnoli) != binary.BigEndian.Uint32(data[segHeader-4:]) {
		return 0, fmt.Errorf("%w: WAL segment %s: damaged header at byte 0 (its first %d bytes), or not a segment of this streamd version; acknowledged appends may be lost; restore the directory from a backup",
			ErrCorrupt, path, segHeader)
	}
	if got := binary.BigEndian.Uint64(data[len(segMagic):]); got != id {
		return 0, fmt.Errorf("%w: WAL segment %s holds segment %d (renamed or copied over?); restore the directory from a backup",
			ErrCorrupt, path, got)
	}
	return segHeader, nil
}

// walMark is where the last batch applied to Badger was logged: the value
// of keyWAL.
type walMark struct {
	segment uint64
	end     uint64 // the byte its frame ends at
}

// markBytes is the size of keyWAL's change in a payload.
const markBytes = 1 + 1 + 5 + 1 + 16

func (m walMark) change() change {
	v := binary.BigEndian.AppendUint64(nil, m.segment)
	return change{key: keyWAL, value: binary.BigEndian.AppendUint64(v, m.end)}
}

// appliedMark reads keyWAL from db.
func appliedMark(db *badger.DB) (m walMark, found bool, err error) {
	err = db.View(func(txn *badger.Txn) error {
		v, err := getValue(txn, keyWAL)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(v) != 16 {
			return fmt.Errorf("%w: key %s has %d bytes", ErrCorrupt, keyWAL, len(v))
		}
		m, found = walMark{binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])}, true
		return nil
	})
	if err != nil {
		return walMark{}, false, fmt.Errorf("journal: read the WAL mark: %w", err)
	}
	return m, found, nil
}

// walStateFile, in the journal directory, records the segments the journal
// needs.
const walStateFile = "STREAMD-WAL"

// walState is the content of the WAL state file: every segment from first
// to last is needed (none when first > last), segment first from byte
// from on (0: all of it). rotate raises last, a checkpoint first and from.
type walState struct {
	mu          sync.Mutex
	dir         string // <journal>/wal
	path        string // <journal>/STREAMD-WAL
	first, last uint64
	from        uint64
}

// walPos is a place in the WAL: a segment, and a byte of it where a frame
// ends.
type walPos struct {
	segment, byte uint64
}

// readWALState reads the state file of the journal in dir; without one, no
// segment is needed.
func readWALState(dir string) (*walState, bool, error) {
	st := &walState{dir: filepath.Join(dir, walDirName), path: filepath.Join(dir, walStateFile), first: 1}
	raw, err := os.ReadFile(st.path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("journal: %w", err)
	}
	var first, last bool
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		switch k {
		case "first":
			st.first, err = strconv.ParseUint(v, 10, 64)
			first = true
		case "last":
			st.last, err = strconv.ParseUint(v, 10, 64)
			last = true
		case "from":
			st.from, err = strconv.ParseUint(v, 10, 64)
		}
		if err != nil {
			return nil, false, fmt.Errorf("%w: %s: line %q: %v; restore the directory from a backup", ErrCorrupt, st.path, line, err)
		}
	}
	if !first || !last {
		return nil, false, fmt.Errorf("%w: %s lacks first= or last=; restore the directory from a backup", ErrCorrupt, st.path)
	}
	return st, true, nil
}

// save replaces the state file atomically and durably. Called with mu
// held.
func (st *walState) save() error {
	content := fmt.Sprintf("# streamd WAL: the segments a recovery replays (none when first > last), the first from byte from\nfirst=%d\nlast=%d\nfrom=%d\n", st.first, st.last, st.from)
	if err := replaceFile(st.path, content); err != nil {
		return fmt.Errorf("journal: write %s: %w", st.path, err)
	}
	return nil
}

// created records segment id as the newest, once it is durably there and
// before a frame is written to it.
func (st *walState) created(id uint64) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.first > st.last { // none needed until now
		st.first, st.from = id, 0
	}
	st.last = id
	return st.save()
}

// advance records that Badger holds durably every change logged before p:
// a recovery replays from p on (the segments before stay for their
// events, until retention reclaims them).
func (st *walState) advance(p walPos) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if p.segment < st.first || p.segment == st.first && p.byte <= st.from {
		return nil
	}
	st.first, st.from = p.segment, p.byte
	return st.save()
}

// end records that no segment is to be replayed, id being the last one
// written (a spare named after it is not needed any more).
func (st *walState) end(id uint64) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.first, st.from, st.last = id+1, 0, id
	return st.save()
}

// replayFrom is the first segment a recovery would replay.
func (st *walState) replayFrom() uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.first
}

// openWAL starts the segment after st.last in the journal directory dir,
// and the making of spares.
func openWAL(dir string, st *walState, opts Options) (*wal, error) {
	w := &wal{
		dir: filepath.Join(dir, walDirName), segmentBytes: opts.segmentBytes, id: st.last, state: st,
		spares: make(chan *os.File, 1), taken: make(chan struct{}, 1),
		minFree: opts.MinFreeBytes, log: opts.Logger, sync: opts.Durability == DurabilitySync,
		stop: make(chan struct{}), prepared: make(chan struct{}),
	}
	if err := os.MkdirAll(w.dir, 0o750); err != nil {
		return nil, fmt.Errorf("journal: create %s: %w", w.dir, err)
	}
	// Spares left by a crash: made again.
	old, err := filepath.Glob(filepath.Join(w.dir, "*.spare"))
	if err != nil {
		return nil, err
	}
	for _, path := range old {
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("journal: remove spare WAL segment: %w", err)
		}
	}
	if err := w.rotate(); err != nil {
		return nil, err
	}
	go w.prepare()
	return w, nil
}

// prepare keeps one spare segment ready, while the filesystem has room
// for it beyond minFree (when it has not, a segment is begun empty).
func (w *wal) prepare() {
	defer close(w.prepared)
	warned := false
	for n := 0; ; n++ {
		path := filepath.Join(w.dir, fmt.Sprintf("%d.spare", n))
		f, err := w.fill(path)
		if err == nil {
			// Left in place if it fails after the rename: a segment of
			// zeros, which rotate may start.
			err = w.name(f)
		}
		if err != nil {
			if f != nil {
				f.Close()
				os.Remove(path)
			}
			if !errors.Is(err, errStopped) && !warned {
				w.log.Warn("journal: cannot prepare a WAL segment; segments begin empty until it can", "err", err)
				warned = true
			}
			select {
			case <-w.stop:
				return
			case <-time.After(time.Second):
				continue
			}
		}
		warned = false
		select {
		case <-w.taken:
		case <-w.stop:
			return // close keeps it: the state file names it
		}
	}
}

var errStopped = errors.New("stopped")

// name makes a filled spare the next segment, renamed to its name and
// recorded in the state file durably, and hands it to rotate, in one step
// under mu: rotate finds it ready, or a segment of that name does not exist
// yet.
func (w *wal) name(f *os.File) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := os.Rename(f.Name(), segmentPath(w.dir, w.id+1)); err != nil {
		return err
	}
	if err := syncDir(w.dir); err != nil {
		return err
	}
	if err := w.state.created(w.id + 1); err != nil {
		return err
	}
	w.spares <- f // never blocks: the one before was taken
	return nil
}

// fill makes a file of segmentBytes zeros at path.
func (w *wal) fill(path string) (*os.File, error) {
	free, err := diskspace.Free(w.dir)
	if err != nil {
		return nil, err
	}
	if free-w.segmentBytes < w.minFree {
		return nil, fmt.Errorf("%d MiB free, %d MiB kept in reserve", free>>20, w.minFree>>20)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return nil, err
	}
	zeros := make([]byte, writeBackChunk)
	for off := int64(0); off < w.segmentBytes; off += writeBackChunk {
		select {
		case <-w.stop:
			return f, errStopped
		default:
		}
		if _, err := f.Write(zeros[:min(writeBackChunk, w.segmentBytes-off)]); err != nil {
			return f, err
		}
		if err := writeBack(f, off, writeBackChunk); err != nil {
			return f, err
		}
	}
	return f, f.Sync()
}

// writeBackChunk is the piece of a large sync (see writeBack).
const writeBackChunk = 1 << 20

// write appends one frame of the group's changes and makes it durable.
// The group also sets keyWAL to where the frame ends (see walMark).
func (w *wal) write(g *group) error {
	w.buf = w.buf[:0]
	if w.size == 0 {
		w.buf = appendSegHeader(w.buf, w.id)
	}
	start := len(w.buf)
	w.buf = append(w.buf, make([]byte, frameHeader)...)
	for i, ch := range g.changes {
		if ch.derived {
			continue
		}
		var at int
		w.buf, at = ch.appendTo(w.buf)
		if ch.block {
			// From here on Badger gets the reference: the block stays in
			// the segment, where it is now.
			ref := blockRef{segment: w.id, pos: uint64(w.size) + uint64(at), length: uint32(len(ch.value)),
				crc: crc32.Checksum(ch.value, castagnoli)}.encode()
			g.changes[i] = change{key: ch.key, value: ref}
		}
	}
	if len(w.buf) == start+frameHeader {
		return nil
	}
	end := w.size + int64(len(w.buf)+markBytes+frameTrailer)
	mark := walMark{segment: w.id, end: uint64(end)}.change()
	g.changes = append(g.changes, mark)
	g.cost, g.entries = g.cost+entryCost(mark.key, mark.value), g.entries+1
	w.buf = changes{mark}.appendTo(w.buf)
	h := w.buf[start : start+frameHeader]
	binary.BigEndian.PutUint32(h, uint32(len(w.buf)-start-frameHeader))
	binary.BigEndian.PutUint32(h[4:], crc32.Checksum(w.buf[start+frameHeader:], castagnoli))
	hsum := crc32.Checksum(h[:8], castagnoli)
	binary.BigEndian.PutUint32(h[8:], hsum)
	w.buf = binary.BigEndian.AppendUint32(w.buf, hsum)
	if _, err := w.f.WriteAt(w.buf, w.size); err != nil {
		return fmt.Errorf("write WAL segment %s: %w", w.f.Name(), err)
	}
	w.size += int64(len(w.buf))
	if cap(w.buf) > 4*maxGroupBytes {
		w.buf = nil
	}
	if !w.sync {
		return nil
	}
	if err := datasync.File(w.f); err != nil {
		return fmt.Errorf("fdatasync WAL segment %s: %w", w.f.Name(), err)
	}
	return nil
}

// full reports whether the current segment is full: it is then closed
// and checkpointed.
func (w *wal) full() bool { return w.size >= w.segmentBytes }

// spareReady reports whether the current segment was begun empty and a
// spare is ready now: the next batch is written faster there.
func (w *wal) spareReady() bool { return !w.prefilled && len(w.spares) > 0 }

// rotate closes the current segment, if any, and starts the next one, in a
// spare if one is ready (already named and recorded).
func (w *wal) rotate() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	var f *os.File
	prefilled := false
	select {
	case f = <-w.spares:
		w.taken <- struct{}{}
		prefilled = true
	default:
		// A spare whose naming failed may be there already: zeros.
		var err error
		if f, err = os.OpenFile(segmentPath(w.dir, w.id+1), os.O_CREATE|os.O_WRONLY, 0o640); err != nil {
			return fmt.Errorf("start WAL segment: %w", err)
		}
		// The segment, and then the state naming it, must be found after
		// a crash before a frame in it is acknowledged.
		if err := syncDir(w.dir); err != nil {
			f.Close()
			return err
		}
		if err := w.state.created(w.id + 1); err != nil {
			f.Close()
			return fmt.Errorf("start WAL segment: %w", err)
		}
	}
	if w.f != nil {
		w.f.Close()
	}
	w.f, w.id, w.size, w.prefilled = f, w.id+1, 0, prefilled
	return nil
}

// end records, at a clean Close once Badger is durable, that no segment is
// to be replayed, and removes the spare named next.
func (w *wal) end() error {
	w.stopPrepare()
	if err := w.state.end(w.id); err != nil {
		return err
	}
	select {
	case f := <-w.spares:
		f.Close()
		// Not named by the state any more: a crash before the removal
		// leaves a segment of zeros, which a recovery passes over.
		if err := os.Remove(segmentPath(w.dir, w.id+1)); err != nil {
			return err
		}
	default:
	}
	return nil
}

// stopPrepare stops prepare; a second call does nothing.
func (w *wal) stopPrepare() {
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.prepared
}

// close stops prepare. A spare it named stays when end was not called
// (the journal failed): the state file names it.
func (w *wal) close() {
	w.stopPrepare()
	select {
	case f := <-w.spares:
		f.Close()
	default:
	}
	w.f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// openFiles opens the files in dir that match pattern, skipping one
// removed meanwhile. The caller closes them, also on an error.
func openFiles(dir, pattern string) ([]*os.File, error) {
	paths, err := filepath.Glob(filepath.Join(dir, pattern))
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for _, path := range paths {
		f, err := os.Open(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return files, err
		}
		files = append(files, f)
	}
	return files, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// syncBadger makes durable everything committed to Badger before it was
// called. DB.Sync fsyncs the WAL of the active memtable (and the value
// log); a memtable retired and not yet written to a table has a WAL of its
// own, which Badger fsyncs only once the table is written: fsync every
// memtable WAL there is. One that Badger removes meanwhile was written to a
// table, durably. The memtable WALs are written back a piece at a time
// first, so that appends logged meanwhile wait behind a piece, not behind
// the megabytes written since the last checkpoint.
func syncBadger(db *badger.DB, dir string) error {
	files, err := openFiles(dir, "*.mem")
	defer closeFiles(files)
	if err != nil {
		return err
	}
	for _, f := range files {
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		for off := int64(0); off < fi.Size(); off += writeBackChunk {
			if err := writeBack(f, off, writeBackChunk); err != nil {
				return fmt.Errorf("write back memtable WAL %s: %w", f.Name(), err)
			}
		}
	}
	if err := db.Sync(); err != nil {
		return err
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync memtable WAL %s: %w", f.Name(), err)
		}
	}
	return nil
}

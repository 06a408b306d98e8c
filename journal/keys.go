package journal

import (
	"encoding/binary"
	"fmt"
)

// Key layout (big-endian numbers, so key order is numeric order):
//
//	e/<last offset>                -> reference to a block of encoded events in a WAL segment (block.go, segstore.go)
//	i/<type>\x00<id>\x00<seqNr>    -> offsets of the entity's events from seqNr on (a run of the index: index.go)
//	s/<type>\x00<id>               -> last seqNr of an entity whose newest events retention deleted
//	t/<type>                       -> (empty) an entity type the journal holds
//	o/<origin>\x00<type>\x00<id>    -> last origin seqNr of an entity from an origin region
//	m/id                           -> 16-byte journal id
//	m/version                      -> format version
//	m/floor                        -> first offset retention has not deleted
//	m/bytes                        -> encoded bytes of the stored events
//	m/wal                          -> WAL segment and byte the last applied batch's frame ends at (wal.go)
//	m/indexed                      -> last offset whose index entries Badger holds (index.go)
//	n/<type>\x00<id>\x00<seqNr>    -> offset: the index of formats 1 to 3, converted to runs at Open
var (
	prefixEvent  = []byte("e/")
	prefixRun    = []byte("i/")
	prefixIndex  = []byte("n/") // formats 1 to 3
	prefixSeq    = []byte("s/")
	prefixType   = []byte("t/")
	prefixOrigin = []byte("o/")
	keyID        = []byte("m/id")
	keyVersion   = []byte("m/version")
	keyFloor     = []byte("m/floor")
	keyBytes     = []byte("m/bytes")
	keyWAL       = []byte("m/wal")
	keyIndexed   = []byte("m/indexed")
	// formatVersion 4: the index is kept in runs (index.go), event blocks
	// in the WAL segments, e/ holds references to them (segstore.go), and
	// new blocks leave out what they make derivable (block.go). Versions 1
	// to 3 had one index key per event (n/), converted to runs at open;
	// version 1 held its blocks inline, version 2 wrote blocks of format 1
	// into the segments: this build reads every kind of block, an older one
	// would not read the newer ones.
	formatVersion = uint64(4)
)

// unreadableVersion is the refusal of a journal of a format version this
// build does not read.
func unreadableVersion(version uint64) error {
	return fmt.Errorf("%w: format version %d, this build reads versions 1 to %d: open it with the streamd that wrote it", ErrCorrupt, version, formatVersion)
}

// Slices is the number of slices entities are hashed into.
const Slices = 1024

// SliceOf is the slice (0..1023) of an entity id: FNV-1a, stable forever.
func SliceOf(entityID string) uint32 { return sliceOf(entityID) }

func sliceOf[S string | []byte](entityID S) uint32 {
	h := uint32(2166136261) // FNV-1a, 32 bits
	for i := 0; i < len(entityID); i++ {
		h = (h ^ uint32(entityID[i])) * 16777619
	}
	return h % Slices
}

// EntityKey identifies an entity (type NUL id); neither part may contain
// NUL, so the key is unambiguous.
func EntityKey(entityType, entityID string) string {
	return entityType + "\x00" + entityID
}

// indexKey is the key of (entity, seqNr) in the index of formats 1 to 3.
func indexKey(ek string, seqNr uint64) []byte {
	k := make([]byte, 0, 2+len(ek)+1+8)
	k = append(k, prefixIndex...)
	k = append(k, ek...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, seqNr)
}

func seqKey(ek string) []byte {
	k := make([]byte, 0, 2+len(ek))
	k = append(k, prefixSeq...)
	return append(k, ek...)
}

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func readU64(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// originKey identifies (origin region, entity) in the writer's seqNr cache,
// beside entity keys: it starts with NUL, which no entity type does. The key
// in Badger is prefixOrigin followed by originKey[1:].
func originKey(origin, ek string) string {
	return "\x00" + origin + "\x00" + ek
}

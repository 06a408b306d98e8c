package offsets

import (
	"encoding/binary"
	"math"
	"time"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"google.golang.org/protobuf/proto"
)

// Key layout. Every key of the store begins with the two bytes 0x00 'o', so
// the store can share a Badger DB with a journal or with a handler's own
// state (which must not use keys beginning with 0x00 'o'). Strings are
// length-prefixed (uvarint), numbers big-endian, so keys never need a
// separator and sort numerically.
//
//	0x00 'o' 'p' <consumer> <journal id:16> <first:u16> <last:u16> → offset
//	0x00 'o' 'a' <consumer> <journal id:16> <entity type> <entity id> → applied seqNr
//	0x00 'o' 'l' <consumer> <journal id:16> <store:8> <run:u64>       → applied seqNrs of one Save, not folded yet (runs.go)
//	0x00 'o' 'r' <consumer> <origin> <entity type> <entity id>        → applied origin seqNr
//	0x00 'o' 'g' <consumer> <journal id:16>                          → guard (see writeOffset)
//	0x00 'o' 'f' <consumer> <stream>                                 → filter criteria
//	0x00 'o' 'j' <consumer> <producer address>                       → last journal id seen
//	0x00 'o' 'm' "format"                                            → format version
const (
	kindOffset      = 'p'
	kindApplied     = 'a'
	kindRun         = 'l'
	kindOrigin      = 'r'
	kindGuard       = 'g'
	kindFilters     = 'f'
	kindLastJournal = 'j'
	kindMeta        = 'm'
)

// formatVersion is the leading byte of every value (but a compressed
// run's) and the value of the format key. The first run written (runs.go)
// marks the store runsFormat, so that a build that would not read its runs
// refuses it. plainRunsFormat marks a store whose runs may be plain, as
// builds before compressed runs wrote them: they are read, and the first
// run written marks it runsFormat. A store of a newer format is refused,
// not misread.
const (
	formatVersion   = 1
	plainRunsFormat = 2
	runsFormat      = 3
)

// compressedRun is the leading byte of a run whose entries are compressed
// (S2); a plain run's is formatVersion.
const compressedRun = 2

// JournalIDLen is the length of a journal id in bytes.
const JournalIDLen = 16

// MaxNameLen bounds consumer and stream names (bytes).
const MaxNameLen = 1024

// maxKeyLen is Badger's limit on a key.
const maxKeyLen = 65000

var metaFormatKey = []byte("\x00om" + "format")

func keyPrefix(kind byte, extra int) []byte {
	b := make([]byte, 0, 3+extra)
	return append(b, 0x00, 'o', kind)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// readString reads a length-prefixed string from b.
func readString(b []byte) (string, []byte, bool) {
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) {
		return "", nil, false
	}
	return string(b[w : w+int(n)]), b[w+int(n):], true
}

// consumerJournalPrefix is the prefix of the offset (kind 'p'), applied
// (kind 'a') or guard (kind 'g') keys of one consumer, or of one consumer and
// journal when journalID is not nil.
func consumerJournalPrefix(kind byte, consumer string, journalID []byte) []byte {
	b := keyPrefix(kind, binary.MaxVarintLen64+len(consumer)+JournalIDLen+4)
	b = appendString(b, consumer)
	return append(b, journalID...)
}

func offsetKey(k Key) []byte {
	b := consumerJournalPrefix(kindOffset, k.Consumer, k.JournalID)
	b = binary.BigEndian.AppendUint16(b, uint16(k.Slices.First))
	return binary.BigEndian.AppendUint16(b, uint16(k.Slices.Last))
}

func decodeOffsetKey(key []byte) (Key, error) {
	if len(key) < 3 || key[0] != 0 || key[1] != 'o' || key[2] != kindOffset {
		return Key{}, corruptf("offset key %x: wrong prefix", key)
	}
	consumer, rest, ok := readString(key[3:])
	if !ok || len(rest) != JournalIDLen+4 {
		return Key{}, corruptf("offset key %x: wrong length", key)
	}
	k := Key{
		Consumer:  consumer,
		JournalID: append([]byte(nil), rest[:JournalIDLen]...),
		Slices: SliceRange{
			First: uint32(binary.BigEndian.Uint16(rest[JournalIDLen:])),
			Last:  uint32(binary.BigEndian.Uint16(rest[JournalIDLen+2:])),
		},
	}
	if err := k.Slices.Validate(); err != nil {
		return Key{}, corruptf("offset key %x: %v", key, err)
	}
	return k, nil
}

func appliedKey(consumer string, journalID []byte, entityType, entityID string) []byte {
	b := make([]byte, 0, 3+3*binary.MaxVarintLen32+len(consumer)+JournalIDLen+len(entityType)+len(entityID))
	b = append(b, 0x00, 'o', kindApplied)
	b = appendString(b, consumer)
	b = append(b, journalID...)
	b = appendString(b, entityType)
	return appendString(b, entityID)
}

// consumerKey is 0x00 'o' <kind> <consumer> <part>…, each string with its
// length; with no parts, the prefix of every such key of consumer.
func consumerKey(kind byte, consumer string, parts ...string) []byte {
	n := binary.MaxVarintLen32 + len(consumer)
	for _, s := range parts {
		n += binary.MaxVarintLen32 + len(s)
	}
	b := appendString(keyPrefix(kind, n), consumer)
	for _, s := range parts {
		b = appendString(b, s)
	}
	return b
}

func originKey(consumer, origin, entityType, entityID string) []byte {
	return consumerKey(kindOrigin, consumer, origin, entityType, entityID)
}

func appliedKeyLen(consumer, entityType, entityID string) int {
	n := 3 + JournalIDLen
	for _, s := range [...]string{consumer, entityType, entityID} {
		n += uvarintLen(uint64(len(s))) + len(s)
	}
	return n
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

func guardKey(consumer string, journalID []byte) []byte {
	return consumerJournalPrefix(kindGuard, consumer, journalID)
}

func filtersKey(consumer, stream string) []byte { return consumerKey(kindFilters, consumer, stream) }

func decodeFiltersKey(key []byte) (consumer, stream string, err error) {
	if len(key) < 3 || key[0] != 0 || key[1] != 'o' || key[2] != kindFilters {
		return "", "", corruptf("filters key %x: wrong prefix", key)
	}
	consumer, rest, ok := readString(key[3:])
	if ok {
		stream, rest, ok = readString(rest)
	}
	if !ok || len(rest) != 0 {
		return "", "", corruptf("filters key %x: wrong length", key)
	}
	return consumer, stream, nil
}

// Offset value: version, start policy, offset, start time, updated at.
const offsetValueLen = 1 + 1 + 8 + 8 + 8

func encodeOffset(p Offset) []byte {
	b := make([]byte, 0, offsetValueLen)
	b = append(b, formatVersion, byte(p.Start))
	b = binary.BigEndian.AppendUint64(b, p.Offset)
	var start int64
	if p.Start == streamdv1.StartPolicy_START_POLICY_AT_TIME {
		start = p.StartTime.UnixNano()
	}
	b = binary.BigEndian.AppendUint64(b, uint64(start))
	return binary.BigEndian.AppendUint64(b, uint64(p.UpdatedAt.UnixNano()))
}

func decodeOffset(v []byte) (Offset, error) {
	if len(v) != offsetValueLen || v[0] != formatVersion {
		return Offset{}, corruptf("offset value %x: unknown version or length", v)
	}
	p := Offset{
		Start:     streamdv1.StartPolicy(v[1]),
		Offset:    binary.BigEndian.Uint64(v[2:]),
		UpdatedAt: time.Unix(0, int64(binary.BigEndian.Uint64(v[18:]))).UTC(),
	}
	switch p.Start {
	case streamdv1.StartPolicy_START_POLICY_UNSPECIFIED,
		streamdv1.StartPolicy_START_POLICY_EARLIEST,
		streamdv1.StartPolicy_START_POLICY_LATEST:
	case streamdv1.StartPolicy_START_POLICY_AT_TIME:
		p.StartTime = time.Unix(0, int64(binary.BigEndian.Uint64(v[10:]))).UTC()
	default:
		return Offset{}, corruptf("offset value %x: unknown start policy %d", v, v[1])
	}
	return p, nil
}

// Applied value: version, seqNr.
func encodeSeqNr(seqNr uint64) []byte {
	b := make([]byte, 0, 9)
	b = append(b, formatVersion)
	return binary.BigEndian.AppendUint64(b, seqNr)
}

func decodeSeqNr(v []byte) (uint64, error) {
	if len(v) != 9 || v[0] != formatVersion {
		return 0, corruptf("applied seqNr value %x: unknown version or length", v)
	}
	return binary.BigEndian.Uint64(v[1:]), nil
}

// Filters value: version, then each criterion as a length-prefixed proto.
func encodeFilters(criteria []*streamdv1.FilterCriterion) ([]byte, error) {
	b := []byte{formatVersion}
	opts := proto.MarshalOptions{Deterministic: true}
	for _, c := range criteria {
		m, err := opts.Marshal(c)
		if err != nil {
			return nil, err
		}
		b = binary.AppendUvarint(b, uint64(len(m)))
		b = append(b, m...)
	}
	return b, nil
}

func decodeFilters(v []byte) ([]*streamdv1.FilterCriterion, error) {
	if len(v) == 0 || v[0] != formatVersion {
		return nil, corruptf("filters value: unknown version")
	}
	criteria := []*streamdv1.FilterCriterion{}
	for rest := v[1:]; len(rest) > 0; {
		n, w := binary.Uvarint(rest)
		if w <= 0 || n > uint64(len(rest)-w) {
			return nil, corruptf("filters value: truncated criterion %d", len(criteria))
		}
		c := &streamdv1.FilterCriterion{}
		if err := proto.Unmarshal(rest[w:w+int(n)], c); err != nil {
			return nil, corruptf("filters value: criterion %d: %v", len(criteria), err)
		}
		criteria = append(criteria, c)
		rest = rest[w+int(n):]
	}
	return criteria, nil
}

// Times are stored as Unix nanoseconds, like the wire.
var (
	minTime = time.Unix(0, math.MinInt64)
	maxTime = time.Unix(0, math.MaxInt64)
)

func timeInRange(t time.Time) bool {
	return !t.Before(minTime) && !t.After(maxTime)
}

package journal

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4/options"
)

// Durability says when Append returns.
type Durability int

const (
	// DurabilitySync returns from Append only after the events are fsync'd.
	// Concurrent appends share one fsync (group commit).
	DurabilitySync Durability = iota
	// DurabilityAsync returns once the events are committed to Badger's
	// memory-mapped log, before fsync. A process crash loses nothing; an OS
	// crash or power loss may lose the most recent acknowledged events.
	DurabilityAsync
)

// String returns "sync" or "async".
func (d Durability) String() string {
	switch d {
	case DurabilitySync:
		return "sync"
	case DurabilityAsync:
		return "async"
	}
	return fmt.Sprintf("Durability(%d)", int(d))
}

// ParseDurability reads "sync" or "async".
func ParseDurability(s string) (Durability, error) {
	switch s {
	case "sync":
		return DurabilitySync, nil
	case "async":
		return DurabilityAsync, nil
	}
	return 0, fmt.Errorf("journal: durability %q: want sync or async", s)
}

// Compression is how the journal's Badger tables (its index: the event
// blocks stay in the WAL segments) are compressed on disk.
type Compression int

const (
	// CompressionZSTD compresses tables with Zstandard (level 1): about a
	// third smaller than Snappy for the index. Badger builds a table in
	// memory uncompressed but cuts it by its compressed size, so the memory
	// its table builders keep grows with how well tables compress and with
	// the depth of the LSM tree, not only with MemTableSize.
	CompressionZSTD Compression = iota
	// CompressionSnappy compresses tables with Snappy: faster, larger.
	CompressionSnappy
	// CompressionNone stores tables uncompressed: more disk, and a memory
	// ceiling that follows from MemTableSize alone.
	CompressionNone
)

var compressionNames = []string{"zstd", "snappy", "none"}

// String returns "zstd", "snappy" or "none".
func (c Compression) String() string {
	if c >= 0 && int(c) < len(compressionNames) {
		return compressionNames[c]
	}
	return fmt.Sprintf("Compression(%d)", int(c))
}

// ParseCompression reads "zstd", "snappy" or "none".
func ParseCompression(s string) (Compression, error) {
	if i := slices.Index(compressionNames, s); i >= 0 {
		return Compression(i), nil
	}
	return 0, fmt.Errorf("journal: compression %q: want zstd, snappy or none", s)
}

func (c Compression) badger() options.CompressionType {
	return [...]options.CompressionType{options.ZSTD, options.Snappy, options.None}[c]
}

// Limits bound what one append may carry. Zero fields take the defaults.
type Limits struct {
	MaxEntityTypeLen   int // default 256 bytes
	MaxEntityIDLen     int // default 512 bytes
	MaxEventTypeLen    int // default 256 bytes
	MaxTopicLen        int // default 1024 bytes
	MaxTags            int // default 32
	MaxTagLen          int // default 256 bytes
	MaxMetadataEntries int // default 64
	MaxMetadataBytes   int // default 64 KiB, keys and values together
	MaxPayloadBytes    int // default 1 MiB
	MaxBatchEvents     int // default 10,000 events per Append
	MaxBatchBytes      int // default 4 MiB per Append, encoded
}

// DefaultLimits are the limits used for zero fields.
var DefaultLimits = Limits{
	MaxEntityTypeLen:   256,
	MaxEntityIDLen:     512,
	MaxEventTypeLen:    256,
	MaxTopicLen:        1024,
	MaxTags:            32,
	MaxTagLen:          256,
	MaxMetadataEntries: 64,
	MaxMetadataBytes:   64 << 10,
	MaxPayloadBytes:    1 << 20,
	MaxBatchEvents:     10_000,
	MaxBatchBytes:      4 << 20,
}

// minMemTableSize is the smallest memtable accepted: a transaction (15% of
// the memtable) must hold the largest append's index entries and records.
const minMemTableSize = 7 << 20

// maxBatchBytesCap keeps one append inside one Badger transaction.
const maxBatchBytesCap = 8 << 20

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	pick := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	pick(&l.MaxEntityTypeLen, d.MaxEntityTypeLen)
	pick(&l.MaxEntityIDLen, d.MaxEntityIDLen)
	pick(&l.MaxEventTypeLen, d.MaxEventTypeLen)
	pick(&l.MaxTopicLen, d.MaxTopicLen)
	pick(&l.MaxTags, d.MaxTags)
	pick(&l.MaxTagLen, d.MaxTagLen)
	pick(&l.MaxMetadataEntries, d.MaxMetadataEntries)
	pick(&l.MaxMetadataBytes, d.MaxMetadataBytes)
	pick(&l.MaxPayloadBytes, d.MaxPayloadBytes)
	pick(&l.MaxBatchEvents, d.MaxBatchEvents)
	pick(&l.MaxBatchBytes, d.MaxBatchBytes)
	return l
}

// Observer receives journal activity, for metrics. Methods are called from
// the journal's writer goroutine and must not block.
type Observer interface {
	// Committed reports one group commit: how many appends and events it
	// held and how long the fsync took (0 with async durability).
	Committed(appends, events int, bytes int64, fsync time.Duration)
	// RetentionDeleted reports events removed by retention.
	RetentionDeleted(events int)
}

// Options configure a journal. The zero value is a durable journal that keeps
// everything forever.
type Options struct {
	Durability Durability
	// Region names the region this journal is in. Events appended without an
	// origin get it as their origin, with the next origin seqNr of the
	// entity; "" leaves them without origin.
	//
	// Events with an origin (replicated from another region, or written here
	// with Region set) are tracked per (origin, entity): an event whose
	// origin seqNr the journal holds already is a duplicate and is not
	// written (Appended.Duplicate), one that skips origin seqNrs is refused
	// with an *OriginGapError.
	Region string
	// RetentionMaxAge deletes events committed longer ago than this; 0 keeps
	// them forever.
	RetentionMaxAge time.Duration
	// RetentionMaxBytes deletes the oldest events while the stored events
	// take more than this many bytes; 0 means no size limit.
	RetentionMaxBytes int64
	// RetentionInterval is how often retention runs; default 1 minute.
	RetentionInterval time.Duration
	Limits            Limits
	// RingSize is how many recent events the live ring holds; default 32768.
	RingSize int
	// MemTableSize is Badger's memtable size in bytes; default 16 MiB, at
	// least 7 MiB. Badger holds the journal's index, references to the
	// event blocks (which stay in the WAL segments) and records, not the
	// events: its memory follows from this, two memtables of about 1.3
	// times it and the table builders that write them, and BlockCacheSize.
	// Badger caps one transaction, so one group commit's index entries, at
	// 15% of it.
	MemTableSize int64
	// Compression of the journal's tables on disk; default CompressionZSTD.
	// Tables written before a change keep theirs and stay readable.
	Compression Compression
	// MinFreeBytes is the free space the journal's filesystem must keep:
	// below it appends are refused with ErrNoSpace, writing nothing, and
	// accepted again once space is freed. Badger writes its log through
	// memory maps, where a full disk is a crash (SIGBUS), not an error, so
	// the journal must stop before. Default: MemTableSize + 64 MiB (a
	// memtable flush, two of the largest group commits, WAL segments);
	// at least LeastMinFreeBytes. Badger's compactions write their tables
	// before removing the ones they replace, beyond this reserve: keep
	// free space well above it.
	MinFreeBytes int64
	// BlockCacheSize is Badger's block cache in bytes (index blocks read
	// often); default 16 MiB.
	BlockCacheSize int64
	Logger         *slog.Logger
	Observer       Observer
	// Now is the clock for event timestamps and retention; default time.Now.
	Now func() time.Time

	// segmentBytes is the size of a WAL segment (wal.go); set by tests.
	segmentBytes int64
}

// ErrInvalidOptions is wrapped by every error of Options.Validate.
var ErrInvalidOptions = errors.New("journal: invalid options")

// Validate reports every nonsensical field, the errors joined; each wraps
// ErrInvalidOptions.
func (o Options) Validate() error {
	var errs []error
	if o.Durability != DurabilitySync && o.Durability != DurabilityAsync {
		errs = append(errs, fmt.Errorf("%w: Options.Durability %d is neither sync nor async", ErrInvalidOptions, o.Durability))
	}
	if err := checkName("region", o.Region, maxRegionLen, false); err != nil {
		errs = append(errs, fmt.Errorf("%w: Options.Region %q: %v", ErrInvalidOptions, o.Region, err))
	}
	if o.Compression < 0 || o.Compression > CompressionNone {
		errs = append(errs, fmt.Errorf("%w: Options.Compression %d is not zstd, snappy or none", ErrInvalidOptions, o.Compression))
	}
	if o.RetentionMaxAge < 0 {
		errs = append(errs, fmt.Errorf("%w: Options.RetentionMaxAge %v is negative", ErrInvalidOptions, o.RetentionMaxAge))
	}
	if o.RetentionMaxBytes < 0 {
		errs = append(errs, fmt.Errorf("%w: Options.RetentionMaxBytes %d is negative", ErrInvalidOptions, o.RetentionMaxBytes))
	}
	if o.RetentionInterval < 0 {
		errs = append(errs, fmt.Errorf("%w: Options.RetentionInterval %v is negative", ErrInvalidOptions, o.RetentionInterval))
	}
	if o.RingSize < 0 {
		errs = append(errs, fmt.Errorf("%w: Options.RingSize %d is negative", ErrInvalidOptions, o.RingSize))
	}
	if o.MemTableSize < 0 || (o.MemTableSize > 0 && o.MemTableSize < minMemTableSize) {
		errs = append(errs, fmt.Errorf("%w: Options.MemTableSize %d: want 0 (default) or at least %d (7 MiB: Badger's transactions, 15%% of it, must hold a 1 MiB value)", ErrInvalidOptions, o.MemTableSize, minMemTableSize))
	}
	if least := o.LeastMinFreeBytes(); o.MinFreeBytes < 0 || (o.MinFreeBytes > 0 && o.MinFreeBytes < least) {
		errs = append(errs, fmt.Errorf("%w: Options.MinFreeBytes %d: want 0 (default) or at least %d with MemTableSize %d (what Badger may still write through memory maps once appends are refused; a full disk there crashes the process with SIGBUS)",
			ErrInvalidOptions, o.MinFreeBytes, least, o.withDefaults().MemTableSize))
	}
	if o.BlockCacheSize < 0 {
		errs = append(errs, fmt.Errorf("%w: Options.BlockCacheSize %d is negative", ErrInvalidOptions, o.BlockCacheSize))
	}
	l := o.Limits
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxEntityTypeLen", l.MaxEntityTypeLen}, {"MaxEntityIDLen", l.MaxEntityIDLen},
		{"MaxEventTypeLen", l.MaxEventTypeLen}, {"MaxTopicLen", l.MaxTopicLen}, {"MaxTags", l.MaxTags},
		{"MaxTagLen", l.MaxTagLen}, {"MaxMetadataEntries", l.MaxMetadataEntries},
		{"MaxMetadataBytes", l.MaxMetadataBytes}, {"MaxPayloadBytes", l.MaxPayloadBytes},
		{"MaxBatchEvents", l.MaxBatchEvents}, {"MaxBatchBytes", l.MaxBatchBytes},
	} {
		if f.v < 0 {
			errs = append(errs, fmt.Errorf("%w: Options.Limits.%s %d is negative", ErrInvalidOptions, f.name, f.v))
		}
	}
	if l.MaxBatchBytes > maxBatchBytesCap {
		errs = append(errs, fmt.Errorf("%w: Options.Limits.MaxBatchBytes %d exceeds %d (one Badger transaction)", ErrInvalidOptions, l.MaxBatchBytes, maxBatchBytesCap))
	}
	return errors.Join(errs...)
}

// LeastMinFreeBytes is the smallest MinFreeBytes Validate accepts with o's
// MemTableSize: what Badger may write through memory maps after the last
// append the free-space check let through. That is one table of a memtable
// flush (Badger builds one at a time, and removes the memtable's log once
// it is written) and the group commits the pipeline may hold past the
// check, logged into Badger's memtable and value logs: the one being
// built, the one being logged, four batches waiting and one being
// applied, counted as eight groups of the largest size.
func (o Options) LeastMinFreeBytes() int64 {
	mt := o.withDefaults().MemTableSize
	// Badger caps a transaction at 15% of the memtable; a group at 4/5 of
	// that (Journal.groupCost).
	group := min(maxGroupBytes, mt*15/100*4/5)
	return mt + 8*group
}

// EffectiveMinFreeBytes is the free space a journal opened with o keeps:
// MinFreeBytes, or its default.
func (o Options) EffectiveMinFreeBytes() int64 { return o.withDefaults().MinFreeBytes }

func (o Options) withDefaults() Options {
	if o.RetentionInterval == 0 {
		o.RetentionInterval = time.Minute
	}
	if o.RingSize == 0 {
		o.RingSize = 32768
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = 16 << 20
	}
	if o.segmentBytes == 0 {
		o.segmentBytes = defaultSegmentBytes
	}
	if o.MinFreeBytes == 0 {
		o.MinFreeBytes = o.MemTableSize + 2*maxGroupBytes + 48<<20
	}
	if o.BlockCacheSize == 0 {
		o.BlockCacheSize = 16 << 20
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	o.Limits = o.Limits.withDefaults()
	return o
}

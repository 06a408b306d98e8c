package journal

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by every call on a closed journal.
	ErrClosed = errors.New("journal: closed")
	// ErrInvalidEvent wraps every validation failure of Append.
	ErrInvalidEvent = errors.New("journal: invalid event")
	// ErrNotFound: no event at that (entity, seqNr).
	ErrNotFound = errors.New("journal: event not found")
	// ErrFellBehind: the live ring no longer holds the requested offset; read
	// from the journal instead.
	ErrFellBehind = errors.New("journal: reader fell behind the live ring")
	// ErrFailed: a write or fsync of the WAL, a commit to Badger or a
	// checkpoint failed; the journal refuses further appends because it can
	// no longer tell what is durable. An append answered with it may or may
	// not be there after a reopen. Reopen it.
	ErrFailed = errors.New("journal: failed after a write or fsync error; reopen it")
	// ErrNoSpace refuses an append while the journal's filesystem has less
	// free space than Options.MinFreeBytes. Nothing was written; appends
	// succeed again once space is freed.
	ErrNoSpace = errors.New("journal: not enough free disk space")
	// ErrCorrupt: stored data does not decode.
	ErrCorrupt = errors.New("journal: corrupt data")
)

// SeqNrConflictError is returned when an event's expected seqNr is not the
// entity's next one. Nothing of the append was written.
type SeqNrConflictError struct {
	EntityType, EntityID string
	Expected, Next       uint64
}

func (e *SeqNrConflictError) Error() string {
	return fmt.Sprintf("journal: seqNr conflict for entity %s/%s: append expected seqNr %d, next is %d",
		e.EntityType, e.EntityID, e.Expected, e.Next)
}

// NotWritableError refuses an append of an event written here (not a copy
// carrying its origin seqNr) whose slice this journal does not write now
// (Journal.SetWritable): another journal of its group writes that slice.
// Nothing of the append was written.
type NotWritableError struct {
	EntityType, EntityID string
	Slice                uint32
}

func (e *NotWritableError) Error() string {
	return fmt.Sprintf("journal: entity %s/%s is in slice %d, which this journal does not write now", e.EntityType, e.EntityID, e.Slice)
}

// OutOfRangeError is returned when reading below the retention floor.
type OutOfRangeError struct {
	Requested, FirstAvailable uint64
}

func (e *OutOfRangeError) Error() string {
	return fmt.Sprintf("journal: offset %d is below the retention floor; first available offset is %d",
		e.Requested, e.FirstAvailable)
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidEvent}, args...)...)
}

// OriginGapError refuses an append of a replicated event whose origin seqNr
// is not the next one the journal expects from that origin for the entity:
// events in between are missing. Nothing of the append was written; the
// replicator asks its source for a replay from Next.
type OriginGapError struct {
	Origin     string
	EntityType string
	EntityID   string
	Next       uint64 // the origin seqNr the journal expects
	Got        uint64
}

func (e *OriginGapError) Error() string {
	return fmt.Sprintf("journal: gap in events of %s/%s from origin %q: got origin seqNr %d, want %d", e.EntityType, e.EntityID, e.Origin, e.Got, e.Next)
}

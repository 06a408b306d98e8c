package offsets

import (
	"errors"
	"fmt"
)

var (
	// ErrClosed is returned by every call on a closed Store.
	ErrClosed = errors.New("offsets: store is closed")
	// ErrNotFound is returned when the entry an operation needs does not
	// exist: Delete of an absent offset, Filters that were never set.
	ErrNotFound = errors.New("offsets: not found")
	// ErrInvalid is wrapped by every error about bad input (an empty consumer
	// name, a journal id that is not 16 bytes, an invalid slice range…).
	// Nothing is written when it is returned.
	ErrInvalid = errors.New("offsets: invalid argument")
	// ErrInvalidOptions is wrapped by every error about unusable Options
	// (Options.Validate, Open); it matches ErrInvalid too.
	ErrInvalidOptions error = &kindError{msg: "offsets: invalid options", kind: ErrInvalid}
	// ErrConflictingOffsets is returned by StartFor and Resolve when the
	// stored offsets that overlap a slice range cannot be merged into one
	// start without losing events (an offset next to a pending reset to a
	// time). Set or Reset the offset of that exact range to settle it.
	ErrConflictingOffsets = errors.New("offsets: overlapping offsets cannot be merged")
	// ErrCorrupt is returned when a stored record cannot be decoded.
	ErrCorrupt = errors.New("offsets: corrupt record")
)

// invalidError is an input error: its message names the offending field and
// it matches ErrInvalid with errors.Is.
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return "offsets: " + e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func invalidf(format string, args ...any) error {
	return &invalidError{msg: fmt.Sprintf(format, args...)}
}

// kindError is a sentinel that also matches a broader one.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func optionsErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
}

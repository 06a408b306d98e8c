package consumer

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	// ErrInvalid is matched by every error about bad options or arguments.
	ErrInvalid = errors.New("consumer: invalid argument")
	// ErrInvalidOptions is wrapped by every error of Options.Validate (and
	// so by New's); it matches ErrInvalid too.
	ErrInvalidOptions error = &kindError{msg: "consumer: invalid options", kind: ErrInvalid}
	// ErrJournalChanged is matched by a *JournalChangedError: a producer we
	// hold an offset for now serves another journal.
	ErrJournalChanged = errors.New("consumer: producer journal changed")
	// ErrOutOfRange is matched by an *OutOfRangeError: the stored offset is
	// below the producer's retention floor, events were lost to retention.
	ErrOutOfRange = errors.New("consumer: offset below the producer's retention floor")
	// ErrAheadOfJournal is matched by an *AheadError: the stored offset is
	// past the producer's last offset.
	ErrAheadOfJournal = errors.New("consumer: offset ahead of the producer's journal")
	// ErrFilterRefused is matched by a *FilterRefusedError.
	ErrFilterRefused = errors.New("consumer: filter update refused")
	// ErrNotConnected is returned by Replay for a producer that has no open
	// stream.
	ErrNotConnected = errors.New("consumer: no open stream")
	// ErrRunning is returned by Run while another Run of the same Consumer
	// is running.
	ErrRunning = errors.New("consumer: Run is already running")
	// ErrProtocol is matched by errors about a producer that broke the
	// stream protocol (no Hello first, a malformed journal id or event).
	ErrProtocol = errors.New("consumer: protocol violation")
)

type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return "consumer: " + e.msg }
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

// optionsErrorf is an error of Options.Validate: it names the field.
func optionsErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...)
}

func protocolf(addr, format string, args ...any) error {
	return fmt.Errorf("%w: producer %s: "+format, append([]any{ErrProtocol, addr}, args...)...)
}

// JournalChangedError: the producer at Addr serves journal Current, but the
// consumer holds an offset for journal Stored. Current is nil when the
// producer did not tell (Message is then its refusal).
type JournalChangedError struct {
	Addr            string
	Stored, Current []byte
	Message         string
}

func (e *JournalChangedError) Error() string {
	current := "an unknown journal"
	if e.Current != nil {
		current = fmt.Sprintf("journal %x", e.Current)
	}
	s := fmt.Sprintf("consumer: producer %s serves %s, but the stored offset is for journal %x: the journal was replaced; "+
		"set Options.OnJournalChange to RestartFromEarliest, or delete the offsets of journal %x to start from Options.StartPolicy",
		e.Addr, current, e.Stored, e.Stored)
	if e.Message != "" {
		s += " (producer: " + e.Message + ")"
	}
	return s
}

// Is makes a *JournalChangedError match ErrJournalChanged.
func (e *JournalChangedError) Is(target error) bool { return target == ErrJournalChanged }

// OutOfRangeError: the stored Offset (last processed) is below the
// retention floor of the producer at Addr; FirstAvailable is its first
// stored offset (0 if it could not be learned; Message then has the
// producer's words).
type OutOfRangeError struct {
	Addr           string
	JournalID      []byte
	Offset         uint64
	FirstAvailable uint64
	Message        string
}

func (e *OutOfRangeError) Error() string {
	first := "unknown"
	if e.FirstAvailable != 0 {
		first = fmt.Sprint(e.FirstAvailable)
	}
	s := fmt.Sprintf("consumer: producer %s (journal %x): offset %d is below the retention floor, first available offset is %s; "+
		"the events in between are lost to this consumer: set its offset (streamctl offsets set) to continue", e.Addr, e.JournalID, e.Offset, first)
	if e.Message != "" {
		s += " (producer: " + e.Message + ")"
	}
	return s
}

// Is makes an *OutOfRangeError match ErrOutOfRange.
func (e *OutOfRangeError) Is(target error) bool { return target == ErrOutOfRange }

// AheadError: the stored Offset (last processed) of Consumer is past
// LastOffset, the last offset of the journal the producer at Addr serves:
// the journal was restored from an older copy, or the offset was set past
// its end. Resuming there would skip the events that will take the offsets
// in between, so the consumer stops for an operator.
type AheadError struct {
	Addr       string
	Consumer   string
	JournalID  []byte
	Offset     uint64
	LastOffset uint64
	Message    string
}

func (e *AheadError) Error() string {
	s := fmt.Sprintf("consumer: producer %s (journal %x): offset %d is ahead of the journal, which ends at offset %d: "+
		"it was restored from an older copy, or the offset was set past its end; events written from now on would be skipped. "+
		"Set the offset to where the consumer should resume, at most %d: streamctl offsets set --consumer %s --journal %x --to-offset N --execute",
		e.Addr, e.JournalID, e.Offset, e.LastOffset, e.LastOffset, e.Consumer, e.JournalID)
	if e.Message != "" {
		s += " (producer: " + e.Message + ")"
	}
	return s
}

// Is makes an *AheadError match ErrAheadOfJournal.
func (e *AheadError) Is(target error) bool { return target == ErrAheadOfJournal }

// FilterRefusedError is a FilterUpdateResult with a non-OK code from the
// producer at Addr.
type FilterRefusedError struct {
	Addr    string
	Code    codes.Code
	Message string
}

func (e *FilterRefusedError) Error() string {
	return fmt.Sprintf("consumer: producer %s refused the filter update (%s): %s", e.Addr, e.Code, e.Message)
}

// Is makes a *FilterRefusedError match ErrFilterRefused.
func (e *FilterRefusedError) Is(target error) bool { return target == ErrFilterRefused }

// GRPCStatus lets status.Code report the producer's code.
func (e *FilterRefusedError) GRPCStatus() *status.Status { return status.New(e.Code, e.Error()) }

// HandlerError is a Handler's or TxHandler's error with the event it failed
// on; Unwrap returns the handler's error.
type HandlerError struct {
	Addr       string
	Offset     uint64
	EntityType string
	EntityID   string
	SeqNr      uint64
	Err        error
}

func (e *HandlerError) Error() string {
	return fmt.Sprintf("consumer: handler failed on event %s/%s seqNr %d (offset %d) from %s: %v",
		e.EntityType, e.EntityID, e.SeqNr, e.Offset, e.Addr, e.Err)
}

func (e *HandlerError) Unwrap() error { return e.Err }

// storeError marks a failure of the offsets store, which ends Run even while
// it is shutting down (a lost save must not look like a clean stop).
type storeError struct{ err error }

func (e *storeError) Error() string { return e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

func storeErrorf(format string, args ...any) error {
	return &storeError{err: fmt.Errorf(format, args...)}
}

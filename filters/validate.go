package filters

import (
	"errors"
	"fmt"
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode/utf8"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Limits bound what a filter may contain. Zero (or negative) fields mean the
// defaults.
type Limits struct {
	// MaxCriteria is the most criteria one filter may hold (default 256).
	MaxCriteria int
	// MaxValueLen is the longest value in bytes (default 1024).
	MaxValueLen int
	// MaxRegexLen is the longest entity id regex in bytes (default 1024).
	MaxRegexLen int
	// MaxRegexProgram is the most regexp/syntax program instructions a
	// simplified entity id regex may compile to (default 2000).
	MaxRegexProgram int
}

// Defaults for zero Limits fields.
const (
	defaultMaxCriteria     = 256
	defaultMaxValueLen     = 1024
	defaultMaxRegexLen     = 1024
	defaultMaxRegexProgram = 2000
)

func (l Limits) withDefaults() Limits {
	if l.MaxCriteria <= 0 {
		l.MaxCriteria = defaultMaxCriteria
	}
	if l.MaxValueLen <= 0 {
		l.MaxValueLen = defaultMaxValueLen
	}
	if l.MaxRegexLen <= 0 {
		l.MaxRegexLen = defaultMaxRegexLen
	}
	if l.MaxRegexProgram <= 0 {
		l.MaxRegexProgram = defaultMaxRegexProgram
	}
	return l
}

// Validate checks one criterion against lim: action and field specified,
// value non-empty, valid UTF-8 and within the length limits, expiry not
// negative, a regex that RE2 compiles within MaxRegexProgram instructions, a
// well-formed topic pattern, and replay only on an include of an exact entity
// id. The error names the criterion in its text form.
func Validate(c *streamdv1.FilterCriterion, lim Limits) error {
	_, err := check(c, lim.withDefaults())
	return err
}

// check validates c and returns its compiled regex, if it is one.
func check(c *streamdv1.FilterCriterion, lim Limits) (*regexp.Regexp, error) {
	if c == nil {
		return nil, errors.New("filters: criterion is nil")
	}
	re, err := checkReason(c, lim)
	if err != nil {
		return nil, fmt.Errorf("filters: criterion %q: %w", Format(c), err)
	}
	return re, nil
}

// checkReason is check without the criterion's name, shared with Parse.
func checkReason(c *streamdv1.FilterCriterion, lim Limits) (*regexp.Regexp, error) {
	switch a := c.GetAction(); a {
	case streamdv1.FilterAction_FILTER_ACTION_INCLUDE, streamdv1.FilterAction_FILTER_ACTION_EXCLUDE:
	case streamdv1.FilterAction_FILTER_ACTION_UNSPECIFIED:
		return nil, errors.New("action is unspecified (want include or exclude)")
	default:
		return nil, fmt.Errorf("unknown action %d (want include or exclude)", a)
	}
	f := c.GetField()
	switch {
	case f == streamdv1.FilterField_FILTER_FIELD_UNSPECIFIED:
		return nil, errors.New("field is unspecified")
	case fieldKey(f) == "":
		return nil, fmt.Errorf("unknown field %d", f)
	}
	v := c.GetValue()
	switch {
	case v == "":
		return nil, errors.New("value is empty")
	case len(v) > lim.MaxValueLen:
		return nil, fmt.Errorf("value is %d bytes, limit is %d", len(v), lim.MaxValueLen)
	case !utf8.ValidString(v):
		return nil, errors.New("value is not valid UTF-8")
	case c.GetExpiresAtUnixNano() < 0:
		return nil, fmt.Errorf("expires_at_unix_nano %d is negative", c.GetExpiresAtUnixNano())
	case c.GetReplayFromSeqNr() != 0 && (c.GetAction() != streamdv1.FilterAction_FILTER_ACTION_INCLUDE ||
		f != streamdv1.FilterField_FILTER_FIELD_ENTITY_ID):
		return nil, errors.New("replay is only allowed on include entity=ID")
	}
	switch f {
	case streamdv1.FilterField_FILTER_FIELD_ENTITY_ID_REGEX:
		return compileRegex(v, lim)
	case streamdv1.FilterField_FILTER_FIELD_TOPIC:
		return nil, checkTopic(v)
	}
	return nil, nil
}

func compileRegex(v string, lim Limits) (*regexp.Regexp, error) {
	if len(v) > lim.MaxRegexLen {
		return nil, fmt.Errorf("regex is %d bytes, limit is %d", len(v), lim.MaxRegexLen)
	}
	re, err := regexp.Compile(v)
	if err != nil {
		return nil, fmt.Errorf("invalid regex: %w", err)
	}
	// regexp.Compile parses with syntax.Perl; measure the same program.
	parsed, err := syntax.Parse(v, syntax.Perl)
	if err != nil {
		return nil, fmt.Errorf("invalid regex: %w", err)
	}
	prog, err := syntax.Compile(parsed.Simplify())
	if err != nil {
		return nil, fmt.Errorf("invalid regex: %w", err)
	}
	if n := len(prog.Inst); n > lim.MaxRegexProgram {
		return nil, fmt.Errorf("regex compiles to %d instructions, limit is %d; use smaller repeat counts", n, lim.MaxRegexProgram)
	}
	return re, nil
}

// checkTopic refuses levels that mix a wildcard with text and a "#" that is
// not the last level.
func checkTopic(pattern string) error {
	for rest, more := pattern, true; more; {
		var level string
		level, rest, more = strings.Cut(rest, "/")
		switch {
		case level == "#" && more:
			return errors.New(`invalid topic pattern: "#" must be the last level`)
		case level != "+" && level != "#" && strings.ContainsAny(level, "+#"):
			return fmt.Errorf(`invalid topic pattern: level %q mixes a wildcard with text ("+" and "#" must be a whole level)`, level)
		}
	}
	return nil
}

package filters

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// fieldKeys are the FIELD= keys of the text syntax.
var fieldKeys = []struct {
	key   string
	field streamdv1.FilterField
}{
	{"type=", streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE},
	{"entity=", streamdv1.FilterField_FILTER_FIELD_ENTITY_ID},
	{"entity~", streamdv1.FilterField_FILTER_FIELD_ENTITY_ID_REGEX},
	{"tag=", streamdv1.FilterField_FILTER_FIELD_TAG},
	{"topic=", streamdv1.FilterField_FILTER_FIELD_TOPIC},
	{"event=", streamdv1.FilterField_FILTER_FIELD_EVENT_TYPE},
	{"origin=", streamdv1.FilterField_FILTER_FIELD_ORIGIN},
}

// wantFields lists every field for error messages, from fieldKeys so that
// none is left out.
var wantFields = func() string {
	keys := make([]string, len(fieldKeys))
	for i, k := range fieldKeys {
		keys[i] = strings.TrimSuffix(k.key, "=")
	}
	return "want " + strings.Join(keys, ", ")
}()

// fieldKey returns the text key of f, "" if f is not a known field.
func fieldKey(f streamdv1.FilterField) string {
	for _, k := range fieldKeys {
		if k.field == f {
			return k.key
		}
	}
	return ""
}

// Format returns the text form of c, which Parse reads back to an equal
// criterion: the expiry as until= in RFC 3339 with nanoseconds in UTC, the
// value double-quoted only if it is empty, starts with a double quote or
// contains whitespace or unprintable characters. An invalid criterion is
// rendered readably for error messages (action(0), field(9)=).
func Format(c *streamdv1.FilterCriterion) string {
	var b strings.Builder
	switch a := c.GetAction(); a {
	case streamdv1.FilterAction_FILTER_ACTION_INCLUDE:
		b.WriteString("include ")
	case streamdv1.FilterAction_FILTER_ACTION_EXCLUDE:
		b.WriteString("exclude ")
	default:
		fmt.Fprintf(&b, "action(%d) ", a)
	}
	if k := fieldKey(c.GetField()); k != "" {
		b.WriteString(k)
	} else {
		fmt.Fprintf(&b, "field(%d)=", c.GetField())
	}
	if v := c.GetValue(); needsQuote(v) {
		b.WriteString(strconv.Quote(v))
	} else {
		b.WriteString(v)
	}
	if exp := c.GetExpiresAtUnixNano(); exp != 0 {
		b.WriteString(" until=")
		b.WriteString(time.Unix(0, exp).UTC().Format(time.RFC3339Nano))
	}
	if r := c.GetReplayFromSeqNr(); r != 0 {
		b.WriteString(" replay=")
		b.WriteString(strconv.FormatUint(r, 10))
	}
	return b.String()
}

func needsQuote(v string) bool {
	return v == "" || v[0] == '"' || !utf8.ValidString(v) ||
		strings.ContainsFunc(v, func(r rune) bool { return unicode.IsSpace(r) || !strconv.IsPrint(r) })
}

// Parse reads one criterion in the text syntax (see the package
// documentation), computing ttl= expiries from now, and validates it with
// the default Limits.
func Parse(text string, now time.Time) (*streamdv1.FilterCriterion, error) {
	c, err := parse(text, now)
	if err == nil {
		_, err = checkReason(c, Limits{}.withDefaults())
	}
	if err != nil {
		return nil, fmt.Errorf("filters: %q: %w", text, err)
	}
	return c, nil
}

func parse(text string, now time.Time) (*streamdv1.FilterCriterion, error) {
	c := &streamdv1.FilterCriterion{}
	word, rest := cutToken(text)
	switch word {
	case "include":
		c.Action = streamdv1.FilterAction_FILTER_ACTION_INCLUDE
	case "exclude":
		c.Action = streamdv1.FilterAction_FILTER_ACTION_EXCLUDE
	case "":
		return nil, errors.New("empty criterion (want ACTION FIELD=VALUE, e.g. include tag=sports)")
	default:
		return nil, fmt.Errorf("unknown action %q (want include or exclude)", word)
	}

	rest = strings.TrimLeftFunc(rest, unicode.IsSpace)
	op := strings.IndexAny(rest, "=~")
	if sp := strings.IndexFunc(rest, unicode.IsSpace); rest == "" || op < 0 || (sp >= 0 && sp < op) {
		tok, _ := cutToken(rest)
		return nil, fmt.Errorf("missing FIELD=VALUE after the action, got %q (%s)", tok, wantFields)
	}
	key := rest[:op+1]
	i := 0
	for i < len(fieldKeys) && fieldKeys[i].key != key {
		i++
	}
	if i == len(fieldKeys) {
		if key[op] == '=' {
			key = key[:op]
		}
		return nil, fmt.Errorf("unknown field %q (%s)", key, wantFields)
	}
	c.Field = fieldKeys[i].field

	var err error
	if c.Value, rest, err = cutValue(rest[op+1:]); err != nil {
		return nil, err
	}
	if c.Value == "" {
		return nil, errors.New("value is empty")
	}

	seen := map[string]bool{}
	for {
		var tok string
		if tok, rest = cutToken(rest); tok == "" {
			return c, nil
		}
		name, arg, ok := strings.Cut(tok, "=")
		if !ok {
			return nil, fmt.Errorf(`unexpected %q after the value (double-quote a value that contains spaces, e.g. tag="a b")`, tok)
		}
		if seen[name] {
			return nil, fmt.Errorf("%s= given twice", name)
		}
		seen[name] = true
		switch name {
		case "ttl":
			d, err := time.ParseDuration(arg)
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("ttl=%s: want a positive duration such as 30m or 2h", arg)
			}
			t := now.UnixNano()
			if t > 0 && int64(d) > math.MaxInt64-t {
				return nil, fmt.Errorf("ttl=%s: too long", arg)
			}
			c.ExpiresAtUnixNano = t + int64(d)
		case "until":
			t, err := time.Parse(time.RFC3339, arg)
			if err != nil {
				return nil, fmt.Errorf("until=%s: want an RFC 3339 time such as 2026-11-22T10:00:00Z", arg)
			}
			if !t.After(now) {
				return nil, fmt.Errorf("until=%s: not after now (%s)", arg, now.UTC().Format(time.RFC3339))
			}
			if t.After(time.Unix(0, math.MaxInt64)) {
				return nil, fmt.Errorf("until=%s: too far in the future", arg)
			}
			c.ExpiresAtUnixNano = t.UnixNano()
		case "replay":
			n, err := strconv.ParseUint(arg, 10, 64)
			if err != nil || n == 0 {
				return nil, fmt.Errorf("replay=%s: want a positive seqNr (1 = whole history)", arg)
			}
			c.ReplayFromSeqNr = n
		default:
			return nil, fmt.Errorf("unknown option %q (want ttl=DURATION, until=RFC3339 or replay=SEQNR)", name)
		}
		if seen["ttl"] && seen["until"] {
			return nil, errors.New("ttl= and until= are exclusive")
		}
	}
}

// cutToken returns the first whitespace-separated token of s and the rest.
func cutToken(s string) (tok, rest string) {
	s = strings.TrimLeftFunc(s, unicode.IsSpace)
	if i := strings.IndexFunc(s, unicode.IsSpace); i >= 0 {
		return s[:i], s[i:]
	}
	return s, ""
}

// cutValue reads the value at the start of s: a Go double-quoted string, or
// everything up to the next whitespace.
func cutValue(s string) (value, rest string, err error) {
	if !strings.HasPrefix(s, `"`) {
		i := strings.IndexFunc(s, unicode.IsSpace)
		if i < 0 {
			return s, "", nil
		}
		return s[:i], s[i:], nil
	}
	q, err := strconv.QuotedPrefix(s)
	if err != nil {
		return "", "", fmt.Errorf("bad quoted value %s: want a Go double-quoted string", s)
	}
	rest = s[len(q):]
	if r, _ := utf8.DecodeRuneInString(rest); rest != "" && !unicode.IsSpace(r) {
		return "", "", fmt.Errorf("quoted value %s must be followed by whitespace", q)
	}
	value, _ = strconv.Unquote(q)
	return value, rest, nil
}

package aggregate

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Op is a value computed per window from a JSON payload field.
type Op string

// The ops of a value field. Count is the number of events that carried the
// field (every aggregated event does: an event without it is skipped).
const (
	OpCount Op = "count"
	OpSum   Op = "sum"
	OpMin   Op = "min"
	OpMax   Op = "max"
	OpAvg   Op = "avg"
	OpLast  Op = "last" // of the event read last (offset order)
)

var ops = []Op{OpCount, OpSum, OpMin, OpMax, OpAvg, OpLast}

// Value is a JSON payload field (a number) and what to compute from it.
type Value struct {
	// Field is a top-level payload field, or a path into nested objects
	// with dots ("engine.rpm").
	Field string
	Ops   []Op
}

// Output says what the summary events are.
type Output struct {
	EntityType string
	EventType  string
	// EntityID is a template over the group's key values: "{tag}",
	// "{region}/{topic[1]}". Placeholders are the GroupBy keys as written,
	// {region} (the journal's region) and {stage} (Options.Name). Default:
	// the key values joined with "/", or the stage name without keys.
	EntityID string
}

// Options define a Stage. Zero values are defaults where one is given.
type Options struct {
	// Name identifies the stage: its checkpoint in the journal and its
	// line in `streamctl aggregates list`. Required.
	Name    string
	Journal *journal.Journal
	// EntityTypes, if any, are the only entity types read (a named
	// stream's entity types); Filter is applied after them (filters
	// syntax). Both empty: every event but the stage's own summaries.
	EntityTypes []string
	Filter      []*streamdv1.FilterCriterion
	// Window is the length of the tumbling windows, a whole number of
	// milliseconds. Required.
	Window time.Duration
	// Grace is how long after its end a window waits for late events.
	Grace time.Duration
	// TimeField is the payload field holding an event's time in unix
	// milliseconds; "" uses the journal's commit time of the event.
	TimeField string
	// GroupBy are the keys of a group: "entity_type", "tag" (the event's
	// first tag), "topic[N]" (the N-th level of the topic, from 0) and
	// "payload.PATH" (a payload field: a string as is, any other JSON
	// value as written).
	GroupBy []string
	Values  []Value
	Output  Output
	// MaxOpenWindows bounds the windows (group × window) open at once; an
	// event that would open one more is counted and skipped. Default
	// 100000.
	MaxOpenWindows int
	// CheckpointEvery is how often the position is saved when no window
	// closes (it bounds what a restart reads again). Default 1s.
	CheckpointEvery time.Duration
	// LogEvery is the least time between two log lines about skipped
	// events. Default 10s.
	LogEvery time.Duration
	// Now is the clock of the watermark with the journal's time, and of
	// filter expiry. Default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// ErrInvalidOptions is wrapped by Validate's errors.
var ErrInvalidOptions = errors.New("aggregate: invalid options")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidOptions, fmt.Sprintf(format, args...))
}

// Validate checks o but its Journal (New needs one); its errors name the
// field and what is wrong.
func (o Options) Validate() error {
	_, err := o.compile()
	return err
}

// keyKind is what a group-by key reads.
type keyKind int

const (
	keyEntityType keyKind = iota
	keyTag
	keyTopic
	keyPayload
)

type key struct {
	text  string
	kind  keyKind
	index int      // keyTopic
	path  []string // keyPayload
}

// parseKey reads a GroupBy key.
func parseKey(s string) (key, error) {
	switch {
	case s == "entity_type":
		return key{text: s, kind: keyEntityType}, nil
	case s == "tag":
		return key{text: s, kind: keyTag}, nil
	case strings.HasPrefix(s, "topic[") && strings.HasSuffix(s, "]"):
		n, err := strconv.Atoi(s[len("topic[") : len(s)-1])
		if err != nil || n < 0 {
			return key{}, fmt.Errorf("%q: the topic level must be a number from 0", s)
		}
		return key{text: s, kind: keyTopic, index: n}, nil
	case strings.HasPrefix(s, "payload."):
		path, err := parsePath(strings.TrimPrefix(s, "payload."))
		if err != nil {
			return key{}, fmt.Errorf("%q: %w", s, err)
		}
		return key{text: s, kind: keyPayload, path: path}, nil
	}
	return key{}, fmt.Errorf("%q: want entity_type, tag, topic[N] or payload.FIELD", s)
}

func parsePath(s string) ([]string, error) {
	path := strings.Split(s, ".")
	if slices.Contains(path, "") {
		return nil, fmt.Errorf("field path %q has an empty part", s)
	}
	return path, nil
}

// def is a Stage's compiled definition.
type def struct {
	window, grace int64 // ms
	timePath      []string
	keys          []key
	values        []value
	filter        *filters.Filter
	types         map[string]bool
	idParts       []idPart
	maxOpen       int
	usesPayload   bool
	fingerprint   string
}

type value struct {
	path []string
	name string
	ops  []Op
}

// idPart is a literal (key < 0) or a placeholder of the entity id template.
type idPart struct {
	lit string
	key int // index into keys; -1 literal; -2 region; -3 stage
}

func (o Options) compile() (*def, error) {
	switch {
	case o.Name == "":
		return nil, invalid("name is empty")
	case o.Window < time.Millisecond || o.Window%time.Millisecond != 0:
		return nil, invalid("window %v: want a whole number of milliseconds, at least 1ms", o.Window)
	case o.Grace < 0 || o.Grace%time.Millisecond != 0:
		return nil, invalid("grace %v: want 0 or a positive whole number of milliseconds", o.Grace)
	case o.Output.EntityType == "":
		return nil, invalid("output entity_type is empty")
	case o.Output.EventType == "":
		return nil, invalid("output event_type is empty")
	case o.MaxOpenWindows < 0:
		return nil, invalid("max open windows %d: want > 0", o.MaxOpenWindows)
	case o.CheckpointEvery < 0 || o.LogEvery < 0:
		return nil, invalid("checkpoint and log intervals must not be negative")
	}
	d := &def{window: o.Window.Milliseconds(), grace: o.Grace.Milliseconds(), maxOpen: o.MaxOpenWindows}
	if d.maxOpen == 0 {
		d.maxOpen = 100_000
	}
	if o.TimeField != "" {
		p, err := parsePath(o.TimeField)
		if err != nil {
			return nil, invalid("time_field: %v", err)
		}
		d.timePath, d.usesPayload = p, true
	}
	for i, s := range o.GroupBy {
		k, err := parseKey(s)
		if err != nil {
			return nil, invalid("group_by[%d] %v", i, err)
		}
		if slices.ContainsFunc(d.keys, func(o key) bool { return o.text == k.text }) {
			return nil, invalid("group_by[%d] %q is listed twice", i, s)
		}
		d.usesPayload = d.usesPayload || k.kind == keyPayload
		d.keys = append(d.keys, k)
	}
	for i, v := range o.Values {
		p, err := parsePath(v.Field)
		if err != nil {
			return nil, invalid("values[%d].field: %v", i, err)
		}
		if len(v.Ops) == 0 {
			return nil, invalid("values[%d] (%s): no ops; want some of %v", i, v.Field, ops)
		}
		for _, op := range v.Ops {
			if !slices.Contains(ops, op) {
				return nil, invalid("values[%d] (%s): op %q: want one of %v", i, v.Field, op, ops)
			}
		}
		if slices.ContainsFunc(d.values, func(o value) bool { return o.name == v.Field }) {
			return nil, invalid("values[%d]: field %q is listed twice (put all its ops in one entry)", i, v.Field)
		}
		d.values = append(d.values, value{path: p, name: v.Field, ops: slices.Clone(v.Ops)})
		d.usesPayload = true
	}
	f, err := filters.Compile(o.Filter, filters.Limits{})
	if err != nil {
		return nil, invalid("filter: %v", err)
	}
	d.filter = f
	if len(o.EntityTypes) > 0 {
		d.types = map[string]bool{}
		for _, t := range o.EntityTypes {
			d.types[t] = true
		}
	}
	if d.idParts, err = parseTemplate(o.Output.EntityID, d.keys); err != nil {
		return nil, invalid("output entity_id: %v", err)
	}
	// What a checkpoint's open windows depend on.
	d.fingerprint = fmt.Sprintf("w=%d g=%d t=%s k=%q v=%v", d.window, d.grace, o.TimeField, o.GroupBy, o.Values)
	return d, nil
}

// parseTemplate reads an entity id template; "" is the keys joined by "/".
func parseTemplate(t string, keys []key) ([]idPart, error) {
	if t == "" {
		if len(keys) == 0 {
			return []idPart{{key: -3}}, nil
		}
		var parts []idPart
		for i := range keys {
			if i > 0 {
				parts = append(parts, idPart{lit: "/", key: -1})
			}
			parts = append(parts, idPart{key: i})
		}
		return parts, nil
	}
	var parts []idPart
	for rest := t; rest != ""; {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			if strings.Contains(rest, "}") {
				return nil, fmt.Errorf("%q: a } without {", t)
			}
			parts = append(parts, idPart{lit: rest, key: -1})
			break
		}
		if open > 0 {
			if strings.Contains(rest[:open], "}") {
				return nil, fmt.Errorf("%q: a } without {", t)
			}
			parts = append(parts, idPart{lit: rest[:open], key: -1})
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return nil, fmt.Errorf("%q: a { without }", t)
		}
		name := rest[open+1 : open+end]
		switch i := slices.IndexFunc(keys, func(k key) bool { return k.text == name }); {
		case i >= 0:
			parts = append(parts, idPart{key: i})
		case name == "region":
			parts = append(parts, idPart{key: -2})
		case name == "stage":
			parts = append(parts, idPart{key: -3})
		default:
			names := []string{"region", "stage"}
			for _, k := range keys {
				names = append(names, k.text)
			}
			return nil, fmt.Errorf("%q: {%s} is not a group_by key; want one of {%s}", t, name, strings.Join(names, "}, {"))
		}
		rest = rest[open+end+1:]
	}
	return parts, nil
}

package producer

import (
	"fmt"
	"slices"
	"time"

	"github.com/streamd/streamd/filters"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// StreamDef is a named stream: a selection of the journal offered to
// consumers. The selection always wins over a consumer's filter.
type StreamDef struct {
	Name string
	// EntityTypes selects entity types; empty selects all.
	EntityTypes []string
	// Filter is a producer-side filter: an event must pass it to be offered.
	Filter []*streamdv1.FilterCriterion
	// Transform turns an internal event into the public event sent; nil
	// sends events as stored. It must not modify its argument (events are
	// shared between streams) and may return nil to drop the event.
	Transform func(*streamdv1.Event) *streamdv1.Event
}

// DefaultStream is the stream a producer offers when no streams are
// configured: every event of the journal.
const DefaultStream = "all"

// stream is a compiled StreamDef.
type stream struct {
	def    StreamDef
	types  map[string]bool
	filter *filters.Filter
}

func compileStreams(defs []StreamDef, lim filters.Limits) (map[string]*stream, error) {
	if len(defs) == 0 {
		defs = []StreamDef{{Name: DefaultStream}}
	}
	out := make(map[string]*stream, len(defs))
	for _, d := range defs {
		if d.Name == "" {
			return nil, fmt.Errorf("producer: a stream has no name")
		}
		if out[d.Name] != nil {
			return nil, fmt.Errorf("producer: stream %q is defined twice", d.Name)
		}
		f, err := filters.Compile(d.Filter, lim)
		if err != nil {
			return nil, fmt.Errorf("producer: stream %q: %w", d.Name, err)
		}
		s := &stream{def: d, filter: f}
		if len(d.EntityTypes) > 0 {
			s.types = map[string]bool{}
			for _, t := range d.EntityTypes {
				s.types[t] = true
			}
		}
		out[d.Name] = s
	}
	return out, nil
}

// offers reports whether the stream offers the event at all.
func (s *stream) offers(e *streamdv1.Event, now time.Time) bool {
	if s.types != nil && !s.types[e.EntityType] {
		return false
	}
	return s.filter.Match(e, now)
}

// public is the event as the stream sends it (nil: dropped).
func (s *stream) public(e *streamdv1.Event) *streamdv1.Event {
	if s.def.Transform == nil {
		return e
	}
	return s.def.Transform(e)
}

// entityTypes the stream may contain, out of those the journal holds.
func (s *stream) entityTypes(journalTypes []string) []string {
	if s.types == nil {
		return journalTypes
	}
	return slices.DeleteFunc(slices.Clone(journalTypes), func(t string) bool { return !s.types[t] })
}

package filters

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// now0 is the fixed "now" of the tests.
var now0 = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// parseAll parses criteria in the text syntax at now0.
func parseAll(tb testing.TB, texts ...string) []*streamdv1.FilterCriterion {
	tb.Helper()
	out := make([]*streamdv1.FilterCriterion, len(texts))
	for i, text := range texts {
		c, err := Parse(text, now0)
		if err != nil {
			tb.Fatal(err)
		}
		out[i] = c
	}
	return out
}

func compileText(tb testing.TB, texts ...string) *Filter {
	tb.Helper()
	f, err := Compile(parseAll(tb, texts...), Limits{})
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

func formatAll(cs []*streamdv1.FilterCriterion) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = Format(c)
	}
	return out
}

// ev builds an event: entity type and id, event type, topic, tags.
func ev(entityType, entityID, eventType, topic string, tags ...string) *streamdv1.Event {
	return &streamdv1.Event{EntityType: entityType, EntityId: entityID, EventType: eventType, Topic: topic, Tags: tags}
}

// refTopicMatch is the obvious implementation of the topic semantics.
func refTopicMatch(pattern, topic string) bool {
	if topic == "" {
		return false
	}
	p, t := strings.Split(pattern, "/"), strings.Split(topic, "/")
	for i, level := range p {
		if level == "#" {
			return true
		}
		if i >= len(t) || (level != "+" && level != t[i]) {
			return false
		}
	}
	return len(p) == len(t)
}

// refTopicValid is the obvious implementation of topic pattern validity.
func refTopicValid(pattern string) bool {
	levels := strings.Split(pattern, "/")
	for i, level := range levels {
		if level == "#" && i < len(levels)-1 {
			return false
		}
		if level != "+" && level != "#" && strings.ContainsAny(level, "+#") {
			return false
		}
	}
	return true
}

// refMatch is the filter semantics written out naively over the criteria.
func refMatch(cs []*streamdv1.FilterCriterion, e *streamdv1.Event, now time.Time) bool {
	isActive := func(c *streamdv1.FilterCriterion) bool {
		return c.ExpiresAtUnixNano == 0 || c.ExpiresAtUnixNano > now.UnixNano()
	}
	matches := func(c *streamdv1.FilterCriterion) bool {
		switch c.Field {
		case streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE:
			return e.EntityType == c.Value
		case streamdv1.FilterField_FILTER_FIELD_ENTITY_ID:
			return e.EntityId == c.Value
		case streamdv1.FilterField_FILTER_FIELD_ENTITY_ID_REGEX:
			return regexp.MustCompile(c.Value).MatchString(e.EntityId)
		case streamdv1.FilterField_FILTER_FIELD_TAG:
			return slices.Contains(e.Tags, c.Value)
		case streamdv1.FilterField_FILTER_FIELD_TOPIC:
			return refTopicMatch(c.Value, e.Topic)
		case streamdv1.FilterField_FILTER_FIELD_EVENT_TYPE:
			return e.EventType == c.Value
		case streamdv1.FilterField_FILTER_FIELD_ORIGIN:
			return e.Origin == c.Value
		}
		panic("unknown field")
	}
	includes := false
	for _, c := range cs {
		if c.Action == streamdv1.FilterAction_FILTER_ACTION_INCLUDE {
			includes = true
		} else if isActive(c) && matches(c) {
			return false
		}
	}
	if !includes {
		return true
	}
	for _, c := range cs {
		if c.Action == streamdv1.FilterAction_FILTER_ACTION_INCLUDE && isActive(c) && matches(c) {
			return true
		}
	}
	return false
}

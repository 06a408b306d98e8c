package filters

import (
	"fmt"
	"regexp"
	"slices"
	"time"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"google.golang.org/protobuf/proto"
)

// Filter is a compiled, immutable set of criteria, safe for concurrent use.
// A nil *Filter admits every event.
type Filter struct {
	criteria    []*streamdv1.FilterCriterion
	include     ruleSet
	exclude     ruleSet
	includeMode bool
}

// ruleSet holds the criteria of one action. Exact values map to their expiry
// (0 = never); duplicates of one value keep the later expiry.
type ruleSet struct {
	entityTypes map[string]int64
	entityIDs   map[string]int64
	eventTypes  map[string]int64
	origins     map[string]int64
	tags        map[string]int64
	topics      []topicRule
	regexes     []regexRule
}

type topicRule struct {
	pattern string
	expires int64
}

type regexRule struct {
	re      *regexp.Regexp
	expires int64
}

// Compile validates criteria against lim and compiles them. On error it
// returns nil and the error for the first bad criterion. The criteria are
// copied; the caller may reuse them.
func Compile(criteria []*streamdv1.FilterCriterion, lim Limits) (*Filter, error) {
	lim = lim.withDefaults()
	if len(criteria) > lim.MaxCriteria {
		return nil, fmt.Errorf("filters: %d criteria, limit is %d", len(criteria), lim.MaxCriteria)
	}
	f := &Filter{criteria: make([]*streamdv1.FilterCriterion, 0, len(criteria))}
	for _, c := range criteria {
		re, err := check(c, lim)
		if err != nil {
			return nil, err
		}
		c = proto.CloneOf(c)
		f.criteria = append(f.criteria, c)
		if c.GetAction() == streamdv1.FilterAction_FILTER_ACTION_INCLUDE {
			f.includeMode = true
			f.include.add(c, re)
		} else {
			f.exclude.add(c, re)
		}
	}
	return f, nil
}

func (s *ruleSet) add(c *streamdv1.FilterCriterion, re *regexp.Regexp) {
	v, exp := c.GetValue(), c.GetExpiresAtUnixNano()
	switch c.GetField() {
	case streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE:
		s.entityTypes = addExact(s.entityTypes, v, exp)
	case streamdv1.FilterField_FILTER_FIELD_ENTITY_ID:
		s.entityIDs = addExact(s.entityIDs, v, exp)
	case streamdv1.FilterField_FILTER_FIELD_EVENT_TYPE:
		s.eventTypes = addExact(s.eventTypes, v, exp)
	case streamdv1.FilterField_FILTER_FIELD_ORIGIN:
		s.origins = addExact(s.origins, v, exp)
	case streamdv1.FilterField_FILTER_FIELD_TAG:
		s.tags = addExact(s.tags, v, exp)
	case streamdv1.FilterField_FILTER_FIELD_TOPIC:
		s.topics = append(s.topics, topicRule{v, exp})
	case streamdv1.FilterField_FILTER_FIELD_ENTITY_ID_REGEX:
		s.regexes = append(s.regexes, regexRule{re, exp})
	}
}

func addExact(m map[string]int64, v string, exp int64) map[string]int64 {
	if m == nil {
		m = make(map[string]int64)
	}
	if old, ok := m[v]; ok && (old == 0 || (exp != 0 && old > exp)) {
		exp = old
	}
	m[v] = exp
	return m
}

// Match reports whether the filter admits e at now: no active exclude
// matches, and either the filter has no includes at all or an active include
// matches. A nil *Filter admits everything.
func (f *Filter) Match(e *streamdv1.Event, now time.Time) bool {
	if f == nil {
		return true
	}
	t := now.UnixNano()
	if f.exclude.match(e, t) {
		return false
	}
	return !f.includeMode || f.include.match(e, t)
}

// match reports whether an active rule of s matches e at now (Unix ns).
func (s *ruleSet) match(e *streamdv1.Event, now int64) bool {
	if hasActive(s.entityTypes, e.GetEntityType(), now) ||
		hasActive(s.entityIDs, e.GetEntityId(), now) ||
		hasActive(s.eventTypes, e.GetEventType(), now) ||
		hasActive(s.origins, e.GetOrigin(), now) {
		return true
	}
	if len(s.tags) > 0 {
		for _, tag := range e.GetTags() {
			if hasActive(s.tags, tag, now) {
				return true
			}
		}
	}
	for _, r := range s.topics {
		if active(r.expires, now) && matchTopic(r.pattern, e.GetTopic()) {
			return true
		}
	}
	for _, r := range s.regexes {
		if active(r.expires, now) && r.re.MatchString(e.GetEntityId()) {
			return true
		}
	}
	return false
}

func hasActive(m map[string]int64, key string, now int64) bool {
	if len(m) == 0 {
		return false
	}
	exp, ok := m[key]
	return ok && active(exp, now)
}

func active(expires, now int64) bool { return expires == 0 || expires > now }

// Criteria returns copies of the filter's criteria, in the order given to
// Compile, expired ones included.
func (f *Filter) Criteria() []*streamdv1.FilterCriterion {
	if f == nil {
		return nil
	}
	out := make([]*streamdv1.FilterCriterion, len(f.criteria))
	for i, c := range f.criteria {
		out[i] = proto.CloneOf(c)
	}
	return out
}

// NextExpiry returns the earliest expiry after now, when the filter's
// behaviour next changes, and false if no criterion expires after now.
func (f *Filter) NextExpiry(now time.Time) (time.Time, bool) {
	if f == nil {
		return time.Time{}, false
	}
	t, next := now.UnixNano(), int64(0)
	for _, c := range f.criteria {
		if exp := c.GetExpiresAtUnixNano(); exp > t && (next == 0 || exp < next) {
			next = exp
		}
	}
	if next == 0 {
		return time.Time{}, false
	}
	return time.Unix(0, next), true
}

// IncludeMode reports whether the filter holds any include, expired or not:
// then only events matching an active include are admitted.
func (f *Filter) IncludeMode() bool { return f != nil && f.includeMode }

type identity struct {
	action streamdv1.FilterAction
	field  streamdv1.FilterField
	value  string
}

func identityOf(c *streamdv1.FilterCriterion) identity {
	return identity{c.GetAction(), c.GetField(), c.GetValue()}
}

// Apply returns current after adding add and then removing remove, in order:
// an added criterion with the identity (action, field, value) of an existing
// one replaces it in place (to extend its ttl, say), otherwise it is
// appended; a removed one drops every criterion of that identity, so
// removal wins over an addition in the same call. Apply does not validate
// (Compile the result) and does not modify its arguments; the result shares
// the criterion messages with them.
func Apply(current, add, remove []*streamdv1.FilterCriterion) []*streamdv1.FilterCriterion {
	out := slices.Clone(current)
	for _, a := range add {
		id := identityOf(a)
		if i := slices.IndexFunc(out, func(c *streamdv1.FilterCriterion) bool { return identityOf(c) == id }); i >= 0 {
			out[i] = a
		} else {
			out = append(out, a)
		}
	}
	if len(remove) == 0 {
		return out
	}
	gone := make(map[identity]bool, len(remove))
	for _, r := range remove {
		gone[identityOf(r)] = true
	}
	return slices.DeleteFunc(out, func(c *streamdv1.FilterCriterion) bool { return gone[identityOf(c)] })
}

// Prune returns the criteria that are not expired at now, in order, sharing
// the messages with criteria. Dropping expired includes can take a filter
// out of include mode (if no other include remains it then admits
// everything not excluded), so prune only when that is what you want.
func Prune(criteria []*streamdv1.FilterCriterion, now time.Time) []*streamdv1.FilterCriterion {
	t := now.UnixNano()
	out := make([]*streamdv1.FilterCriterion, 0, len(criteria))
	for _, c := range criteria {
		if active(c.GetExpiresAtUnixNano(), t) {
			out = append(out, c)
		}
	}
	return out
}

// Missing returns the criteria of remove whose identity (action, field,
// value) no criterion of current has: removing them would change nothing,
// which an operator usually wants to hear about.
func Missing(current, remove []*streamdv1.FilterCriterion) []*streamdv1.FilterCriterion {
	have := make(map[identity]bool, len(current))
	for _, c := range current {
		have[identityOf(c)] = true
	}
	var out []*streamdv1.FilterCriterion
	for _, r := range remove {
		if !have[identityOf(r)] {
			out = append(out, r)
		}
	}
	return out
}

// Package filters owns streamd's filter criteria: the model, the CLI text
// syntax, validation with limits, compiled matching and expiry. It imports
// only the proto.
//
// A criterion (streamdv1.FilterCriterion) is an action (include or exclude), a
// field, a value, an optional expiry (expires_at_unix_nano, 0 = never) and,
// for includes of an exact entity id only, a replay_from_seq_nr. Its identity
// is (action, field, value): adding a criterion with the same identity
// replaces the old one (to extend its ttl, say), removing goes by identity.
//
// Fields and how they match an event:
//
//   - ENTITY_TYPE, ENTITY_ID, EVENT_TYPE: the event's field equals the value.
//   - ENTITY_ID_REGEX: an RE2 regular expression matched against the entity
//     id with regexp.MatchString, so unanchored unless the value anchors it
//     (^test- matches "test-1", test- also matches "a-test-1").
//   - TAG: the value is one of the event's tags.
//   - TOPIC: an MQTT-style pattern over the event's topic, both split into
//     levels at "/". "+" matches exactly one level (possibly empty), "#" is
//     allowed only as the last level and matches zero or more remaining
//     levels: "car/#" matches "car", "car/1" and "car/1/speed";
//     "car/+/speed" matches "car/1/speed" but not "car/speed". A level that
//     contains "+" or "#" must be exactly that character ("a+b" is invalid).
//     Other levels compare exactly, so empty levels count: "a//b" matches
//     only "a//b", and "/" is two empty levels. An event with an empty topic
//     has no topic and matches no topic pattern, not even "#".
//
// Evaluation at time now:
//
//  1. A criterion with 0 < expires_at <= now is inactive and ignored.
//  2. If an active exclude matches, the event is rejected: excludes win.
//  3. If the set contains no include at all, expired ones counted, the event
//     is admitted. Otherwise ("include mode") it is admitted only if an
//     active include matches. Expired includes keep the filter in include
//     mode, so a temporary include that runs out narrows the stream back
//     instead of opening it to everything. Prune drops expired criteria and
//     can therefore switch include mode off; callers decide when to prune.
//
// An empty filter, and a nil *Filter, admit every event.
//
// Validation (Validate, Compile and Parse) refuses: an unspecified or
// unknown action or field; an empty value, a value that is not valid UTF-8
// or longer than Limits.MaxValueLen; a negative expiry; a replay other than
// on "include entity=ID"; a regex longer than Limits.MaxRegexLen, one that
// RE2 does not accept, or one whose simplified program exceeds
// Limits.MaxRegexProgram instructions (a{1000}b{1000} does); a malformed
// topic pattern; and more than Limits.MaxCriteria criteria in a filter. An
// expired criterion is still valid. Errors are prefixed "filters: " and name
// the criterion in its text form.
//
// A compiled Filter is immutable and safe for concurrent use. Match does not
// allocate for exact fields, tags and topics: exact values live in maps,
// topic patterns are matched by walking the strings, regexes are compiled
// once. Every compiled element keeps its own expiry, and NextExpiry tells
// the holder when the filter's behaviour next changes.
//
// # Text syntax
//
// Parse and Format use one criterion per string, whitespace-separated:
//
//	ACTION FIELD=VALUE [ttl=DURATION | until=RFC3339] [replay=N]
//
//	include tag=sports
//	exclude entity~^test-
//	include topic=car/+/speed ttl=30m
//	include entity=car-17 replay=1
//	include type=car
//	include event=SpeedSampled until=2026-11-22T10:00:00Z
//	exclude origin=eu
//
// ACTION is include or exclude. FIELD= is one of type= (entity type),
// entity= (exact entity id), entity~ (entity id regex), tag=, topic=,
// event= (event type) and origin= (the region an event was first written in). The value runs to the next whitespace; a value that
// contains whitespace, or starts with a double quote, is written as a Go
// double-quoted string: tag="a b", entity~"^a\tb$". ttl is a positive Go
// duration counted from now; until is an RFC 3339 time after now; they are
// exclusive. replay is a positive seqNr (1 = whole history). Keywords are
// lower case. Format writes the expiry as until= in RFC 3339 with
// nanoseconds in UTC, and quotes the value only when needed, so Parse reads
// Format's output back to an equal criterion.
package filters

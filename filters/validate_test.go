package filters

import (
	"fmt"
	"strings"
	"testing"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

const (
	include = streamdv1.FilterAction_FILTER_ACTION_INCLUDE
	exclude = streamdv1.FilterAction_FILTER_ACTION_EXCLUDE

	entityType = streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE
	entityID   = streamdv1.FilterField_FILTER_FIELD_ENTITY_ID
	regex      = streamdv1.FilterField_FILTER_FIELD_ENTITY_ID_REGEX
	tag        = streamdv1.FilterField_FILTER_FIELD_TAG
	topic      = streamdv1.FilterField_FILTER_FIELD_TOPIC
	eventType  = streamdv1.FilterField_FILTER_FIELD_EVENT_TYPE
)

func crit(a streamdv1.FilterAction, f streamdv1.FilterField, v string) *streamdv1.FilterCriterion {
	return &streamdv1.FilterCriterion{Action: a, Field: f, Value: v}
}

func withReplay(c *streamdv1.FilterCriterion, n uint64) *streamdv1.FilterCriterion {
	c.ReplayFromSeqNr = n
	return c
}

func withExpiry(c *streamdv1.FilterCriterion, ns int64) *streamdv1.FilterCriterion {
	c.ExpiresAtUnixNano = ns
	return c
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		c    *streamdv1.FilterCriterion
		lim  Limits
		want string // "" = valid; else the error after `filters: criterion "<Format(c)>": `
	}{
		{"entity type", crit(include, entityType, "car"), Limits{}, ""},
		{"entity id", crit(exclude, entityID, "car-17"), Limits{}, ""},
		{"regex", crit(include, regex, "^test-[0-9]+$"), Limits{}, ""},
		{"tag", crit(include, tag, "sports"), Limits{}, ""},
		{"topic", crit(include, topic, "car/+/speed"), Limits{}, ""},
		{"topic hash", crit(include, topic, "car/#"), Limits{}, ""},
		{"topic empty levels", crit(include, topic, "a//b"), Limits{}, ""},
		{"topic slash", crit(include, topic, "/"), Limits{}, ""},
		{"topic wildcards only", crit(include, topic, "+/+/#"), Limits{}, ""},
		{"event type", crit(include, eventType, "SpeedSampled"), Limits{}, ""},
		{"replay on include entity", withReplay(crit(include, entityID, "car-17"), 1), Limits{}, ""},
		{"expired is still valid", withExpiry(crit(include, tag, "a"), 1), Limits{}, ""},
		{"value at the limit", crit(include, tag, strings.Repeat("x", 1024)), Limits{}, ""},
		{"regex program at a custom limit", crit(include, regex, "a{10}"), Limits{MaxRegexProgram: 12}, ""},

		{"unspecified action", crit(0, tag, "a"), Limits{}, "action is unspecified (want include or exclude)"},
		{"unknown action", crit(7, tag, "a"), Limits{}, "unknown action 7 (want include or exclude)"},
		{"unspecified field", crit(include, 0, "a"), Limits{}, "field is unspecified"},
		{"unknown field", crit(include, 9, "a"), Limits{}, "unknown field 9"},
		{"empty value", crit(include, tag, ""), Limits{}, "value is empty"},
		{"value too long by default", crit(include, tag, strings.Repeat("x", 1025)), Limits{}, "value is 1025 bytes, limit is 1024"},
		{"value too long, custom", crit(include, entityID, "123456789"), Limits{MaxValueLen: 8}, "value is 9 bytes, limit is 8"},
		{"invalid UTF-8", crit(include, tag, "a\xffb"), Limits{}, "value is not valid UTF-8"},
		{"negative expiry", withExpiry(crit(include, tag, "a"), -1), Limits{}, "expires_at_unix_nano -1 is negative"},
		{"replay on exclude", withReplay(crit(exclude, entityID, "a"), 1), Limits{}, "replay is only allowed on include entity=ID"},
		{"replay on tag", withReplay(crit(include, tag, "a"), 1), Limits{}, "replay is only allowed on include entity=ID"},
		{"replay on regex", withReplay(crit(include, regex, "a"), 1), Limits{}, "replay is only allowed on include entity=ID"},
		{"invalid regex", crit(include, regex, "("), Limits{}, "invalid regex: error parsing regexp: missing closing ): `(`"},
		{"regex repeat beyond RE2", crit(include, regex, "(a{1,1000}){1,1000}"), Limits{}, "invalid regex: error parsing regexp: invalid repeat count: `{1,1000}`"},
		{"regex too long", crit(include, regex, "abcde"), Limits{MaxRegexLen: 4}, "regex is 5 bytes, limit is 4"},
		{"regex program too big", crit(include, regex, "a{1000}b{1000}"), Limits{}, "regex compiles to 2002 instructions, limit is 2000; use smaller repeat counts"},
		{"regex program too big, alternation", crit(exclude, regex, "(a|b|c){1,1000}"), Limits{}, "regex compiles to 4001 instructions, limit is 2000; use smaller repeat counts"},
		{"regex program over a custom limit", crit(include, regex, "a{10}"), Limits{MaxRegexProgram: 11}, "regex compiles to 12 instructions, limit is 11; use smaller repeat counts"},
		{"topic plus inside a level", crit(include, topic, "a+b"), Limits{}, `invalid topic pattern: level "a+b" mixes a wildcard with text ("+" and "#" must be a whole level)`},
		{"topic hash inside a level", crit(include, topic, "a/b#"), Limits{}, `invalid topic pattern: level "b#" mixes a wildcard with text ("+" and "#" must be a whole level)`},
		{"topic hash not last", crit(include, topic, "a/#/b"), Limits{}, `invalid topic pattern: "#" must be the last level`},
		{"topic hash then empty level", crit(include, topic, "#/"), Limits{}, `invalid topic pattern: "#" must be the last level`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.c, tt.lim)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			want := fmt.Sprintf("filters: criterion %q: %s", Format(tt.c), tt.want)
			if err == nil || err.Error() != want {
				t.Fatalf("Validate = %v\nwant       %s", err, want)
			}
		})
	}
}

func TestValidateMessageNamesCriterion(t *testing.T) {
	err := Validate(crit(include, regex, "("), Limits{})
	want := "filters: criterion \"include entity~(\": invalid regex: "
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Validate = %v, want prefix %q", err, want)
	}
	if err := Validate(nil, Limits{}); err == nil || err.Error() != "filters: criterion is nil" {
		t.Errorf("Validate(nil) = %v", err)
	}
}

func TestLimitsDefaults(t *testing.T) {
	if got, want := (Limits{}).withDefaults(), (Limits{256, 1024, 1024, 2000}); got != want {
		t.Errorf("Limits{}.withDefaults() = %+v, want %+v", got, want)
	}
	if got, want := (Limits{MaxCriteria: 3, MaxRegexProgram: -1}).withDefaults(), (Limits{3, 1024, 1024, 2000}); got != want {
		t.Errorf("withDefaults() = %+v, want %+v", got, want)
	}
}

func TestCompileErrors(t *testing.T) {
	many := func(n int) []*streamdv1.FilterCriterion {
		cs := make([]*streamdv1.FilterCriterion, n)
		for i := range cs {
			cs[i] = crit(include, tag, fmt.Sprint("t", i))
		}
		return cs
	}
	tests := []struct {
		name     string
		criteria []*streamdv1.FilterCriterion
		lim      Limits
		want     string // "" = compiles
	}{
		{"at the default count", many(256), Limits{}, ""},
		{"over the default count", many(257), Limits{}, "filters: 257 criteria, limit is 256"},
		{"at a custom count", many(3), Limits{MaxCriteria: 3}, ""},
		{"over a custom count", many(4), Limits{MaxCriteria: 3}, "filters: 4 criteria, limit is 3"},
		{"first bad criterion is named",
			[]*streamdv1.FilterCriterion{crit(include, tag, "a"), crit(include, topic, "a+"), crit(include, regex, "(")}, Limits{},
			`filters: criterion "include topic=a+": invalid topic pattern: level "a+" mixes a wildcard with text ("+" and "#" must be a whole level)`},
		{"limits apply", []*streamdv1.FilterCriterion{crit(include, tag, "abc")}, Limits{MaxValueLen: 2},
			`filters: criterion "include tag=abc": value is 3 bytes, limit is 2`},
		{"nil criterion", []*streamdv1.FilterCriterion{crit(include, tag, "a"), nil}, Limits{}, "filters: criterion is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Compile(tt.criteria, tt.lim)
			if tt.want == "" {
				if err != nil || f == nil {
					t.Fatalf("Compile = %v, %v", f, err)
				}
				if len(f.Criteria()) != len(tt.criteria) {
					t.Errorf("Criteria() has %d, want %d", len(f.Criteria()), len(tt.criteria))
				}
				return
			}
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Compile error = %v\nwant              %s", err, tt.want)
			}
			if f != nil {
				t.Error("Compile returned a filter with an error")
			}
		})
	}
}

package filters

import (
	"strconv"
	"strings"
	"testing"
	"time"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"google.golang.org/protobuf/proto"
)

func TestParse(t *testing.T) {
	tests := []struct {
		text string
		want *streamdv1.FilterCriterion
	}{
		{"include tag=sports", crit(include, tag, "sports")},
		{"exclude entity~^test-", crit(exclude, regex, "^test-")},
		{"include topic=car/+/speed ttl=30m", withExpiry(crit(include, topic, "car/+/speed"), now0.Add(30*time.Minute).UnixNano())},
		{"include entity=car-17 replay=1", withReplay(crit(include, entityID, "car-17"), 1)},
		{"include type=car", crit(include, entityType, "car")},
		{"include event=SpeedSampled until=2026-11-22T10:00:00Z",
			withExpiry(crit(include, eventType, "SpeedSampled"), time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC).UnixNano())},
		{"include event=X until=2026-05-01T14:00:00.000000001+02:00", withExpiry(crit(include, eventType, "X"), now0.UnixNano()+1)},
		{"include entity=a replay=7 ttl=1h", withExpiry(withReplay(crit(include, entityID, "a"), 7), now0.Add(time.Hour).UnixNano())},
		{"include entity=a ttl=1ns replay=007", withExpiry(withReplay(crit(include, entityID, "a"), 7), now0.UnixNano()+1)},
		{"  \tinclude   tag=a \n", crit(include, tag, "a")},
		{"include tag=a=b", crit(include, tag, "a=b")},
		{"include tag=a~b", crit(include, tag, "a~b")},
		{"include entity~a=b", crit(include, regex, "a=b")},
		{`include tag=a"b`, crit(include, tag, `a"b`)},
		{`include entity~"a b"`, crit(include, regex, "a b")},
		{`include tag="a b" ttl=1m`, withExpiry(crit(include, tag, "a b"), now0.Add(time.Minute).UnixNano())},
		{`include tag="\"quoted\""`, crit(include, tag, `"quoted"`)},
		{`include tag="tab\there"`, crit(include, tag, "tab\there")},
		{`include tag="x"`, crit(include, tag, "x")},
		{"include tag=ünïcödé", crit(include, tag, "ünïcödé")},
		{"include topic=a//b", crit(include, topic, "a//b")},
		{"include topic=#", crit(include, topic, "#")},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			got, err := Parse(tt.text, now0)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tt.want) {
				t.Fatalf("Parse = %v, want %v", got, tt.want)
			}
			back, err := Parse(Format(got), now0)
			if err != nil || !proto.Equal(back, got) {
				t.Fatalf("Parse(Format = %q) = %v, %v; want %v", Format(got), back, err, got)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ text, want string }{
		{"include colour=red", `unknown field "colour" (want type, entity, entity~, tag, topic, event, origin)`},
		{"include tag~a", `unknown field "tag~" (want type, entity, entity~, tag, topic, event, origin)`},
		{"include Tag=a", `unknown field "Tag" (want type, entity, entity~, tag, topic, event, origin)`},
		{"", "empty criterion (want ACTION FIELD=VALUE, e.g. include tag=sports)"},
		{" \t ", "empty criterion (want ACTION FIELD=VALUE, e.g. include tag=sports)"},
		{"allow tag=a", `unknown action "allow" (want include or exclude)`},
		{"Include tag=a", `unknown action "Include" (want include or exclude)`},
		{"include", `missing FIELD=VALUE after the action, got "" (want type, entity, entity~, tag, topic, event, origin)`},
		{"include tag", `missing FIELD=VALUE after the action, got "tag" (want type, entity, entity~, tag, topic, event, origin)`},
		{"include tag =a", `missing FIELD=VALUE after the action, got "tag" (want type, entity, entity~, tag, topic, event, origin)`},
		{"include tag=", "value is empty"},
		{"include tag= a", "value is empty"},
		{`include tag=""`, "value is empty"},
		{`include tag="a b`, `bad quoted value "a b: want a Go double-quoted string`},
		{`include tag="a"b`, `quoted value "a" must be followed by whitespace`},
		{"include tag=a b", `unexpected "b" after the value (double-quote a value that contains spaces, e.g. tag="a b")`},
		{"include tag=a ttl=0", "ttl=0: want a positive duration such as 30m or 2h"},
		{"include tag=a ttl=-1m", "ttl=-1m: want a positive duration such as 30m or 2h"},
		{"include tag=a ttl=soon", "ttl=soon: want a positive duration such as 30m or 2h"},
		{"include tag=a ttl=2562047h", "ttl=2562047h: too long"},
		{"include tag=a ttl=1m ttl=2m", "ttl= given twice"},
		{"include tag=a ttl=1m until=2027-01-01T00:00:00Z", "ttl= and until= are exclusive"},
		{"include tag=a until=2026-05-01T12:00:00Z", "until=2026-05-01T12:00:00Z: not after now (2026-05-01T12:00:00Z)"},
		{"include tag=a until=2020-01-01T00:00:00Z", "until=2020-01-01T00:00:00Z: not after now (2026-05-01T12:00:00Z)"},
		{"include tag=a until=tomorrow", "until=tomorrow: want an RFC 3339 time such as 2026-11-22T10:00:00Z"},
		{"include tag=a until=2027-01-01", "until=2027-01-01: want an RFC 3339 time such as 2026-11-22T10:00:00Z"},
		{"include tag=a until=3000-01-01T00:00:00Z", "until=3000-01-01T00:00:00Z: too far in the future"},
		{"include entity=a replay=0", "replay=0: want a positive seqNr (1 = whole history)"},
		{"include entity=a replay=-1", "replay=-1: want a positive seqNr (1 = whole history)"},
		{"include entity=a replay=x", "replay=x: want a positive seqNr (1 = whole history)"},
		{"include tag=a color=red", `unknown option "color" (want ttl=DURATION, until=RFC3339 or replay=SEQNR)`},
		{"exclude entity=a replay=1", "replay is only allowed on include entity=ID"},
		{"include tag=a replay=1", "replay is only allowed on include entity=ID"},
		{"include entity~a replay=1", "replay is only allowed on include entity=ID"},
		{"include entity~(", "invalid regex: error parsing regexp: missing closing ): `(`"},
		{"include entity~a{1000}b{1000}", "regex compiles to 2002 instructions, limit is 2000; use smaller repeat counts"},
		{"include topic=a+b", `invalid topic pattern: level "a+b" mixes a wildcard with text ("+" and "#" must be a whole level)`},
		{"include topic=#/a", `invalid topic pattern: "#" must be the last level`},
		{"include tag=" + strings.Repeat("x", 1025), "value is 1025 bytes, limit is 1024"},
		{"include tag=a\xff", "value is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.text, func(t *testing.T) {
			c, err := Parse(tt.text, now0)
			want := "filters: " + strconv.Quote(tt.text) + ": " + tt.want
			if err == nil || err.Error() != want {
				t.Fatalf("Parse = %v, %v\nwant error %s", c, err, want)
			}
			if c != nil {
				t.Error("Parse returned a criterion with an error")
			}
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		c    *streamdv1.FilterCriterion
		want string
	}{
		{crit(include, tag, "sports"), "include tag=sports"},
		{crit(exclude, regex, "^test-"), "exclude entity~^test-"},
		{crit(include, entityType, "car"), "include type=car"},
		{crit(include, eventType, "E"), "include event=E"},
		{crit(include, topic, "car/#"), "include topic=car/#"},
		{withReplay(crit(include, entityID, "car-17"), 1), "include entity=car-17 replay=1"},
		{withExpiry(crit(include, tag, "a"), time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC).UnixNano()),
			"include tag=a until=2026-11-22T10:00:00Z"},
		{withExpiry(crit(include, tag, "a"), now0.UnixNano()+1), "include tag=a until=2026-05-01T12:00:00.000000001Z"},
		{withReplay(withExpiry(crit(include, entityID, "a"), now0.UnixNano()), 3), "include entity=a until=2026-05-01T12:00:00Z replay=3"},
		{crit(include, tag, "a b"), `include tag="a b"`},
		{crit(include, tag, `"a`), `include tag="\"a"`},
		{crit(include, tag, `a"`), `include tag=a"`},
		{crit(include, tag, ""), `include tag=""`},
		{crit(include, tag, "a\u00a0b"), `include tag="a\u00a0b"`},
		{crit(include, tag, "a\u200bb"), `include tag="a\u200bb"`},
		{crit(include, tag, "a\x01"), `include tag="a\x01"`},
		{crit(include, tag, "\xff"), `include tag="\xff"`},
		{crit(include, tag, "ünï"), "include tag=ünï"},
		{crit(0, 9, "x"), "action(0) field(9)=x"},
		{crit(5, 0, "x"), "action(5) field(0)=x"},
		{nil, "action(0) field(0)=\"\""},
	}
	for _, tt := range tests {
		if got := Format(tt.c); got != tt.want {
			t.Errorf("Format(%v) = %s, want %s", tt.c, got, tt.want)
		}
		if Validate(tt.c, Limits{}) != nil {
			continue
		}
		if back, err := Parse(tt.want, now0.Add(-time.Second)); err != nil || !proto.Equal(back, tt.c) {
			t.Errorf("Parse(%s) = %v, %v; want %v", tt.want, back, err, tt.c)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"include tag=sports",
		"exclude entity~^test-",
		"include topic=car/+/speed ttl=30m",
		"include entity=car-17 replay=1",
		"include type=car",
		"include event=SpeedSampled until=2026-11-22T10:00:00Z",
		"include event=X until=2026-05-01T14:00:00.5+02:00 ",
		`include entity~"a b" ttl=1h`,
		`include tag="\"q\"\u00a0\x01"`,
		"include tag=a\u00a0b",
		"exclude topic=a//b",
		"include entity=a ttl=1m replay=9",
		"include colour=red",
		"include tag=a ttl=1m until=2027-01-01T00:00:00Z",
		"include tag=\xff",
		"include topic=#/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		c, err := Parse(text, now0)
		if err != nil {
			if c != nil || !strings.HasPrefix(err.Error(), "filters: ") {
				t.Fatalf("Parse(%q) = %v, %v", text, c, err)
			}
			return
		}
		if err := Validate(c, Limits{}); err != nil {
			t.Fatalf("Parse(%q) accepted a criterion Validate refuses: %v", text, err)
		}
		formatted := Format(c)
		back, err := Parse(formatted, now0)
		if err != nil {
			t.Fatalf("Parse(%q) = %v; Parse(Format = %q): %v", text, c, formatted, err)
		}
		if !proto.Equal(back, c) {
			t.Fatalf("Parse(%q) = %v; Parse(Format = %q) = %v", text, c, formatted, back)
		}
	})
}

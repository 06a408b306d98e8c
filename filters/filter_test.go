package filters

import (
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMatch(t *testing.T) {
	car := ev("car", "car-17", "SpeedSampled", "car/17/speed", "sports", "eu")
	fromEU := ev("car", "car-18", "SpeedSampled", "car/18/speed")
	fromEU.Origin = "eu"
	tests := []struct {
		name     string
		criteria []string
		event    *streamdv1.Event
		want     bool
	}{
		{"empty filter admits", nil, car, true},

		{"type match", []string{"include type=car"}, car, true},
		{"type miss", []string{"include type=bike"}, car, false},
		{"type is exact", []string{"include type=ca"}, car, false},
		{"entity match", []string{"include entity=car-17"}, car, true},
		{"entity is exact", []string{"include entity=car-1"}, car, false},
		{"regex anchored match", []string{"include entity~^car-"}, car, true},
		{"regex anchored miss", []string{"include entity~^ar-"}, car, false},
		{"regex unanchored", []string{"include entity~ar-1"}, car, true},
		{"regex whole id", []string{"include entity~^car-1$"}, car, false},
		{"tag match", []string{"include tag=eu"}, car, true},
		{"tag miss", []string{"include tag=us"}, car, false},
		{"tag none on event", []string{"include tag=eu"}, ev("car", "1", "X", "t"), false},
		{"topic plus", []string{"include topic=car/+/speed"}, car, true},
		{"topic hash", []string{"include topic=car/#"}, car, true},
		{"topic miss", []string{"include topic=car/+/gps"}, car, false},
		{"empty topic never matches", []string{"include topic=#"}, ev("car", "1", "X", ""), false},
		{"event type match", []string{"include event=SpeedSampled"}, car, true},
		{"event type miss", []string{"include event=Speed"}, car, false},
		{"origin excluded", []string{"exclude origin=eu"}, fromEU, false},
		{"other origin passes", []string{"exclude origin=us"}, fromEU, true},
		{"no origin passes an origin exclude", []string{"exclude origin=eu"}, car, true},

		{"includes are ORed", []string{"include type=bike", "include tag=sports"}, car, true},
		{"exclude only rejects match", []string{"exclude tag=sports"}, car, false},
		{"exclude only admits rest", []string{"exclude tag=debug"}, car, true},
		{"exclude wins over include", []string{"include type=car", "exclude entity~^car-1"}, car, false},
		{"exclude wins in any order", []string{"exclude entity=car-17", "include type=car"}, car, false},
		{"exclude and include of the same value", []string{"include tag=eu", "exclude tag=eu"}, car, false},
		{"include admits when exclude misses", []string{"include type=car", "exclude entity~-test$"}, car, true},
		{"include mode rejects unmatched", []string{"include type=bike", "exclude tag=debug"}, car, false},
		{"exclude of empty topic does not exclude", []string{"exclude topic=#"}, ev("car", "1", "X", ""), true},
		{"exclude topic", []string{"exclude topic=car/#"}, car, false},
		{"exclude regex", []string{"exclude entity~17"}, car, false},
		{"exclude event type", []string{"exclude event=SpeedSampled"}, car, false},
		{"exclude type", []string{"exclude type=car"}, car, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := parseAll(t, tt.criteria...)
			f, err := Compile(cs, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Match(tt.event, now0); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
			if got := refMatch(cs, tt.event, now0); got != tt.want {
				t.Errorf("reference = %v, want %v (the reference is wrong)", got, tt.want)
			}
		})
	}
}

func TestNilFilter(t *testing.T) {
	var f *Filter
	if !f.Match(ev("a", "b", "c", "d"), now0) {
		t.Error("nil filter rejected an event")
	}
	if f.IncludeMode() || f.Criteria() != nil {
		t.Error("nil filter has include mode or criteria")
	}
	if _, ok := f.NextExpiry(now0); ok {
		t.Error("nil filter has an expiry")
	}
}

// TestExpiryPerKind checks that every kind of compiled element, include and
// exclude, honours its own expiry: active up to expires_at, inactive at it.
func TestExpiryPerKind(t *testing.T) {
	e := ev("car", "car-17", "SpeedSampled", "car/17/speed", "sports")
	exp := now0.Add(time.Minute)
	for _, text := range []string{
		"type=car", "entity=car-17", "entity~^car", "tag=sports", "topic=car/+/speed", "event=SpeedSampled",
	} {
		t.Run(text, func(t *testing.T) {
			inc := compileText(t, "include "+text+" ttl=1m")
			if !inc.Match(e, exp.Add(-time.Nanosecond)) {
				t.Error("include rejected before its expiry")
			}
			if inc.Match(e, exp) {
				t.Error("include admitted at its expiry (the filter stays in include mode)")
			}
			exc := compileText(t, "exclude "+text+" ttl=1m")
			if exc.Match(e, exp.Add(-time.Nanosecond)) {
				t.Error("exclude admitted before its expiry")
			}
			if !exc.Match(e, exp) {
				t.Error("exclude rejected at its expiry")
			}
		})
	}
}

func TestExpiry(t *testing.T) {
	a := ev("car", "1", "X", "t", "a")
	b := ev("car", "2", "X", "t", "b")
	none := ev("car", "3", "X", "t")
	type check struct {
		at    time.Duration // after now0
		event *streamdv1.Event
		want  bool
	}
	tests := []struct {
		name     string
		criteria []string
		checks   []check
	}{
		{"temporary include narrows back", []string{"include tag=a ttl=1m"}, []check{
			{0, a, true}, {0, none, false}, {time.Minute, a, false}, {time.Minute, none, false}, {time.Hour, b, false},
		}},
		{"temporary include beside a permanent one", []string{"include tag=a ttl=1m", "include tag=b"}, []check{
			{0, a, true}, {0, b, true}, {time.Minute, a, false}, {time.Minute, b, true},
		}},
		{"temporary exclude opens up", []string{"exclude tag=a ttl=1m"}, []check{
			{0, a, false}, {0, none, true}, {time.Minute, a, true},
		}},
		{"duplicates keep the later expiry", []string{"include tag=a ttl=1m", "include tag=a ttl=2m"}, []check{
			{90 * time.Second, a, true}, {2 * time.Minute, a, false},
		}},
		{"duplicates keep the later expiry, reversed", []string{"include tag=a ttl=2m", "include tag=a ttl=1m"}, []check{
			{90 * time.Second, a, true}, {2 * time.Minute, a, false},
		}},
		{"a permanent duplicate never expires", []string{"include tag=a ttl=1m", "include tag=a", "include tag=a ttl=2m"}, []check{
			{time.Hour, a, true},
		}},
		{"duplicate topics and regexes", []string{"include topic=t ttl=1m", "include topic=t ttl=2m", "exclude entity~^1 ttl=1m", "exclude entity~^1 ttl=2m"}, []check{
			{90 * time.Second, a, false}, {90 * time.Second, b, true}, {2 * time.Minute, a, false}, {2 * time.Minute, b, false},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cs := parseAll(t, tt.criteria...)
			f, err := Compile(cs, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tt.checks {
				at := now0.Add(c.at)
				if got := f.Match(c.event, at); got != c.want {
					t.Errorf("at +%v, event %v: Match = %v, want %v", c.at, c.event.Tags, got, c.want)
				}
				if got := refMatch(cs, c.event, at); got != c.want {
					t.Errorf("at +%v, event %v: reference = %v, want %v", c.at, c.event.Tags, got, c.want)
				}
			}
		})
	}
}

func TestIncludeModeAndPrune(t *testing.T) {
	cs := parseAll(t, "include type=car ttl=1m", "exclude tag=debug ttl=2m", "exclude tag=noise")
	later := now0.Add(time.Minute)
	f, err := Compile(cs, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if !f.IncludeMode() {
		t.Fatal("IncludeMode = false with an include")
	}
	if f.Match(ev("bike", "1", "X", "t"), later) {
		t.Error("expired include opened the filter")
	}

	pruned := Prune(cs, later)
	if got, want := formatAll(pruned), formatAll(cs[1:]); !slices.Equal(got, want) {
		t.Fatalf("Prune = %q, want %q", got, want)
	}
	if len(cs) != 3 {
		t.Fatal("Prune modified its argument")
	}
	f, err = Compile(pruned, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if f.IncludeMode() {
		t.Error("IncludeMode = true after pruning the only include")
	}
	if !f.Match(ev("bike", "1", "X", "t"), later) {
		t.Error("pruned filter without includes rejected an event")
	}
	if f.Match(ev("bike", "1", "X", "t", "noise"), later) {
		t.Error("pruned filter lost its permanent exclude")
	}
	if got := Prune(cs, now0.Add(time.Hour)); len(got) != 1 || Format(got[0]) != "exclude tag=noise" {
		t.Errorf("Prune an hour later = %q", formatAll(got))
	}
}

func TestNextExpiry(t *testing.T) {
	f := compileText(t, "include tag=a ttl=2m", "exclude tag=b ttl=1m", "include tag=c", "exclude topic=x ttl=2m")
	tests := []struct {
		at     time.Duration
		want   time.Duration
		wantOK bool
	}{
		{0, time.Minute, true},
		{time.Minute - 1, time.Minute, true},
		{time.Minute, 2 * time.Minute, true},
		{2 * time.Minute, 0, false},
		{time.Hour, 0, false},
	}
	for _, tt := range tests {
		got, ok := f.NextExpiry(now0.Add(tt.at))
		if ok != tt.wantOK || (ok && !got.Equal(now0.Add(tt.want))) {
			t.Errorf("NextExpiry(+%v) = %v, %v; want +%v, %v", tt.at, got, ok, tt.want, tt.wantOK)
		}
	}
	if _, ok := compileText(t, "include tag=a").NextExpiry(now0); ok {
		t.Error("NextExpiry without expiring criteria reported one")
	}
}

func TestCriteriaAreCopies(t *testing.T) {
	cs := parseAll(t, "include tag=a", "exclude tag=b")
	f, err := Compile(cs, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	cs[0].Value = "changed"
	got := f.Criteria()
	if want := []string{"include tag=a", "exclude tag=b"}; !slices.Equal(formatAll(got), want) {
		t.Fatalf("Criteria = %q, want %q", formatAll(got), want)
	}
	got[1].Value = "changed"
	if Format(f.Criteria()[1]) != "exclude tag=b" {
		t.Error("changing a returned criterion changed the filter")
	}
	if !f.Match(ev("x", "y", "z", "t", "a"), now0) {
		t.Error("changing an input criterion after Compile changed matching")
	}
}

func TestApply(t *testing.T) {
	tests := []struct {
		name                 string
		current, add, remove []string
		want                 []string
	}{
		{"add appends", []string{"include tag=a"}, []string{"include tag=b"}, nil,
			[]string{"include tag=a", "include tag=b"}},
		{"add replaces in place", []string{"include tag=a ttl=1m", "include tag=b"}, []string{"include tag=a ttl=1h"}, nil,
			[]string{"include tag=a ttl=1h", "include tag=b"}},
		{"identity includes the action", []string{"include tag=a"}, []string{"exclude tag=a"}, nil,
			[]string{"include tag=a", "exclude tag=a"}},
		{"identity includes the field", []string{"include entity=a"}, []string{"include entity~a"}, nil,
			[]string{"include entity=a", "include entity~a"}},
		{"remove by identity ignores expiry and replay", []string{"include entity=a replay=5 ttl=1m", "include tag=b"}, nil, []string{"include entity=a"},
			[]string{"include tag=b"}},
		{"remove of an unknown criterion", []string{"include tag=a"}, nil, []string{"exclude tag=a", "include tag=b"},
			[]string{"include tag=a"}},
		{"remove wins over add", []string{"include tag=a"}, []string{"include tag=b"}, []string{"include tag=b"},
			[]string{"include tag=a"}},
		{"order preserved", []string{"include tag=a", "include tag=b", "include tag=c"}, []string{"include tag=d", "include tag=b ttl=1m"}, []string{"include tag=a"},
			[]string{"include tag=b ttl=1m", "include tag=c", "include tag=d"}},
		{"everything from nothing", nil, []string{"include tag=a"}, nil, []string{"include tag=a"}},
		{"remove all", []string{"include tag=a"}, nil, []string{"include tag=a"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			current := parseAll(t, tt.current...)
			before := formatAll(current)
			got := Apply(current, parseAll(t, tt.add...), parseAll(t, tt.remove...))
			if want := formatAll(parseAll(t, tt.want...)); !slices.Equal(formatAll(got), want) {
				t.Errorf("Apply = %q, want %q", formatAll(got), want)
			}
			if !slices.Equal(formatAll(current), before) {
				t.Errorf("Apply modified current: %q, was %q", formatAll(current), before)
			}
		})
	}
}

// vocabulary for random filters and events that hit each other often.
var (
	randTypes  = []string{"car", "truck", "bike"}
	randIDs    = []string{"car-1", "car-17", "test-3", "truck-9", ""}
	randRegex  = []string{"^car-", "1", "^test-", "-[0-9]$", "^$"}
	randTags   = []string{"a", "b", "c"}
	randTopics = []string{"car/#", "car/+/speed", "+", "#", "a//b", "/", "+/+", "car", "truck/+/#"}
	randEvTops = []string{"car", "car/1/speed", "car/1", "a//b", "/", "x/y", "", "truck/9/gps/fix"}
	randEvents = []string{"Speed", "Alarm"}
)

func randCriterion(r *rand.Rand) *streamdv1.FilterCriterion {
	c := &streamdv1.FilterCriterion{
		Action: streamdv1.FilterAction(1 + r.IntN(2)),
		Field:  streamdv1.FilterField(1 + r.IntN(6)),
	}
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	switch c.Field {
	case streamdv1.FilterField_FILTER_FIELD_ENTITY_TYPE:
		c.Value = pick(randTypes)
	case streamdv1.FilterField_FILTER_FIELD_ENTITY_ID:
		c.Value = pick(randIDs[:4])
	case streamdv1.FilterField_FILTER_FIELD_ENTITY_ID_REGEX:
		c.Value = pick(randRegex)
	case streamdv1.FilterField_FILTER_FIELD_TAG:
		c.Value = pick(randTags)
	case streamdv1.FilterField_FILTER_FIELD_TOPIC:
		c.Value = pick(randTopics)
	case streamdv1.FilterField_FILTER_FIELD_EVENT_TYPE:
		c.Value = pick(randEvents)
	}
	if r.IntN(3) == 0 {
		c.ExpiresAtUnixNano = now0.Add(time.Duration(1+r.IntN(4)) * time.Minute).UnixNano()
	}
	return c
}

func randEvent(r *rand.Rand) *streamdv1.Event {
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	e := ev(pick(randTypes), pick(randIDs), pick(randEvents), pick(randEvTops))
	for range r.IntN(3) {
		e.Tags = append(e.Tags, pick(randTags))
	}
	return e
}

// TestMatchAgreesWithReference compares Match with the naive reference on
// random filters, events and times.
func TestMatchAgreesWithReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	admitted := 0
	const rounds = 3000
	for range rounds {
		cs := make([]*streamdv1.FilterCriterion, r.IntN(6))
		for i := range cs {
			cs[i] = randCriterion(r)
		}
		f, err := Compile(cs, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		e := randEvent(r)
		at := now0.Add(time.Duration(r.IntN(6)) * time.Minute)
		got, want := f.Match(e, at), refMatch(cs, e, at)
		if got != want {
			t.Fatalf("criteria %q, event %v, at +%v: Match = %v, reference %v",
				formatAll(cs), e, at.Sub(now0), got, want)
		}
		if got {
			admitted++
		}
	}
	// Both outcomes must be common, or the comparison says little.
	if admitted < rounds/10 || admitted > rounds*9/10 {
		t.Errorf("%d of %d admitted; the random vocabulary is unbalanced", admitted, rounds)
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	f := compileText(t, "include type=car", "include entity=truck-9", "include tag=a", "include topic=car/+/speed",
		"include topic=truck/#", "include event=Alarm", "exclude tag=debug", "exclude topic=+/+/debug", "include tag=b ttl=1m")
	events := []*streamdv1.Event{
		ev("car", "car-1", "Speed", "car/1/speed"),
		ev("bike", "bike-1", "Speed", "bike/1/speed", "x", "y", "b"),
		ev("bike", "bike-2", "Speed", "bike/2/debug", "debug"),
		ev("truck", "truck-8", "Alarm", "truck/8/gps/fix"),
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, e := range events {
			f.Match(e, now0)
		}
	})
	if allocs != 0 {
		t.Errorf("Match allocates %v times per run", allocs)
	}
}

func TestMatchConcurrent(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	cs := make([]*streamdv1.FilterCriterion, 12)
	for i := range cs {
		cs[i] = randCriterion(r)
	}
	f, err := Compile(cs, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	events := make([]*streamdv1.Event, 200)
	want := make([]bool, len(events))
	for i := range events {
		events[i] = randEvent(r)
		want[i] = refMatch(cs, events[i], now0)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for i, e := range events {
				if got := f.Match(e, now0); got != want[i] {
					t.Errorf("event %v: Match = %v, want %v", e, got, want[i])
				}
			}
		})
	}
	wg.Wait()
}

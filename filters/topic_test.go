package filters

import "testing"

func TestMatchTopic(t *testing.T) {
	tests := []struct {
		pattern, topic string
		want           bool
	}{
		{"car/#", "car", true},
		{"car/#", "car/1", true},
		{"car/#", "car/1/speed", true},
		{"car/#", "car/", true},
		{"car/#", "cars", false},
		{"car/#", "ca", false},
		{"car/#", "bike/car", false},
		{"car/#", "", false},
		{"car/+/speed", "car/1/speed", true},
		{"car/+/speed", "car//speed", true},
		{"car/+/speed", "car/speed", false},
		{"car/+/speed", "car/1/2/speed", false},
		{"car/+/speed", "car/1/speed/x", false},
		{"car/+/speed", "car/1/speedy", false},
		{"+", "a", true},
		{"+", "a/b", false},
		{"+", "/", false},
		{"+", "", false},
		{"#", "a", true},
		{"#", "a/b/c", true},
		{"#", "/", true},
		{"#", "", false},
		{"+/#", "a", true},
		{"+/#", "a/b", true},
		{"+/#", "/", true},
		{"+/+", "/", true},
		{"+/+", "a", false},
		{"+/+", "a/b", true},
		{"+/+", "a/b/c", false},
		{"a//b", "a//b", true},
		{"a//b", "a/b", false},
		{"a//b", "a/x/b", false},
		{"/", "/", true},
		{"/", "", false},
		{"/", "a/", false},
		{"/", "/a", false},
		{"/", "//", false},
		{"/+", "/a", true},
		{"/+", "/", true},
		{"/+", "a", false},
		{"/#", "/", true},
		{"/#", "/a/b", true},
		{"/#", "a", false},
		{"a/b", "a/b", true},
		{"a/b", "a/b/", false},
		{"a/b", "a", false},
		{"a", "a/b", false},
		{"a/+/#", "a/b", true},
		{"a/+/#", "a/b/c/d", true},
		{"a/+/#", "a", false},
		{"a/+/#", "b/c", false},
	}
	for _, tt := range tests {
		if err := checkTopic(tt.pattern); err != nil {
			t.Fatalf("checkTopic(%q) = %v", tt.pattern, err)
		}
		if got := matchTopic(tt.pattern, tt.topic); got != tt.want {
			t.Errorf("matchTopic(%q, %q) = %v, want %v", tt.pattern, tt.topic, got, tt.want)
		}
		if got := refTopicMatch(tt.pattern, tt.topic); got != tt.want {
			t.Errorf("reference(%q, %q) = %v, want %v (the reference is wrong)", tt.pattern, tt.topic, got, tt.want)
		}
	}
}

// FuzzTopicMatch compares the allocation-free matcher and checkTopic with
// the strings.Split reference implementations.
func FuzzTopicMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"car/#", "car"}, {"car/+/speed", "car/1/speed"}, {"+", ""}, {"#", "/"},
		{"a//b", "a//b"}, {"/", "/"}, {"+/+/#", "a/b"}, {"a/#/b", "a/x/b"},
		{"a+b", "a+b"}, {"#/", "x"}, {"a/b/", "a/b/"}, {"", ""}, {"", "/"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, topic string) {
		valid := checkTopic(pattern) == nil
		if valid != refTopicValid(pattern) {
			t.Fatalf("checkTopic(%q) valid=%v, reference says %v", pattern, valid, !valid)
		}
		if !valid {
			return
		}
		if got, want := matchTopic(pattern, topic), refTopicMatch(pattern, topic); got != want {
			t.Fatalf("matchTopic(%q, %q) = %v, reference %v", pattern, topic, got, want)
		}
	})
}

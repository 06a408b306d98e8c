package group

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/internal/kubetest"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Every group size splits 0..1023 into contiguous, disjoint ranges, in
// member order; past MaxMembers the others own nothing.
func TestAssign(t *testing.T) {
	for n := 1; n <= 600; n++ {
		next := uint32(0)
		for k := range n {
			r := Assign(k, n)
			if k >= MaxMembers {
				if !isNone(r) {
					t.Fatalf("Assign(%d, %d) = %s, want none", k, n, r)
				}
				continue
			}
			if err := r.Validate(); err != nil || r.First != next || r == (offsets.SliceRange{}) {
				t.Fatalf("Assign(%d, %d) = %s (%v), want a range from %d that is not the zero range", k, n, r, err, next)
			}
			next = r.Last + 1
		}
		if next != journal.Slices {
			t.Fatalf("%d members: the ranges end at %d", n, next-1)
		}
	}
	for _, c := range []struct{ k, n int }{{-1, 3}, {3, 3}, {0, 0}} {
		if r := Assign(c.k, c.n); !isNone(r) {
			t.Errorf("Assign(%d, %d) = %s, want none", c.k, c.n, r)
		}
	}
}

func TestSubtract(t *testing.T) {
	r := func(a, b uint32) offsets.SliceRange { return offsets.SliceRange{First: a, Last: b} }
	for _, c := range []struct {
		a, b offsets.SliceRange
		want string
	}{
		{r(0, 1023), r(256, 511), "[0-255 512-1023]"},
		{r(0, 511), r(0, 511), "[]"},
		{r(0, 511), r(512, 1023), "[0-511]"},
		{r(0, 511), None, "[0-511]"},
		{None, r(0, 3), "[]"},
		{r(100, 200), r(0, 150), "[151-200]"},
	} {
		if got := fmtRanges(subtract(c.a, c.b)); got != c.want {
			t.Errorf("%s \\ %s = %s, want %s", formatRange(c.a), formatRange(c.b), got, c.want)
		}
	}
}

func fmtRanges(rs []offsets.SliceRange) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}

// The ConfigMap's state survives encoding, and a fragment written over
// others cuts them.
func TestStateEncoding(t *testing.T) {
	s := &state{owners: map[string]owner{"pod-a": {slices: offsets.SliceRange{First: 0, Last: 511}, uid: "u1"}}, offsets: map[string][]fragment{}}
	jid := "6a6f75726e616c2d6f6e652d30303031"
	s.put(jid, fragment{slices: offsets.AllSlices, offset: offsets.Offset{Offset: 10}})
	s.put(jid, fragment{slices: offsets.SliceRange{First: 100, Last: 199}, offset: offsets.Offset{Offset: 20}})
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	s.put(jid, fragment{slices: offsets.SliceRange{First: 150, Last: 160}, offset: offsets.Offset{Start: streamdv1.StartPolicy_START_POLICY_AT_TIME, StartTime: at}})
	data := s.encode(map[string]string{"other": "kept"})
	if want := "0-99=10,100-149=20,150-160=at:2030-01-02T03:04:05.000000006Z,161-199=20,200-1023=10"; data["journal."+jid] != want {
		t.Errorf("encoded %q, want %q", data["journal."+jid], want)
	}
	if data["other"] != "kept" || data["owner.pod-a"] != "0-511 u1" {
		t.Errorf("encoded %v", data)
	}
	back, err := decodeState(&corev1.ConfigMap{Data: data})
	if err != nil {
		t.Fatal(err)
	}
	if got := back.encode(nil); len(got) != 2 || got["journal."+jid] != data["journal."+jid] || got["owner.pod-a"] != data["owner.pod-a"] {
		t.Errorf("round trip: %v, want %v", got, data)
	}
	for _, bad := range []map[string]string{
		{"holds.x": ""},
		{"holds.x": "0-10,"},
		{"holds.x": "5-3"},
		{"holds.x": "0-1024"},
		{"holds.x": "0-10 u1"},
		{"holds.x": "10-20,0-5"},
		{"holds.x": "0-10,5-20"},
		{"holds.x": "0-10", "holds.y": "10-12"},
		{"owner.x": "0-511"},
		{"owner.x": "0-5111 u"},
		{"journal.zz": "0-1023=1"},
		{"journal." + jid: "0-1023=x"},
		{"journal." + jid: "0-511=1,500-1023=2"},
	} {
		if _, err := decodeState(&corev1.ConfigMap{Data: bad}); err == nil {
			t.Errorf("decodeState(%v) took it", bad)
		}
	}
}

// Holdings survive encoding, adjacent ranges merge, and the keys of
// members that hold nothing any more go.
func TestHoldsEncoding(t *testing.T) {
	r := func(a, b uint32) offsets.SliceRange { return offsets.SliceRange{First: a, Last: b} }
	s, err := decodeState(&corev1.ConfigMap{Data: map[string]string{"holds.pod-a": "0-9,10-99,200-299", "holds.pod-b": "100-199"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(s.holds); got != "map[pod-a:[0-99 200-299] pod-b:[100-199]]" {
		t.Errorf("decoded %s", got)
	}
	s.owners["pod-c"] = owner{slices: r(0, 1023), uid: "u3"}
	data := s.encode(map[string]string{"other": "kept", "holds.gone": "0-1"})
	want := map[string]string{"other": "kept", "holds.pod-a": "0-99,200-299", "holds.pod-b": "100-199", "owner.pod-c": "0-1023 u3"}
	if !maps.Equal(data, want) {
		t.Errorf("encoded %v, want %v", data, want)
	}
	back, err := decodeState(&corev1.ConfigMap{Data: data})
	if err != nil {
		t.Fatal(err)
	}
	if got := back.encode(nil); len(got) != 3 || got["holds.pod-a"] != want["holds.pod-a"] || got["holds.pod-b"] != want["holds.pod-b"] {
		t.Errorf("round trip: %v, want %v", got, want)
	}

	// pod-c holds 50-249: the others keep the rest; pod-b's key goes.
	if !s.hold("pod-c", r(50, 249)) {
		t.Errorf("hold reported no change")
	}
	if got := fmt.Sprint(s.holds); got != "map[pod-a:[0-49 250-299] pod-c:[50-249]]" {
		t.Errorf("after pod-c holds 50-249: %s", got)
	}
	if s.hold("pod-c", r(60, 70)) {
		t.Errorf("holding again what it holds reported a change")
	}
	s.hold("pod-c", r(250, 260))
	if got := fmt.Sprint(s.holds); got != "map[pod-a:[0-49 261-299] pod-c:[50-260]]" {
		t.Errorf("after pod-c holds 250-260: %s", got)
	}
	if data := s.encode(nil); data["holds.pod-c"] != "50-260" || data["holds.pod-a"] != "0-49,261-299" || data["holds.pod-b"] != "" {
		t.Errorf("encoded %v", data)
	}
}

// Handed-off offsets move through a store: exported from one, imported
// into another, exactly, pending resets included.
func TestExportImport(t *testing.T) {
	open := func() *offsets.Store {
		st, err := offsets.Open(t.TempDir(), offsets.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	from, to := open(), open()
	j1, j2 := []byte("journal-one-0001"), []byte("journal-two-0002")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(from.Set(offsets.Key{Consumer: "c", JournalID: j1, Slices: offsets.SliceRange{First: 0, Last: 511}}, 7))
	must(from.Set(offsets.Key{Consumer: "c", JournalID: j1, Slices: offsets.SliceRange{First: 512, Last: 1023}}, 9))
	must(from.Reset(offsets.Key{Consumer: "c", JournalID: j2, Slices: offsets.AllSlices}, streamdv1.StartPolicy_START_POLICY_LATEST, time.Time{}))
	must(from.Set(offsets.Key{Consumer: "other", JournalID: j2, Slices: offsets.AllSlices}, 99))
	s := &state{owners: map[string]owner{}, offsets: map[string][]fragment{}}
	must(exportOffsets(s, from, "c", offsets.SliceRange{First: 256, Last: 767}))
	must(importOffsets(to, "c", s.within(offsets.SliceRange{First: 300, Last: 600})))
	got, err := to.List("")
	must(err)
	want := []string{"c/6a6f75726e616c2d6f6e652d30303031/300-511 offset 7", "c/6a6f75726e616c2d6f6e652d30303031/512-600 offset 9", "c/6a6f75726e616c2d74776f2d30303032/300-600 reset to latest"}
	if len(got) != len(want) {
		t.Fatalf("imported %v, want %v", got, want)
	}
	for i, e := range got {
		if s := e.Key.String() + " " + e.Offset.String(); s != want[i] {
			t.Errorf("imported %s, want %s", s, want[i])
		}
	}
}

func TestValidate(t *testing.T) {
	store, err := offsets.Open(t.TempDir(), offsets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	good := Options{
		Client: kubetest.New().Clientset(), Namespace: "ns", Group: "orders", Identity: "orders-7d9f-x2",
		Consumer: consumer.Options{Producers: []string{"p:1"}, Name: "n", Store: store, Handler: func(context.Context, *streamdv1.Event) error { return nil }},
	}
	if err := good.Validate(); err != nil {
		t.Fatalf("good options: %v", err)
	}
	for _, c := range []struct {
		change func(*Options)
		want   string
	}{
		{func(o *Options) { o.Client = nil }, "Options.Client"},
		{func(o *Options) { o.Namespace = "" }, "Options.Namespace"},
		{func(o *Options) { o.Group = "" }, "Options.Group is empty"},
		{func(o *Options) { o.Group = "Orders" }, "Options.Group \"Orders\""},
		{func(o *Options) { o.Identity = "" }, "Options.Identity is empty"},
		{func(o *Options) { o.Identity = "a_b" }, "Options.Identity \"a_b\""},
		{func(o *Options) { o.LeaseDuration = time.Second }, "Options.LeaseDuration"},
		{func(o *Options) { o.Consumer.Slices = offsets.SliceRange{First: 0, Last: 9} }, "Options.Consumer.Slices"},
		{func(o *Options) { o.Consumer.Name = "" }, "Options.Consumer: consumer: invalid options: Options.Name is empty"},
		{func(o *Options) { o.Runner = func(context.Context, offsets.SliceRange) error { return nil } }, "Options.Consumer and Options.Runner are both set"},
	} {
		o := good
		c.change(&o)
		err := o.Validate()
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate() = %v, want ErrInvalidOptions naming %q", err, c.want)
		}
	}
	// A Runner needs no Consumer.
	runner := good
	runner.Consumer = consumer.Options{}
	runner.Runner = func(context.Context, offsets.SliceRange) error { return nil }
	if err := runner.Validate(); err != nil {
		t.Fatalf("options with a Runner: %v", err)
	}
	// Holdings: with a Runner and an Address only.
	runner.Holds, runner.Address = true, "orders-7d9f-x2.orders:7000"
	if err := runner.Validate(); err != nil {
		t.Fatalf("options with Holds: %v", err)
	}
	for _, c := range []struct {
		change func(*Options)
		want   string
	}{
		{func(o *Options) { o.Address = "" }, "Options.Holds is set without Options.Address"},
		{func(o *Options) { o.Address = "orders-7d9f-x2" }, "Options.Address \"orders-7d9f-x2\": want host:port"},
		{func(o *Options) { o.HoldWait = -time.Second }, "Options.HoldWait -1s is negative"},
		{func(o *Options) { o.Runner, o.Consumer = nil, good.Consumer }, "Options.Holds is set without Options.Runner"},
	} {
		o := runner
		c.change(&o)
		err := o.Validate()
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate() = %v, want ErrInvalidOptions naming %q", err, c.want)
		}
	}
	// Every unusable field is reported.
	err = Options{}.Validate()
	for _, want := range []string{"Options.Client", "Options.Namespace", "Options.Group is empty", "Options.Identity is empty", "Options.Consumer:"} {
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() of zero options = %v, want it to name %q", err, want)
		}
	}
}

package producer

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamd/streamd/internal/testwait"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// filterCounter counts the events streams read and filtered away.
type filterCounter struct{ filtered atomic.Int64 }

func (c *filterCounter) StreamOpened(string, string)          {}
func (c *filterCounter) StreamClosed(string, string)          {}
func (c *filterCounter) Sent(_, _ string, _, _, filtered int) { c.filtered.Add(int64(filtered)) }
func (c *filterCounter) Progressed(string, string, uint64)    {}

// subscribeSports subscribes from the start to the events tagged sports.
func subscribeSports(t *testing.T, h *harness) *sub {
	t.Helper()
	init := earliest()
	init.Filter = []*streamdv1.FilterCriterion{{Action: streamdv1.FilterAction_FILTER_ACTION_INCLUDE,
		Field: streamdv1.FilterField_FILTER_FIELD_TAG, Value: "sports"}}
	s, err := h.subscribe(t, init)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// publishFiltered publishes n events the sports stream filters away, one
// at a time, each once the stream has read the one before.
func publishFiltered(t *testing.T, h *harness, obs *filterCounter, n int) {
	t.Helper()
	for i := range n {
		h.publish(t, car("b", "family"))
		testwait.For(t, 10*time.Second, "the stream to filter the event away", func() bool { return obs.filtered.Load() == int64(i+1) })
	}
}

// A live stream that filters every event away reports its position at
// most every ProgressInterval, not after every batch it reads: a consumer
// may store its offset at each report (a replication between regions
// filters every event of its own region, and stores its offset durably).
func TestProgressAtMostEveryInterval(t *testing.T) {
	obs := &filterCounter{}
	h := start(t, Options{Server: ServerOptions{ProgressInterval: time.Hour, Observer: obs}})
	s := subscribeSports(t, h)
	publishFiltered(t, h, obs, 10)
	h.publish(t, car("a", "sports"))
	reports := 0
	for {
		m := s.next()
		if m.GetProgress() != nil {
			reports++
		}
		if len(m.GetEvents().GetEvents()) > 0 {
			break
		}
	}
	if reports > 1 {
		t.Fatalf("%d Progress reports over 10 filtered batches within the hour's ProgressInterval; want at most 1", reports)
	}
}

// An idle stream that filtered events away reports its position once
// ProgressInterval has passed since its last report.
func TestProgressOfAnIdleStream(t *testing.T) {
	obs := &filterCounter{}
	h := start(t, Options{Server: ServerOptions{ProgressInterval: 50 * time.Millisecond, Observer: obs}})
	s := subscribeSports(t, h)
	publishFiltered(t, h, obs, 3)
	for {
		if p := s.next().GetProgress(); p != nil && p.Offset == 3 {
			return
		}
	}
}

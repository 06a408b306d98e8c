package main

import (
	"sync"
	"sync/atomic"
	"time"
)

// subscription is what one subscription of a subscriber measured.
type subscription struct {
	mu          sync.Mutex // for clients whose handlers run on library goroutines
	start, last time.Time
	got         int
	lat         []int64
	firstStamp  int64        // earliest payload stamp seen (Unix ns)
	lastNano    atomic.Int64 // last receipt (Unix ns), for watchEnd
	count       atomic.Int64 // got, for watchEnd
}

func (s *subscription) receive(now time.Time, payload []byte, latency bool) {
	s.got++
	s.last = now
	s.lastNano.Store(now.UnixNano())
	s.count.Store(int64(s.got))
	if !latency {
		return
	}
	if ts, ok := payloadTime(payload); ok {
		s.lat = append(s.lat, now.UnixNano()-ts)
		if s.firstStamp == 0 || ts < s.firstStamp {
			s.firstStamp = ts
		}
	}
}

// merge turns the subscriptions' measurements into one result: Seconds is
// from the earliest subscription start (or, when measuring latency, the
// earliest publish stamp) to the last receipt.
func merge(subs []*subscription, spec clientSpec, bytesIn int64) clientResult {
	res := clientResult{BytesIn: bytesIn}
	var (
		from, to time.Time
		lat      []int64
	)
	earlier := func(t time.Time) {
		if !t.IsZero() && (from.IsZero() || t.Before(from)) {
			from = t
		}
	}
	for _, s := range subs {
		s.mu.Lock()
		defer s.mu.Unlock()
		res.Events += int64(s.got)
		if spec.Latency && s.firstStamp != 0 {
			earlier(time.Unix(0, s.firstStamp))
		} else if !spec.Latency {
			earlier(s.start)
		}
		if s.last.After(to) {
			to = s.last
		}
		lat = append(lat, s.lat...)
	}
	if !to.IsZero() && !from.IsZero() {
		res.Seconds = to.Sub(from).Seconds()
	}
	res.Latency = summarize(lat)
	return res
}

// control is how the harness steers a running subscriber: ready says its
// subscriptions are open; once the publisher is done, the harness sends how
// many events each subscription is to receive (target), which may be fewer
// than spec.Expect when the publisher stopped early.
type control struct {
	ready    func()
	target   atomic.Int64
	targetAt atomic.Int64 // when target was set (Unix ns)
}

func (c *control) setTarget(n int64) {
	c.targetAt.Store(time.Now().UnixNano())
	c.target.Store(n)
}

// watchEnd calls stop, and reports that it did, once every subscription has
// received ctl's target (when set), or once none has received anything for
// idle: since a first event (catch-up), or, for a live subscriber, since the
// target was set (while the publisher runs, a server may hold events back for
// long). The watch ends when done is closed.
func watchEnd(subs []*subscription, idle time.Duration, live bool, ctl *control, stop func(), done <-chan struct{}) (fired func() bool) {
	var f atomic.Bool
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				var latest int64
				reached := ctl.target.Load() > 0
				for _, s := range subs {
					latest = max(latest, s.lastNano.Load())
					reached = reached && s.count.Load() >= ctl.target.Load()
				}
				if live {
					latest = max(latest, ctl.targetAt.Load())
					if ctl.targetAt.Load() == 0 {
						latest = 0
					}
				}
				if reached || (idle > 0 && latest > 0 && now.UnixNano()-latest > int64(idle)) {
					f.Store(true)
					stop()
					return
				}
			}
		}
	}()
	return f.Load
}

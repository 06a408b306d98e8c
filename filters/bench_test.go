package filters

import (
	"fmt"
	"math/rand/v2"
	"testing"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// match20 is a realistic 20-criterion filter: exact types and ids, three
// regexes, tags, wildcard topics, event types and excludes of each kind.
var match20 = []string{
	"include type=car",
	"include type=truck",
	"include entity=bike-17",
	"include entity=bus-3",
	"include entity~^sensor-[0-9]+$",
	"include entity~^fleet-(north|south)-",
	"exclude entity~-test$",
	"include tag=sports",
	"include tag=priority",
	"exclude tag=debug",
	"include topic=car/+/speed",
	"include topic=truck/#",
	"include topic=fleet/+/gps/+",
	"exclude topic=car/+/debug/#",
	"include event=SpeedSampled",
	"include event=AlarmRaised",
	"exclude event=Heartbeat",
	"exclude type=simulator",
	"include tag=eu ttl=30m",
	"exclude entity=car-666",
}

// benchEvents returns n events of a mixed fleet, some admitted, some not.
func benchEvents(n int) []*streamdv1.Event {
	r := rand.New(rand.NewPCG(7, 7))
	types := []string{"car", "truck", "bike", "bus", "sensor", "fleet", "simulator"}
	metrics := []string{"speed", "gps", "debug/raw", "fuel", "door"}
	eventTypes := []string{"SpeedSampled", "PositionSampled", "Heartbeat", "DoorOpened", "AlarmRaised", "FuelSampled"}
	tags := []string{"sports", "eu", "us", "debug", "priority", "fleet", "night"}
	events := make([]*streamdv1.Event, n)
	for i := range events {
		typ := types[r.IntN(len(types))]
		id := fmt.Sprintf("%s-%d", typ, r.IntN(1000))
		switch r.IntN(10) {
		case 0:
			id += "-test"
		case 1:
			id = fmt.Sprintf("fleet-%s-%d", []string{"north", "south", "east"}[r.IntN(3)], r.IntN(100))
		}
		e := ev(typ, id, eventTypes[r.IntN(len(eventTypes))], fmt.Sprintf("%s/%s/%s", typ, id, metrics[r.IntN(len(metrics))]))
		for range r.IntN(3) {
			e.Tags = append(e.Tags, tags[r.IntN(len(tags))])
		}
		events[i] = e
	}
	return events
}

// BenchmarkMatch20 measures Match of a 20-criterion filter on one goroutine.
func BenchmarkMatch20(b *testing.B) {
	f := compileText(b, match20...)
	events := benchEvents(4096)
	admitted, i := 0, 0
	b.ReportAllocs()
	for b.Loop() {
		if f.Match(events[i%len(events)], now0) {
			admitted++
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(admitted)/float64(i), "admitted/event")
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// The event model of the example.
const (
	carType     = "car"         // entity type of raw telemetry, one entity per car
	summaryType = "car-summary" // entity type of window summaries, one entity per (region, category)
	sampleEvent = "TelemetrySampled"
)

// categories of cars, in the order cars are assigned to them.
var categories = []string{"sports", "family", "truck"}

// profile is how a category drives.
type profile struct {
	cruise, top float64 // km/h
	idleRPM     float64
	rpmPerKmh   float64 // in the gear it is in
	gears       int
}

var profiles = map[string]profile{
	"sports": {cruise: 130, top: 280, idleRPM: 900, rpmPerKmh: 55, gears: 7},
	"family": {cruise: 95, top: 180, idleRPM: 750, rpmPerKmh: 45, gears: 6},
	"truck":  {cruise: 80, top: 100, idleRPM: 600, rpmPerKmh: 30, gears: 12},
}

// sample is one telemetry reading of a car: the payload of a raw event.
// T is the sample (event) time in unix milliseconds; windows are cut by it.
type sample struct {
	T       int64   `json:"t"`
	Speed   float64 `json:"speed_kmh"`
	RPM     float64 `json:"rpm"`
	Gear    int     `json:"gear"`
	Lat     float64 `json:"lat"`
	Lon     float64 `json:"lon"`
	Heading float64 `json:"heading"`
	Fuel    float64 `json:"fuel_pct"`
}

// car is one simulated car.
type car struct {
	id, category string
	rng          *rand.Rand
	s            sample
}

func newCar(region string, n int) *car {
	h := fnv.New64a()
	h.Write([]byte(region))
	rng := rand.New(rand.NewPCG(h.Sum64(), uint64(n)))
	c := &car{id: fmt.Sprintf("%s-%05d", region, n), category: categories[n%len(categories)], rng: rng}
	c.s = sample{Lat: 48 + rng.Float64(), Lon: 11 + rng.Float64(), Heading: rng.Float64() * 360,
		Fuel: 40 + rng.Float64()*60, Speed: profiles[c.category].cruise * rng.Float64()}
	return c
}

// step advances the car by dt and returns its reading at t.
func (c *car) step(t time.Time, dt time.Duration) sample {
	p, s := profiles[c.category], &c.s
	sec := dt.Seconds()
	// Speed drifts towards cruising speed with noise, within [0, top].
	s.Speed += (p.cruise-s.Speed)*0.05*sec + c.rng.NormFloat64()*8*math.Sqrt(sec)
	s.Speed = math.Max(0, math.Min(p.top, s.Speed))
	s.Gear = max(1, min(p.gears, 1+int(s.Speed/p.top*float64(p.gears))))
	s.RPM = p.idleRPM + s.Speed*p.rpmPerKmh*float64(p.gears)/float64(s.Gear)/4
	s.Heading = math.Mod(s.Heading+c.rng.NormFloat64()*3+360, 360)
	km := s.Speed * sec / 3600
	rad := s.Heading * math.Pi / 180
	s.Lat += km * math.Cos(rad) / 111
	s.Lon += km * math.Sin(rad) / 74
	s.Fuel = math.Max(0, s.Fuel-km*0.01)
	return sample{T: t.UnixMilli(), Speed: round(s.Speed, 1), RPM: round(s.RPM, 0), Gear: s.Gear,
		Lat: round(s.Lat, 6), Lon: round(s.Lon, 6), Heading: round(s.Heading, 1), Fuel: round(s.Fuel, 2)}
}

func round(x float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(x*p) / p
}

// event is the raw telemetry event of a reading.
func (c *car) event(s sample) (*streamdv1.Event, error) {
	payload, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("telemetry: encode sample of %s: %w", c.id, err)
	}
	return &streamdv1.Event{
		EntityType: carType, EntityId: c.id, EventType: sampleEvent,
		Tags: []string{c.category}, Topic: "cars/" + c.category + "/" + c.id, Payload: payload,
	}, nil
}

// batchedSize is the size of e inside an EventBatch: its stored encoding
// (what the producer sends as is) with its field key and length.
func batchedSize(e *streamdv1.Event) int64 {
	return int64(protowire.SizeTag(1) + protowire.SizeBytes(proto.Size(e)))
}

// publishChunk keeps each Publish well under the journal's batch limits.
const publishChunk = 1000

// simulator drives a region's cars: every tick of simulated time each car
// takes one reading, and the tick's readings are published together.
type simulator struct {
	region  string
	cars    []*car
	tick    time.Duration // simulated time between two readings of a car
	speed   float64       // simulated seconds per real second
	epoch   time.Time     // simulated time of the first tick
	publish func(context.Context, ...*streamdv1.Event) error

	// Published raw telemetry, counted after each successful Publish.
	events, bytes atomic.Int64
	ticks         atomic.Int64
}

func newSimulator(region string, cars int, rate, speed float64, epoch time.Time,
	publish func(context.Context, ...*streamdv1.Event) error) *simulator {
	s := &simulator{region: region, tick: time.Duration(float64(time.Second) / rate), speed: speed, epoch: epoch, publish: publish}
	for n := range cars {
		s.cars = append(s.cars, newCar(region, n))
	}
	return s
}

// Run publishes a tick of readings on schedule (as fast as the journal takes
// them if it falls behind) until ctx is done.
func (s *simulator) Run(ctx context.Context) error {
	start := time.Now()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for k := int64(0); ; k++ {
		due := start.Add(time.Duration(float64(time.Duration(k)*s.tick) / s.speed))
		timer.Reset(time.Until(due))
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		if err := s.publishTick(ctx, s.epoch.Add(time.Duration(k)*s.tick)); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		s.ticks.Add(1)
	}
}

func (s *simulator) publishTick(ctx context.Context, t time.Time) error {
	evs := make([]*streamdv1.Event, 0, len(s.cars))
	for _, c := range s.cars {
		e, err := c.event(c.step(t, s.tick))
		if err != nil {
			return err
		}
		evs = append(evs, e)
	}
	for len(evs) > 0 {
		chunk := evs[:min(len(evs), publishChunk)]
		evs = evs[len(chunk):]
		if err := s.publish(ctx, chunk...); err != nil {
			return fmt.Errorf("telemetry: publish in region %s: %w", s.region, err)
		}
		var n int64
		for _, e := range chunk {
			n += batchedSize(e)
		}
		s.events.Add(int64(len(chunk)))
		s.bytes.Add(n)
	}
	return nil
}

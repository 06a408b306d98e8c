package console

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/streamd/streamd/internal/diskspace"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Snapshot is what the pages show, as of one sample. The live stream sends
// one each Interval.
type Snapshot struct {
	Time       int64  `json:"time_unix_ms"`
	Region     string `json:"region"`
	JournalID  string `json:"journal_id"` // hex
	First      uint64 `json:"first_offset"`
	Last       uint64 `json:"last_offset"`
	Events     uint64 `json:"events"`
	Bytes      int64  `json:"bytes"`                // of events, as the journal counts them
	DiskBytes  int64  `json:"disk_bytes"`           // the files in the data directory take on disk (diskspace.Used); -1 unknown
	FreeBytes  int64  `json:"free_bytes"`           // free on its filesystem; -1 unknown
	Health     string `json:"health"`               // SERVING or FAILED
	HealthErr  string `json:"health_err,omitempty"` // why FAILED
	AdminError string `json:"admin_error,omitempty"`

	// Series over the History, oldest first: sample times, events
	// appended per second, group commits fsynced since the sample before
	// and their mean fsync in milliseconds.
	Times   []int64   `json:"times"`
	Rate    []float64 `json:"rate"`
	Commits []float64 `json:"commits"`
	Fsync   []float64 `json:"fsync_ms"`
	Window  int       `json:"window_seconds"`

	// Consumers the process runs, as AdminService.ListConsumers lists
	// them (protojson: fields the API adds show up as they are).
	Consumers []json.RawMessage `json:"consumers"`
	// Reported are the consumers reading from this streamd as the same
	// listing reports them (its "readers", where the API has them), as
	// they are.
	Reported []json.RawMessage `json:"reported"`
	// Lags of each consumer (summed over its producers) over the History,
	// aligned with Times (-1 where it was not listed); Behind, in seconds,
	// how long it has been since its lag was last 0 (-1 never within the
	// History).
	Lags map[string][]int64 `json:"lags"`
	// Filters of each consumer as text, with their expiries.
	Filters map[string][]criterion `json:"filters"`
	Behind  map[string]float64     `json:"behind_seconds"`
	Moves   map[string][]float64   `json:"offsets_per_second"` // of each consumer's offsets
	// Readers are the streams other consumers read from this streamd, with
	// the offsets they reported.
	Readers []Reader `json:"readers"`
	Links   []Link   `json:"links"`
	// LinkBytes are the bytes of events each link (by consumer) received,
	// by kind, as streamd_replication_received_bytes_total counts them.
	LinkBytes   map[string]LinkBytes `json:"link_bytes"`
	EntityTypes []Primary            `json:"entity_types"`
	// Interests are the entities this region has interest in (on-demand
	// replication), as InterestService.ListInterests lists them.
	Interests      []Interest `json:"interests"`
	InterestsError string     `json:"interests_error,omitempty"`
	// Aggregates are the aggregation stages as
	// AggregateService.ListAggregates lists them (protojson, as they are);
	// Windows the last windows of each stage the samples saw, oldest
	// first.
	Aggregates      []json.RawMessage   `json:"aggregates"`
	AggregatesError string              `json:"aggregates_error,omitempty"`
	Windows         map[string][]Window `json:"windows"`
}

// LinkBytes are the bytes a link received: totals, and per second over the
// History (aligned with Times).
type LinkBytes struct {
	Summary     float64   `json:"summary"` // of the aggregation stages' summaries
	Detail      float64   `json:"detail"`  // of every other event
	SummaryRate []float64 `json:"summary_per_second"`
	DetailRate  []float64 `json:"detail_per_second"`
}

// Primary is an entity type with its primary as PrimaryService.GetPrimary
// gives it now, and the writes the metrics count for it.
type Primary struct {
	EntityType
	Primary  string `json:"primary"`           // pinned mode: the last pin, or Configured
	PinnedAt int64  `json:"pinned_at_unix_ms"` // 0 without a pin
	PinnedIn string `json:"pinned_in"`         // the region that set the pin
	Error    string `json:"error,omitempty"`   // why GetPrimary failed
	// Forwards are writes of the type forwarded from here to its primary,
	// Takeovers its entities this region took over to write them.
	Forwards  float64 `json:"forwards"`
	Takeovers float64 `json:"takeovers"`
}

// Interest is this region's interest in one entity of on-demand types.
type Interest struct {
	EntityID    string   `json:"entity_id"`
	EntityTypes []string `json:"entity_types"`
	Regions     []string `json:"regions"`         // whose replication into this region includes it
	Since       int64    `json:"since_unix_ms"`   // 0: began before streamd started
	Expires     int64    `json:"expires_unix_ms"` // unless the entity is used here again
}

// Window is a window whose summaries a stage wrote.
type Window struct {
	Start     int64  `json:"start_unix_ms"`
	End       int64  `json:"end_unix_ms"`
	Summaries uint32 `json:"summaries"` // one per group
	Events    uint64 `json:"events"`
	Written   int64  `json:"written_unix_ms"`
}

// keptWindows is how many windows of each stage a snapshot shows.
const keptWindows = 10

// Reader is one consumer streaming from this streamd, from its metrics.
type Reader struct {
	Stream   string  `json:"stream"`
	Consumer string  `json:"consumer"`
	Lag      float64 `json:"lag"`  // journal last offset minus the last offset sent or reported
	Sent     float64 `json:"sent"` // events sent to it
}

// point is one sample kept for the series.
type point struct {
	t       time.Time
	appends float64 // events appended, total
	fsync   struct{ sum, count float64 }
	lags    map[string]int64
	offsets map[string]uint64
	links   map[string][2]float64 // bytes received by link: summary, detail
	// forwards and takeovers by entity type
	forwards, takeovers map[string]float64
}

type sampler struct {
	mu      sync.Mutex
	points  []point
	windows map[string][]Window // by stage
	last    Snapshot
	ok      bool          // last is set
	changed chan struct{} // closed and replaced at each sample
}

// current returns the last snapshot and a channel closed at the next.
func (s *sampler) current() (Snapshot, bool, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.ok, s.changed
}

func (c *Console) sample() {
	defer close(c.done)
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		c.takeSample()
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// takeSample reads the journal, the metrics and the consumers once, and
// publishes the snapshot.
func (c *Console) takeSample() {
	now := time.Now()
	info := c.opts.Info()
	snap := Snapshot{
		Time: now.UnixMilli(), Region: c.opts.Region, JournalID: hex.EncodeToString(info.JournalID),
		First: info.FirstOffset, Last: info.LastOffset, Events: info.Events, Bytes: info.Bytes,
		DiskBytes: -1, FreeBytes: -1, Health: "SERVING",
		Links: c.opts.Links, LinkBytes: map[string]LinkBytes{}, Windows: map[string][]Window{},
		Lags: map[string][]int64{}, Filters: map[string][]criterion{}, Behind: map[string]float64{}, Moves: map[string][]float64{},
		Window: int(c.opts.History / time.Second),
	}
	if err := c.opts.Err(); err != nil {
		snap.Health, snap.HealthErr = "FAILED", err.Error()
	}
	if c.opts.DataDir != "" {
		if n, err := diskspace.Used(c.opts.DataDir); err == nil {
			snap.DiskBytes = n
		}
		if n, err := diskspace.Free(c.opts.DataDir); err == nil {
			snap.FreeBytes = n
		}
	}
	p := point{t: now, lags: map[string]int64{}, offsets: map[string]uint64{}, links: map[string][2]float64{},
		forwards: map[string]float64{}, takeovers: map[string]float64{}}
	if mfs, err := c.opts.Gatherer.Gather(); err == nil {
		snap.Readers = c.readMetrics(mfs, &p)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
	defer cancel()
	snap.EntityTypes = c.entityTypes(ctx, &p)
	snap.Interests, snap.InterestsError = c.interestList(ctx)
	aggs, aggErr := c.aggregates.ListAggregates(ctx, &streamdv1.ListAggregatesRequest{})
	if aggErr != nil {
		snap.AggregatesError = status.Convert(aggErr).Message()
	}
	for _, a := range aggs.GetAggregates() {
		b, _ := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(a)
		snap.Aggregates = append(snap.Aggregates, b)
	}
	resp, err := c.admin.ListConsumers(ctx, &streamdv1.ListConsumersRequest{})
	if err != nil {
		snap.AdminError = err.Error()
	}
	if resp != nil {
		b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(resp)
		snap.Reported = listed(b, "readers")
	}
	for _, cs := range resp.GetConsumers() {
		b, _ := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(cs)
		snap.Consumers = append(snap.Consumers, b)
		snap.Filters[cs.GetName()] = shown(cs.GetFilter())
		var lag, off uint64
		for _, ps := range cs.GetProducers() {
			lag += ps.GetLag()
			off += ps.GetOffset()
		}
		p.lags[cs.GetName()], p.offsets[cs.GetName()] = int64(lag), off
	}

	c.samples.mu.Lock()
	defer c.samples.mu.Unlock()
	pts := append(c.samples.points, p)
	for len(pts) > 1 && now.Sub(pts[0].t) > c.opts.History {
		pts = pts[1:]
	}
	c.samples.points = pts
	c.keepWindows(aggs.GetAggregates())
	for stage, ws := range c.samples.windows {
		snap.Windows[stage] = slices.Clone(ws) // kept windows change in place
	}
	for name, b := range p.links {
		lb := LinkBytes{Summary: b[0], Detail: b[1], SummaryRate: make([]float64, len(pts)), DetailRate: make([]float64, len(pts))}
		for i := 1; i < len(pts); i++ {
			prev, ok := pts[i-1].links[name]
			cur, cok := pts[i].links[name]
			if dt := pts[i].t.Sub(pts[i-1].t).Seconds(); ok && cok && dt > 0 {
				lb.SummaryRate[i], lb.DetailRate[i] = max(0, cur[0]-prev[0])/dt, max(0, cur[1]-prev[1])/dt
			}
		}
		snap.LinkBytes[name] = lb
	}
	for i, pt := range pts {
		snap.Times = append(snap.Times, pt.t.UnixMilli())
		rate, commits, fsync := 0.0, 0.0, 0.0
		if i > 0 {
			prev := pts[i-1]
			if dt := pt.t.Sub(prev.t).Seconds(); dt > 0 {
				rate = max(0, pt.appends-prev.appends) / dt
			}
			if commits = max(0, pt.fsync.count-prev.fsync.count); commits > 0 {
				fsync = (pt.fsync.sum - prev.fsync.sum) / commits * 1000
			}
		}
		snap.Rate, snap.Commits, snap.Fsync = append(snap.Rate, rate), append(snap.Commits, commits), append(snap.Fsync, fsync)
	}
	for name := range p.lags {
		lags, moves := make([]int64, len(pts)), make([]float64, len(pts))
		behind := -1.0
		for i, pt := range pts {
			lag, ok := pt.lags[name]
			if !ok {
				lag = -1
			}
			lags[i] = lag
			if lag == 0 {
				behind = now.Sub(pt.t).Seconds()
			}
			if i > 0 {
				prev, pok := pts[i-1].offsets[name]
				cur, cok := pt.offsets[name]
				if dt := pt.t.Sub(pts[i-1].t).Seconds(); pok && cok && cur >= prev && dt > 0 {
					moves[i] = float64(cur-prev) / dt
				}
			}
		}
		snap.Lags[name], snap.Behind[name], snap.Moves[name] = lags, behind, moves
	}
	c.samples.last, c.samples.ok = snap, true
	close(c.samples.changed)
	c.samples.changed = make(chan struct{})
}

// readMetrics takes the journal's counters into p and returns the readers:
// the (stream, consumer) pairs with a lag, that is with an open stream.
func (c *Console) readMetrics(mfs []*dto.MetricFamily, p *point) []Reader {
	readers := map[[2]string]*Reader{}
	var sent []*dto.Metric
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "streamd_journal_events_appended_total":
				p.appends += m.GetCounter().GetValue()
			case "streamd_journal_fsync_seconds":
				p.fsync.sum += m.GetHistogram().GetSampleSum()
				p.fsync.count += float64(m.GetHistogram().GetSampleCount())
			case "streamd_stream_lag_events":
				k := readerKey(m)
				readers[k] = &Reader{Stream: k[0], Consumer: k[1], Lag: m.GetGauge().GetValue()}
			case "streamd_stream_events_sent_total":
				sent = append(sent, m)
			case "streamd_replication_received_bytes_total":
				b := p.links[label(m, "consumer")]
				switch label(m, "kind") {
				case "summary":
					b[0] += m.GetCounter().GetValue()
				case "detail":
					b[1] += m.GetCounter().GetValue()
				}
				p.links[label(m, "consumer")] = b
			case "streamd_primary_forwards_total":
				p.forwards[label(m, "entity_type")] += m.GetCounter().GetValue()
			case "streamd_primary_takeovers_total":
				p.takeovers[label(m, "entity_type")] += m.GetCounter().GetValue()
			}
		}
	}
	for _, m := range sent {
		if r := readers[readerKey(m)]; r != nil {
			r.Sent = m.GetCounter().GetValue()
		}
	}
	out := make([]Reader, 0, len(readers))
	for _, r := range readers {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b Reader) int {
		return cmp.Or(strings.Compare(a.Stream, b.Stream), strings.Compare(a.Consumer, b.Consumer))
	})
	return out
}

func readerKey(m *dto.Metric) [2]string { return [2]string{label(m, "stream"), label(m, "consumer")} }

// label is the value of a metric's label name ("" without it).
func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// entityTypes are the entity types with their primary now and the writes
// counted in p.
func (c *Console) entityTypes(ctx context.Context, p *point) []Primary {
	out := make([]Primary, 0, len(c.opts.EntityTypes))
	for _, t := range c.opts.EntityTypes {
		pr := Primary{EntityType: t, Forwards: p.forwards[t.Name], Takeovers: p.takeovers[t.Name]}
		if t.Name == "" {
			out = append(out, pr) // each unlisted type has a primary of its own
			continue
		}
		resp, err := c.primaries.GetPrimary(ctx, &streamdv1.GetPrimaryRequest{EntityType: t.Name})
		if err != nil {
			pr.Error = status.Convert(err).Message()
		} else {
			pr.Primary, pr.PinnedIn = resp.GetPrimary(), resp.GetPinnedIn()
			pr.PinnedAt = resp.GetPinnedAtUnixNano() / 1e6
		}
		out = append(out, pr)
	}
	return out
}

// interestList lists the entities with interest now, or why it cannot.
func (c *Console) interestList(ctx context.Context) ([]Interest, string) {
	resp, err := c.interests.ListInterests(ctx, &streamdv1.ListInterestsRequest{})
	if err != nil {
		return nil, status.Convert(err).Message()
	}
	out := make([]Interest, 0, len(resp.GetInterests()))
	for _, x := range resp.GetInterests() {
		out = append(out, Interest{EntityID: x.GetEntityId(), EntityTypes: x.GetEntityTypes(), Regions: x.GetRegions(),
			Since: x.GetSinceUnixNano() / 1e6, Expires: x.GetExpiresAtUnixNano() / 1e6})
	}
	return out, ""
}

// keepWindows adds the stages' last windows to the ones kept; c.samples.mu
// is held.
func (c *Console) keepWindows(stages []*streamdv1.AggregateStatus) {
	if c.samples.windows == nil {
		c.samples.windows = map[string][]Window{}
	}
	for _, st := range stages {
		lw := st.GetLastWindow()
		if lw == nil {
			continue
		}
		w := Window{Start: lw.GetStartUnixMs(), End: lw.GetEndUnixMs(), Summaries: lw.GetSummaries(), Events: lw.GetEvents(), Written: lw.GetWrittenUnixNano() / 1e6}
		ws := c.samples.windows[st.GetName()]
		if n := len(ws); n > 0 && ws[n-1].Start == w.Start {
			ws[n-1] = w // more groups of the same window written since
		} else {
			ws = append(ws, w)
		}
		c.samples.windows[st.GetName()] = ws[max(0, len(ws)-keptWindows):]
	}
}

// listed returns the elements of the array field name of a JSON object,
// nil when it has none.
func listed(object []byte, name string) []json.RawMessage {
	var fields map[string]json.RawMessage
	var out []json.RawMessage
	if json.Unmarshal(object, &fields) != nil || json.Unmarshal(fields[name], &out) != nil {
		return nil
	}
	return out
}

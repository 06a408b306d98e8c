package aggregate

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Summary is the payload of a summary event.
type Summary struct {
	Stage   string `json:"stage"`
	StartMs int64  `json:"start_ms"` // the window is [start, end), unix ms
	EndMs   int64  `json:"end_ms"`
	// Group holds the group's key values by key (GroupBy as written).
	Group map[string]string `json:"group,omitempty"`
	Count uint64            `json:"count"`
	// Values holds, per value field, its ops' results; null where the
	// result is not a finite number.
	Values map[string]map[Op]*float64 `json:"values,omitempty"`
}

// Counters count what a stage read since it was first started; they are
// kept in its checkpoint.
type Counters struct {
	Read       uint64 // events that passed the stage's filter
	Aggregated uint64 // of them, folded into a window
	Late       uint64 // their window had closed
	// Skipped events, by reason: a payload that is not a JSON object, a
	// missing group-by, time or value field (or an empty key value, or a
	// summary entity id too long), a value that is not a number, and a
	// window beyond Options.MaxOpenWindows.
	NotJSON, MissingField, NotNumber, TooManyWindows uint64
	Summaries                                        uint64 // written
}

// Skipped is the sum of the skipped events.
func (c Counters) Skipped() uint64 {
	return c.NotJSON + c.MissingField + c.NotNumber + c.TooManyWindows
}

// LastWindow describes the latest window start whose summaries were written.
type LastWindow struct {
	StartMs, EndMs int64
	Summaries      int    // summaries of that window (one per group)
	Events         uint64 // events they cover
	WrittenAt      time.Time
}

// Status is what a stage reports (streamctl aggregates list).
type Status struct {
	Name             string
	OutputEntityType string
	Running          bool
	Err              error // why it stopped, if it did
	Next             uint64
	Lag              uint64 // events in the journal after Next-1
	WatermarkMs      int64
	OpenWindows      int
	Counters         Counters
	Last             LastWindow
}

// checkpoint is what a stage commits with its summaries.
type checkpoint struct {
	Def         string            `json:"def"`
	Next        uint64            `json:"next"`
	WatermarkMs int64             `json:"watermark_ms"`
	Windows     []*window         `json:"windows"`
	SeqNrs      map[string]uint64 `json:"seq_nrs"` // last seqNr written per summary entity id
	Counters    Counters          `json:"counters"`
	Last        LastWindow        `json:"last"`
}

// window is an open window of one group.
type window struct {
	StartMs  int64    `json:"start_ms"`
	Key      []string `json:"key"`
	EntityID string   `json:"entity_id"`
	Count    uint64   `json:"count"`
	Vals     []acc    `json:"vals"`
}

// acc accumulates one value field.
type acc struct {
	N                   uint64
	Sum, Min, Max, Last float64
}

func (a *acc) add(x float64) {
	if a.N == 0 || x < a.Min {
		a.Min = x
	}
	if a.N == 0 || x > a.Max {
		a.Max = x
	}
	a.N++
	a.Sum += x
	a.Last = x
}

func (a acc) result(op Op) float64 {
	switch op {
	case OpCount:
		return float64(a.N)
	case OpSum:
		return a.Sum
	case OpMin:
		return a.Min
	case OpMax:
		return a.Max
	case OpAvg:
		return a.Sum / float64(a.N)
	}
	return a.Last
}

// readBatch is how many events a stage reads at once.
const readBatch = 512

// appendBatch is the most summaries in one append.
const appendBatch = 256

// idleMargin is how far behind the clock the watermark stays while a stage
// with the journal's time has read everything: an append being committed
// carries a commit time from just before it became readable.
const idleMargin = time.Second

// Stage is one aggregation stage over a journal. Run it with Run; Status is
// safe for concurrent use.
type Stage struct {
	opts Options
	d    *def
	log  *slog.Logger
	key  []byte // of the checkpoint

	// Owned by Run.
	cp       checkpoint
	open     map[string]*window
	saved    uint64 // cp.Next at the last commit
	savedAt  time.Time
	loggedAt time.Time
	unlogged uint64 // skipped since the last log line
	scratch  []byte

	mu     sync.Mutex
	status Status
}

// New checks o and makes a stage; nothing runs until Run.
func New(o Options) (*Stage, error) {
	d, err := o.compile()
	if err != nil {
		return nil, err
	}
	if o.Journal == nil {
		return nil, invalid("no journal")
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = time.Second
	}
	if o.LogEvery == 0 {
		o.LogEvery = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	s := &Stage{opts: o, d: d, log: o.Logger.With("aggregate", o.Name), key: checkpointKey(o.Name)}
	s.status = Status{Name: o.Name, OutputEntityType: o.Output.EntityType}
	return s, nil
}

// checkpointKey is where a stage's checkpoint lives in the journal's DB.
func checkpointKey(name string) []byte { return append([]byte("\x00aggregate/"), name...) }

// Name is the stage's name.
func (s *Stage) Name() string { return s.opts.Name }

// Status reports the stage as of its last batch.
func (s *Stage) Status() Status {
	s.mu.Lock()
	st := s.status
	s.mu.Unlock()
	if last := s.opts.Journal.LastOffset(); st.Next > 0 && last >= st.Next {
		st.Lag = last - st.Next + 1
	}
	return st
}

// Run aggregates until ctx is done (then it saves its position and returns
// nil) or an error stops it. It starts from the stage's checkpoint every
// time, so after an error Run may be called again. Calls must not overlap.
func (s *Stage) Run(ctx context.Context) error {
	s.setRunning(true, nil)
	err := s.run(ctx)
	s.setRunning(false, err)
	return err
}

func (s *Stage) setRunning(running bool, err error) {
	s.mu.Lock()
	s.status.Running, s.status.Err = running, err
	s.mu.Unlock()
}

func (s *Stage) run(ctx context.Context) error {
	if err := s.load(); err != nil {
		return err
	}
	s.publish()
	j := s.opts.Journal
	cur := j.NewCursor(s.cp.Next)
	buf := make([]journal.Record, 0, readBatch)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if ctx.Err() != nil {
			return s.stop()
		}
		recs, wait, err := cur.Read(readBatch, buf[:0])
		var oor *journal.OutOfRangeError
		switch {
		case errors.As(err, &oor):
			s.log.Warn("aggregate: events below the journal's retention floor were deleted before the stage read them; resuming at the floor",
				"next", s.cp.Next, "first_available", oor.FirstAvailable)
			s.cp.Next = oor.FirstAvailable
			cur = j.NewCursor(s.cp.Next)
			continue
		case errors.Is(err, journal.ErrClosed) && ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("aggregate %s: read the journal at offset %d: %w", s.opts.Name, cur.Next(), err)
		}
		for i := range recs {
			if err := s.add(&recs[i]); err != nil {
				return err
			}
			s.cp.Next = recs[i].Offset + 1
		}
		if len(recs) == 0 && s.d.timePath == nil {
			s.cp.WatermarkMs = max(s.cp.WatermarkMs, s.opts.Now().Add(-idleMargin).UnixMilli())
		}
		if err := s.flush(ctx); err != nil {
			return err
		}
		s.publish()
		if len(recs) > 0 {
			continue
		}
		timer.Reset(s.idleFor())
		select {
		case <-wait:
		case <-timer.C:
		case <-ctx.Done():
			return s.stop()
		}
	}
}

// stop saves the position on the way out of Run.
func (s *Stage) stop() error {
	if s.cp.Next == s.saved {
		return nil
	}
	return s.commit(context.Background(), nil)
}

// idleFor is how long an idle stage waits at most: until its next
// checkpoint is due or, with the journal's time, its first window closes.
func (s *Stage) idleFor() time.Duration {
	d := time.Hour
	if s.cp.Next != s.saved {
		d = time.Until(s.savedAt.Add(s.opts.CheckpointEvery))
	}
	if s.d.timePath == nil && len(s.open) > 0 {
		first := int64(math.MaxInt64)
		for _, w := range s.open {
			first = min(first, w.StartMs)
		}
		closeAt := time.UnixMilli(first + s.d.window + s.d.grace).Add(idleMargin)
		d = min(d, closeAt.Sub(s.opts.Now()))
	}
	return max(d, time.Millisecond)
}

// load reads the checkpoint, or starts at the journal's first event.
func (s *Stage) load() error {
	var raw []byte
	err := s.opts.Journal.View(func(txn *badger.Txn) error {
		item, err := txn.Get(s.key)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err == nil {
			raw, err = item.ValueCopy(nil)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("aggregate %s: read checkpoint: %w", s.opts.Name, err)
	}
	s.cp = checkpoint{}
	if raw != nil {
		if err := json.Unmarshal(raw, &s.cp); err != nil {
			return fmt.Errorf("aggregate %s: checkpoint is damaged: %w", s.opts.Name, err)
		}
	} else {
		s.cp.Next = max(1, s.opts.Journal.Info().FirstOffset)
	}
	if s.cp.Def != s.d.fingerprint && s.cp.Def != "" && len(s.cp.Windows) > 0 {
		s.log.Warn("aggregate: the stage's window, grace, time, keys or values changed: dropping the open windows of the old definition",
			"dropped", len(s.cp.Windows), "old", s.cp.Def, "new", s.d.fingerprint)
		s.cp.Windows = nil
	}
	s.cp.Def = s.d.fingerprint
	if s.cp.SeqNrs == nil {
		s.cp.SeqNrs = map[string]uint64{}
	}
	s.open = make(map[string]*window, len(s.cp.Windows))
	for _, w := range s.cp.Windows {
		s.open[windowKey(w.StartMs, w.Key)] = w
	}
	s.cp.Windows = nil
	s.saved, s.savedAt = s.cp.Next, s.opts.Now()
	return nil
}

func windowKey(start int64, key []string) string {
	var b strings.Builder
	b.WriteString(strconv.FormatInt(start, 36))
	for _, k := range key {
		b.WriteByte(0)
		b.WriteString(k)
	}
	return b.String()
}

// skip counts an event skipped for reason and logs, at most every LogEvery.
func (s *Stage) skip(counter *uint64, e *streamdv1.Event, reason string) {
	*counter++
	s.unlogged++
	if now := s.opts.Now(); now.Sub(s.loggedAt) >= s.opts.LogEvery {
		s.log.Warn("aggregate: skipped an event", "reason", reason, "entity_type", e.EntityType, "entity_id", e.EntityId,
			"offset", e.Offset, "skipped_since_last_line", s.unlogged, "skipped_total", s.cp.Counters.Skipped())
		s.loggedAt, s.unlogged = now, 0
	}
}

// add folds one event into its window.
func (s *Stage) add(rec *journal.Record) error {
	e, err := rec.Event()
	if err != nil {
		return fmt.Errorf("aggregate %s: event at offset %d: %w", s.opts.Name, rec.Offset, err)
	}
	d, c := s.d, &s.cp.Counters
	if e.EntityType == s.opts.Output.EntityType || (d.types != nil && !d.types[e.EntityType]) || !d.filter.Match(e, s.opts.Now()) {
		return nil
	}
	c.Read++
	fields := e.Payload
	if d.usesPayload && !isObject(fields) {
		s.skip(&c.NotJSON, e, "payload is not a JSON object")
		return nil
	}
	t := e.TimestampUnixNano / int64(time.Millisecond)
	if d.timePath != nil {
		raw, ok := lookup(fields, d.timePath)
		if !ok {
			s.skip(&c.MissingField, e, "no time field "+strings.Join(d.timePath, "."))
			return nil
		}
		f, ok := number(raw)
		if !ok || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			s.skip(&c.NotNumber, e, "time field is not a whole number of milliseconds")
			return nil
		}
		t = int64(f)
	}
	start := t - mod(t, d.window)
	if start+d.window+d.grace <= s.cp.WatermarkMs {
		c.Late++
		return nil
	}
	key := make([]string, len(d.keys))
	for i, k := range d.keys {
		v, ok := keyValue(k, e, fields)
		if !ok || v == "" {
			s.skip(&c.MissingField, e, "no value for group_by key "+k.text)
			return nil
		}
		key[i] = v
	}
	vals := make([]float64, len(d.values))
	for i, v := range d.values {
		raw, ok := lookup(fields, v.path)
		if !ok {
			s.skip(&c.MissingField, e, "no value field "+v.name)
			return nil
		}
		if vals[i], ok = number(raw); !ok {
			s.skip(&c.NotNumber, e, "value field "+v.name+" is not a number")
			return nil
		}
	}
	wk := windowKey(start, key)
	w := s.open[wk]
	if w == nil {
		if len(s.open) >= d.maxOpen {
			s.skip(&c.TooManyWindows, e, "too many open windows")
			return nil
		}
		id := s.entityID(key)
		if len(id) > s.opts.Journal.Limits().MaxEntityIDLen {
			s.skip(&c.MissingField, e, "summary entity id too long")
			return nil
		}
		w = &window{StartMs: start, Key: key, EntityID: id, Vals: make([]acc, len(d.values))}
		s.open[wk] = w
	}
	w.Count++
	for i, x := range vals {
		w.Vals[i].add(x)
	}
	c.Aggregated++
	s.cp.WatermarkMs = max(s.cp.WatermarkMs, t)
	return nil
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// number reads a JSON number.
func number(raw []byte) (float64, bool) {
	if len(raw) == 0 || (raw[0] != '-' && (raw[0] < '0' || raw[0] > '9')) {
		return 0, false
	}
	f, err := strconv.ParseFloat(string(raw), 64)
	return f, err == nil
}

func keyValue(k key, e *streamdv1.Event, payload []byte) (string, bool) {
	switch k.kind {
	case keyEntityType:
		return e.EntityType, true
	case keyTag:
		if len(e.Tags) == 0 {
			return "", false
		}
		return e.Tags[0], true
	case keyTopic:
		levels := strings.Split(e.Topic, "/")
		if e.Topic == "" || k.index >= len(levels) {
			return "", false
		}
		return levels[k.index], true
	}
	raw, ok := lookup(payload, k.path)
	if !ok {
		return "", false
	}
	return stringValue(raw)
}

func (s *Stage) entityID(key []string) string {
	var b strings.Builder
	for _, p := range s.d.idParts {
		switch p.key {
		case -1:
			b.WriteString(p.lit)
		case -2:
			b.WriteString(s.opts.Journal.Region())
		case -3:
			b.WriteString(s.opts.Name)
		default:
			b.WriteString(key[p.key])
		}
	}
	return b.String()
}

// flush writes the summaries of the windows the watermark has closed, with
// the checkpoint, or the checkpoint alone when it is due.
func (s *Stage) flush(ctx context.Context) error {
	var closing []*window
	for k, w := range s.open {
		if w.StartMs+s.d.window+s.d.grace <= s.cp.WatermarkMs {
			closing = append(closing, w)
			delete(s.open, k)
		}
	}
	if len(closing) == 0 {
		if s.cp.Next != s.saved && s.opts.Now().Sub(s.savedAt) >= s.opts.CheckpointEvery {
			return s.commit(ctx, nil)
		}
		return nil
	}
	slices.SortFunc(closing, func(a, b *window) int {
		return cmp.Or(cmp.Compare(a.StartMs, b.StartMs), slices.Compare(a.Key, b.Key))
	})
	for len(closing) > 0 {
		chunk := closing[:min(len(closing), appendBatch, s.opts.Journal.Limits().MaxBatchEvents)]
		closing = closing[len(chunk):]
		events := make([]*streamdv1.Event, 0, len(chunk))
		for _, w := range chunk {
			e, err := s.summary(w)
			if err != nil {
				return err
			}
			events = append(events, e)
			c := &s.cp.Counters
			c.Summaries++
			if w.StartMs != s.cp.Last.StartMs {
				s.cp.Last = LastWindow{StartMs: w.StartMs, EndMs: w.StartMs + s.d.window}
			}
			s.cp.Last.Summaries++
			s.cp.Last.Events += w.Count
			s.cp.Last.WrittenAt = s.opts.Now().UTC()
		}
		// The windows still to close stay in this chunk's checkpoint, so
		// that a crash between two chunks closes them after the restart.
		for _, w := range closing {
			s.open[windowKey(w.StartMs, w.Key)] = w
		}
		err := s.commit(ctx, events)
		for _, w := range closing {
			delete(s.open, windowKey(w.StartMs, w.Key))
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// summary is the summary event of a closed window, with the seqNr its
// entity must get.
func (s *Stage) summary(w *window) (*streamdv1.Event, error) {
	sum := Summary{Stage: s.opts.Name, StartMs: w.StartMs, EndMs: w.StartMs + s.d.window, Count: w.Count}
	if len(s.d.keys) > 0 {
		sum.Group = make(map[string]string, len(s.d.keys))
		for i, k := range s.d.keys {
			sum.Group[k.text] = w.Key[i]
		}
	}
	if len(s.d.values) > 0 {
		sum.Values = make(map[string]map[Op]*float64, len(s.d.values))
		for i, v := range s.d.values {
			m := make(map[Op]*float64, len(v.ops))
			for _, op := range v.ops {
				if x := w.Vals[i].result(op); !math.IsNaN(x) && !math.IsInf(x, 0) {
					m[op] = &x
				} else {
					m[op] = nil
				}
			}
			sum.Values[v.name] = m
		}
	}
	payload, err := json.Marshal(sum)
	if err != nil {
		return nil, fmt.Errorf("aggregate %s: encode summary: %w", s.opts.Name, err)
	}
	s.cp.SeqNrs[w.EntityID]++
	return &streamdv1.Event{
		EntityType: s.opts.Output.EntityType, EntityId: w.EntityID, EventType: s.opts.Output.EventType,
		SeqNr: s.cp.SeqNrs[w.EntityID], Payload: payload,
	}, nil
}

// commit appends events (summaries) and the checkpoint in one transaction.
func (s *Stage) commit(ctx context.Context, events []*streamdv1.Event) error {
	s.cp.Windows = s.cp.Windows[:0]
	for _, w := range s.open {
		s.cp.Windows = append(s.cp.Windows, w)
	}
	var err error
	s.scratch, err = appendJSON(s.scratch[:0], &s.cp)
	s.cp.Windows = s.cp.Windows[:0]
	if err != nil {
		return fmt.Errorf("aggregate %s: encode checkpoint: %w", s.opts.Name, err)
	}
	writes := []journal.Write{{Key: s.key, Value: s.scratch}}
	// Once queued the append's result is the truth; a cancel must not
	// leave the stage unsure whether its summaries were written.
	if _, err := s.opts.Journal.AppendWith(context.WithoutCancel(ctx), writes, events...); err != nil {
		var conflict *journal.SeqNrConflictError
		if errors.As(err, &conflict) {
			return fmt.Errorf("aggregate %s: summary entity %s/%s has seqNr %d already, the stage's checkpoint says %d: another writer appends to it (give the stage an output entity_type of its own): %w",
				s.opts.Name, conflict.EntityType, conflict.EntityID, conflict.Next-1, conflict.Expected-1, err)
		}
		return fmt.Errorf("aggregate %s: write summaries and checkpoint: %w", s.opts.Name, err)
	}
	s.saved, s.savedAt = s.cp.Next, s.opts.Now()
	s.publish()
	return nil
}

func appendJSON(dst []byte, v any) ([]byte, error) {
	b := bytes.NewBuffer(dst)
	err := json.NewEncoder(b).Encode(v)
	return b.Bytes(), err
}

// publish copies the run state into the status.
func (s *Stage) publish() {
	s.mu.Lock()
	s.status.Next, s.status.WatermarkMs, s.status.OpenWindows = s.cp.Next, s.cp.WatermarkMs, len(s.open)
	s.status.Counters, s.status.Last = s.cp.Counters, s.cp.Last
	s.mu.Unlock()
}

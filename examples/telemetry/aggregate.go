package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// summary is the payload of a summary event: the aggregates of one
// category's readings whose sample time falls in one window.
type summary struct {
	Region    string  `json:"region"`
	Category  string  `json:"category"`
	Window    int64   `json:"window"`   // window number: sample time in ms / window length in ms
	StartMs   int64   `json:"start_ms"` // the window is [start, end) in sample time
	EndMs     int64   `json:"end_ms"`
	Count     uint64  `json:"count"`
	MeanSpeed float64 `json:"mean_speed_kmh"`
	MaxSpeed  float64 `json:"max_speed_kmh"`
	MeanRPM   float64 `json:"mean_rpm"`
	MaxRPM    float64 `json:"max_rpm"`
}

// window is the partial aggregate of an open window.
type window struct {
	Number           int64
	Count            uint64
	SumSpeed, SumRPM float64
	MaxSpeed, MaxRPM float64
}

func (w *window) add(s sample) {
	if w.Count == 0 || s.Speed > w.MaxSpeed {
		w.MaxSpeed = s.Speed
	}
	if w.Count == 0 || s.RPM > w.MaxRPM {
		w.MaxRPM = s.RPM
	}
	w.Count++
	w.SumSpeed += s.Speed
	w.SumRPM += s.RPM
}

func (w *window) summary(region, category string, length time.Duration) summary {
	ms := length.Milliseconds()
	return summary{Region: region, Category: category, Window: w.Number, StartMs: w.Number * ms, EndMs: (w.Number + 1) * ms,
		Count: w.Count, MeanSpeed: w.SumSpeed / float64(w.Count), MaxSpeed: w.MaxSpeed,
		MeanRPM: w.SumRPM / float64(w.Count), MaxRPM: w.MaxRPM}
}

// aggState is what the aggregator keeps per category, in the consumer's
// transaction: the open window, how many summaries were emitted (the last
// summary seqNr) and how many readings came after their window had closed.
type aggState struct {
	Open    window
	Emitted uint64
	Late    uint64
}

// aggregator turns one region's raw telemetry into window summaries.
//
// Windows are cut by sample time: window n of a category holds its readings
// with n*length <= t < (n+1)*length, and it closes when the first reading of
// a later window of that category arrives (in journal offset order). A
// reading of a window that has closed already is counted as late and left
// out. This depends only on the events and their order, so anyone reading
// the journal computes the same summaries.
//
// Exactly once: the open windows and the summary counters live in the
// consumer's ExactlyOnce transaction, so they commit together with the
// stream offset. A summary, though, goes to the journal, outside that
// transaction, while the transaction is still open: a crash (or a commit
// conflict, which runs the batch again) after the append but before the
// commit makes the consumer replay the batch from the old state, and it
// emits the same summary again. So each summary is appended with an
// expected seqNr: the summary entity (summaryType, "<region>/<category>")
// gets seqNr k for the category's k-th closed window, which the state
// knows. A replayed summary then fails with journal.SeqNrConflictError,
// and writeOnce recognises it as already written: the journal holds the
// same payload at that seqNr (the replay recomputes it from the same state,
// whose float sums survive their JSON round trip exactly, and the same
// events in the same offset order). Neither a duplicate nor a gap is
// possible: seqNrs are gap-free, and a summary is only counted as emitted
// in the state that commits after it is in the journal.
type aggregator struct {
	region string
	length time.Duration
	append func(context.Context, ...*streamdv1.Event) ([]journal.Appended, error)
	load   func(entityType, entityID string, seqNr uint64) (*streamdv1.Event, error)

	written    atomic.Int64 // summaries appended
	recognised atomic.Int64 // re-emitted summaries found already written
}

// stateKey is where a category's aggState lives in the store's DB.
func stateKey(category string) []byte { return []byte("telemetry/aggregate/" + category) }

// handle is the aggregator's consumer.TxHandler.
func (a *aggregator) handle(ctx context.Context, txn *badger.Txn, e *streamdv1.Event) error {
	if e.EntityType != carType || len(e.Tags) == 0 {
		return nil
	}
	category := e.Tags[0]
	var s sample
	if err := json.Unmarshal(e.Payload, &s); err != nil {
		return fmt.Errorf("telemetry: reading %s/%d: %w", e.EntityId, e.SeqNr, err)
	}
	var st aggState
	if err := loadJSON(txn, stateKey(category), &st); err != nil {
		return err
	}
	n := windowOf(s.T, a.length)
	switch {
	case st.Open.Count > 0 && n < st.Open.Number:
		st.Late++
	case st.Open.Count > 0 && n > st.Open.Number:
		if err := a.emit(ctx, category, st.Emitted+1, &st.Open); err != nil {
			return err
		}
		st.Emitted++
		st.Open = window{Number: n}
		st.Open.add(s)
	default:
		st.Open.Number = n
		st.Open.add(s)
	}
	return storeJSON(txn, stateKey(category), st)
}

// windowOf is the number of the window holding sample time ms.
func windowOf(ms int64, length time.Duration) int64 {
	return ms / length.Milliseconds()
}

// emit writes the summary of a closed window as the seqNr-th event of the
// category's summary entity.
func (a *aggregator) emit(ctx context.Context, category string, seqNr uint64, w *window) error {
	payload, err := json.Marshal(w.summary(a.region, category, a.length))
	if err != nil {
		return fmt.Errorf("telemetry: encode summary: %w", err)
	}
	e := &streamdv1.Event{
		EntityType: summaryType, EntityId: a.region + "/" + category, SeqNr: seqNr, EventType: summaryEvent,
		Tags: []string{"summary"}, Topic: "summaries/" + a.region + "/" + category, Payload: payload,
	}
	written, err := writeOnce(ctx, a.append, a.load, e)
	if err != nil {
		return err
	}
	if written {
		a.written.Add(1)
	} else {
		a.recognised.Add(1)
	}
	return nil
}

// writeOnce appends e, whose SeqNr is the one its entity must get. If the
// journal already holds that seqNr with the same payload, an earlier run
// wrote it (see aggregator) and writeOnce reports written = false. Any
// other conflict is an error: the journal is behind (a summary is missing)
// or holds something else.
func writeOnce(ctx context.Context,
	appendFn func(context.Context, ...*streamdv1.Event) ([]journal.Appended, error),
	load func(entityType, entityID string, seqNr uint64) (*streamdv1.Event, error),
	e *streamdv1.Event) (written bool, err error) {
	typ, id, seqNr, payload := e.EntityType, e.EntityId, e.SeqNr, e.Payload
	_, err = appendFn(ctx, e)
	var conflict *journal.SeqNrConflictError
	if !errors.As(err, &conflict) {
		return err == nil, err
	}
	if conflict.Next < seqNr {
		return false, fmt.Errorf("telemetry: %s %s: cannot write seqNr %d, the journal's next is %d: a summary is missing", typ, id, seqNr, conflict.Next)
	}
	prev, err := load(typ, id, seqNr)
	if err != nil {
		return false, fmt.Errorf("telemetry: %s %s seqNr %d: %w", typ, id, seqNr, err)
	}
	if !bytes.Equal(prev.Payload, payload) {
		return false, fmt.Errorf("telemetry: %s %s seqNr %d is already written with another payload: %s, not %s", typ, id, seqNr, prev.Payload, payload)
	}
	return false, nil
}

func loadJSON(txn *badger.Txn, key []byte, v any) error {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	}
	if err == nil {
		err = item.Value(func(b []byte) error { return json.Unmarshal(b, v) })
	}
	if err != nil {
		return fmt.Errorf("telemetry: read %s: %w", key, err)
	}
	return nil
}

func storeJSON(txn *badger.Txn, key []byte, v any) error {
	b, err := json.Marshal(v)
	if err == nil {
		err = txn.Set(key, b)
	}
	if err != nil {
		return fmt.Errorf("telemetry: write %s: %w", key, err)
	}
	return nil
}

// newAggregatorConsumer is the exactly-once consumer of the aggregator of
// region, at its own region's producer at addr, reading only raw telemetry
// and handing it to h (the aggregator's handle).
func newAggregatorConsumer(region, addr string, store *offsets.Store, h consumer.TxHandler, log *slog.Logger) (*consumer.Consumer, error) {
	only, err := filters.Parse("include type="+carType, time.Now())
	if err != nil {
		return nil, err
	}
	return consumer.New(consumer.Options{
		Producers: []string{addr}, Name: "aggregator-" + region, Store: store,
		Filter: []*streamdv1.FilterCriterion{only}, TxHandler: h,
		MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, Logger: log,
	})
}

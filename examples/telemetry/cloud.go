package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/streamd/streamd/admin"
	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/filters"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// cloudName is the name of the cloud's consumer of the edge regions (the
// --consumer of streamctl filters).
const cloudName = "cloud"

// cloud is the remote region. Its consumer follows every edge region's
// producer with a filter in include mode: a permanent include of the
// summary entity type, so raw telemetry stays at the edge, plus whatever
// temporary includes raise the detail (addFilter, or an operator through
// the admin API). It writes the summaries into the cloud's own journal,
// exactly once, and keeps a per-car record of the raw detail it got.
type cloud struct {
	*region
	consumer *consumer.Consumer
	// admin runs the consumer and serves the AdminService over it on the
	// region's gRPC server, so streamctl can change its filter.
	admin *admin.Registry
	now   func() time.Time // clock for ttl= expiries; the producers enforce them with theirs
}

// newCloud makes the cloud's consumer of the edges and registers the
// AdminService on r's server; serve r after.
func newCloud(r *region, edges []string, meter *linkMeter, now func() time.Time, log *slog.Logger) (*cloud, error) {
	summaries, err := filters.Parse("include type="+summaryType, now())
	if err != nil {
		return nil, err
	}
	cl := &cloud{region: r, now: now}
	cl.consumer, err = consumer.New(consumer.Options{
		Producers: edges, Name: cloudName, Store: r.store,
		Filter: []*streamdv1.FilterCriterion{summaries}, TxHandler: cl.handle,
		DialOptions: meter.dialOptions(), MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("telemetry: cloud consumer: %w", err)
	}
	cl.admin = admin.NewRegistry(log)
	if err := cl.admin.Add(cl.consumer); err != nil {
		return nil, fmt.Errorf("telemetry: cloud consumer: %w", err)
	}
	cl.admin.Register(r.grpc)
	return cl, nil
}

// run runs the cloud's consumer until ctx is done. An error that retrying
// cannot cure stops the consumer (the registry logs it and the
// AdminService reports it); the rest of the example runs on.
func (cl *cloud) run(ctx context.Context) error { return cl.admin.Run(ctx) }

// addFilter adds one criterion in the filters text syntax, such as
// "include tag=sports ttl=10m", to the cloud consumer's filter, and returns
// it as added.
func (cl *cloud) addFilter(ctx context.Context, text string) (*streamdv1.FilterCriterion, error) {
	c, err := filters.Parse(text, cl.now())
	if err != nil {
		return nil, err
	}
	return c, cl.consumer.UpdateFilter(ctx, []*streamdv1.FilterCriterion{c}, nil)
}

// detail is what the cloud got of one car's raw telemetry.
type detail struct {
	Region, Category string
	First, Last      uint64 // seqNrs; the consumer delivers each at most once, in order
	Count            uint64
	LastOffset       uint64 // of the last one, in its region's journal
	Latest           sample
}

const detailPrefix = "telemetry/detail/"

// handle is the cloud consumer's TxHandler.
func (cl *cloud) handle(ctx context.Context, txn *badger.Txn, e *streamdv1.Event) error {
	switch e.EntityType {
	case summaryType:
		return cl.storeSummary(ctx, e)
	case carType:
		return cl.storeDetail(txn, e)
	}
	return nil
}

// storeSummary replicates an edge's summary into the cloud journal, with
// the edge region as its origin and the edge's seqNr as its origin seqNr.
// The append is outside the consumer's transaction, so a crash (or a commit
// conflict) after it re-delivers the summary; the journal applies each
// origin seqNr of an (origin, entity) once and answers the second append
// with Appended.Duplicate, writing nothing. A summary that skips one is
// refused (journal.OriginGapError), which stops the consumer: summaries are
// always included, so none may be missing.
func (cl *cloud) storeSummary(ctx context.Context, e *streamdv1.Event) error {
	origin, _, _ := strings.Cut(e.EntityId, "/")
	_, err := cl.prod.Publish(ctx, &streamdv1.Event{
		EntityType: e.EntityType, EntityId: e.EntityId, EventType: e.EventType,
		Tags: slices.Clone(e.Tags), Topic: e.Topic, Payload: e.Payload,
		Origin: origin, OriginSeqNr: e.SeqNr, OriginTimestampUnixNano: e.TimestampUnixNano,
	})
	if err != nil {
		return fmt.Errorf("telemetry: replicate summary %s/%d: %w", e.EntityId, e.SeqNr, err)
	}
	return nil
}

func (cl *cloud) storeDetail(txn *badger.Txn, e *streamdv1.Event) error {
	key := []byte(detailPrefix + e.EntityId)
	var d detail
	if err := loadJSON(txn, key, &d); err != nil {
		return err
	}
	if err := json.Unmarshal(e.Payload, &d.Latest); err != nil {
		return fmt.Errorf("telemetry: reading %s/%d: %w", e.EntityId, e.SeqNr, err)
	}
	if d.Count == 0 {
		d.First = e.SeqNr
		d.Region, _, _ = strings.Cut(e.EntityId, "-")
		if len(e.Tags) > 0 {
			d.Category = e.Tags[0]
		}
	}
	d.Last, d.LastOffset = e.SeqNr, e.Offset
	d.Count++
	return storeJSON(txn, key, d)
}

// details returns the cloud's record of raw detail, by car id.
func (cl *cloud) details() (map[string]detail, error) {
	out := map[string]detail{}
	err := cl.store.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte(detailPrefix)})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			var d detail
			if err := it.Item().Value(func(b []byte) error { return json.Unmarshal(b, &d) }); err != nil {
				return err
			}
			out[string(bytes.TrimPrefix(it.Item().Key(), []byte(detailPrefix)))] = d
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("telemetry: read cloud detail: %w", err)
	}
	return out, nil
}

// raised describes the cloud's temporary includes still active at now, for
// the progress line: "tag=sports until 12:00:15".
func (cl *cloud) raised() string {
	now := cl.now()
	var active []string
	for _, c := range cl.consumer.Filter() {
		if c.Action != streamdv1.FilterAction_FILTER_ACTION_INCLUDE || c.ExpiresAtUnixNano == 0 {
			continue
		}
		if exp := time.Unix(0, c.ExpiresAtUnixNano); exp.After(now) {
			text, _, _ := strings.Cut(strings.TrimPrefix(filters.Format(c), "include "), " until=")
			active = append(active, text+" until "+exp.Format(time.TimeOnly))
		}
	}
	if len(active) == 0 {
		return "summaries only"
	}
	return strings.Join(active, ", ")
}

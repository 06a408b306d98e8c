package topology_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/streamd/streamd/internal/regiontest"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
	"github.com/streamd/streamd/topology"
)

// sentCounter counts the events a producer sent to the streams of
// consumers whose name begins with prefix.
type sentCounter struct {
	prefix string
	events atomic.Int64
}

func (s *sentCounter) StreamOpened(string, string)       {}
func (s *sentCounter) StreamClosed(string, string)       {}
func (s *sentCounter) Progressed(string, string, uint64) {}
func (s *sentCounter) Sent(_, consumer string, events, _, _ int) {
	if strings.HasPrefix(consumer, s.prefix) {
		s.events.Add(int64(events))
	}
}

// usCopy is an event of region us, as eu's replication from us appends it.
func usCopy(id string, originSeqNr uint64) *streamdv1.Event {
	e := cartEvent(id)
	e.Origin, e.OriginSeqNr = "us", originSeqNr
	return e
}

// copyHistory runs CopyHistory from the pod at from into the journal j,
// both of region eu, over part; a copy that does not end fails the test.
func copyHistory(t *testing.T, from string, j *journal.Journal, part offsets.SliceRange) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := topology.CopyHistory(ctx, topology.ReplicationOptions{
		From: topology.Region{Name: "eu", Addrs: []string{from}}, Member: true, Slices: part, Journal: j,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: quiet,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Pod B of region eu takes slices 0-511 from pod A: CopyHistory gives B
// every event A holds of those slices — A's own (origin eu) and its copies
// from us — with their origin seqNrs, and nothing of other slices. B then
// continues an entity's eu sequence where A left it, and a second copy,
// after A wrote more, is sent only the new events.
func TestCopyHistoryFromAnotherPod(t *testing.T) {
	sent := &sentCounter{prefix: "copy-"}
	a := regiontest.StartWith(t, t.TempDir(), "127.0.0.1:0", producer.Options{
		Journal: journal.Options{Region: "eu"}, Server: producer.ServerOptions{Observer: sent}})
	b := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	defer a.Stop()
	defer b.Stop()
	aj, bj := a.Producer.Journal(), b.Producer.Journal()
	part := offsets.SliceRange{First: 0, Last: 511}

	// A holds, per entity, 1-3 events written at A and, for every other
	// entity, 2 copies from us, interleaved.
	var ids, in []string
	for i := range 60 {
		id := fmt.Sprintf("c%d", i)
		ids = append(ids, id)
		if part.Contains(journal.SliceOf(id)) {
			in = append(in, id)
		}
	}
	if len(in) == 0 || len(in) == len(ids) {
		t.Fatalf("%d of %d entities in %s: want some in and some out", len(in), len(ids), part)
	}
	for round := range 3 {
		var batch []*streamdv1.Event
		for i, id := range ids {
			if round <= i%3 {
				batch = append(batch, cartEvent(id))
			}
			if i%2 == 0 && round < 2 {
				batch = append(batch, usCopy(id, uint64(round+1)))
			}
		}
		appendEvents(t, aj, batch...)
	}
	// B replicated the first event of one of them from us itself.
	var usFirst string
	for _, id := range in {
		if i := slices.Index(ids, id); i%2 == 0 {
			usFirst = id
			break
		}
	}
	appendEvents(t, bj, usCopy(usFirst, 1))

	want, _ := histories(t, aj, part)
	held := 0
	for _, seqs := range want {
		held += len(seqs)
	}
	copyHistory(t, a.Addr, bj, part)
	got, n := histories(t, bj, offsets.AllSlices)
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("B holds %v, want A's events of slices %s: %v", got, part, want)
	}
	if n != held {
		t.Fatalf("B holds %d events, A %d of slices %s", n, held, part)
	}
	if s := sent.events.Load(); s != int64(held) {
		t.Fatalf("A sent the copy %d events, it holds %d of slices %s", s, held, part)
	}

	// B writes to an entity it now serves: its eu sequence goes on from A's.
	hot := in[0]
	last := uint64(len(want[[2]string{"eu", hot}]))
	app := appendEvents(t, bj, cartEvent(hot))
	recs, err := bj.Read(app[0].Offset, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := recs[0]; e.GetOrigin() != "eu" || e.GetOriginSeqNr() != last+1 {
		t.Fatalf("B's own event of %s has origin %q seqNr %d, want eu %d (after A's %d)", hot, e.GetOrigin(), e.GetOriginSeqNr(), last+1, last)
	}

	// A writes more (to every entity but hot, which B serves now); the
	// second copy resumes from B's stored offset.
	var batch []*streamdv1.Event
	added := 0
	for i, id := range ids {
		if id == hot {
			continue
		}
		batch = append(batch, cartEvent(id))
		if i%2 == 0 {
			batch = append(batch, usCopy(id, 3))
		}
		if part.Contains(journal.SliceOf(id)) {
			added += 1 + (1 - i%2)
		}
	}
	appendEvents(t, aj, batch...)
	sent.events.Store(0)
	_, before := histories(t, bj, offsets.AllSlices)
	copyHistory(t, a.Addr, bj, part)
	if s := sent.events.Load(); s != int64(added) {
		t.Fatalf("the second copy was sent %d events, A wrote %d new ones in slices %s", s, added, part)
	}
	want, _ = histories(t, aj, part)
	want[[2]string{"eu", hot}] = append(want[[2]string{"eu", hot}], last+1)
	got, n = histories(t, bj, offsets.AllSlices)
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Fatalf("after the second copy B holds %v, want %v", got, want)
	}
	if n != before+added {
		t.Fatalf("B holds %d events, %d before the second copy, which copied %d", n, before, added)
	}
}

// A copy from a pod that holds nothing of the slices returns: at once for
// an empty journal, and once the source's watermark covered its last
// offset when it holds events of other slices only.
func TestCopyHistoryOfNothing(t *testing.T) {
	a := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	b := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	defer a.Stop()
	defer b.Stop()
	aj, bj := a.Producer.Journal(), b.Producer.Journal()
	part := offsets.SliceRange{First: 0, Last: 511}
	copyHistory(t, a.Addr, bj, part)

	var batch []*streamdv1.Event
	for i := 0; len(batch) < 20; i++ {
		if id := fmt.Sprintf("o%d", i); !part.Contains(journal.SliceOf(id)) {
			batch = append(batch, cartEvent(id), usCopy(id, 1))
		}
	}
	appendEvents(t, aj, batch...)
	copyHistory(t, a.Addr, bj, part)
	if _, n := histories(t, bj, offsets.AllSlices); n != 0 {
		t.Fatalf("B holds %d events, A none of slices %s", n, part)
	}
	store, err := offsets.Wrap(bj, offsets.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	jid := aj.ID()
	r, err := store.Resolve(offsets.Key{Consumer: "copy-eu-all-" + hex.EncodeToString(jid), JournalID: jid, Slices: part})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Found || r.Offset.Offset != aj.LastOffset() {
		t.Fatalf("B stored %+v for A's slices %s, want offset %d", r, part, aj.LastOffset())
	}
}

// CopyHistory copies one other journal, whole, of a member or of another
// region.
func TestCopyHistoryRefuses(t *testing.T) {
	eu := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	defer eu.Stop()
	j := eu.Producer.Journal()
	pod := topology.Region{Name: "eu", Addrs: []string{eu.Addr}}
	for name, opts := range map[string]topology.ReplicationOptions{
		"two addresses": {From: topology.Region{Name: "eu", Addrs: []string{eu.Addr, "127.0.0.1:1"}}, Journal: j, Member: true},
		"a filter": {From: pod, Journal: j, Member: true, Filter: []*streamdv1.FilterCriterion{{
			Action: streamdv1.FilterAction_FILTER_ACTION_EXCLUDE, Field: streamdv1.FilterField_FILTER_FIELD_ENTITY_ID, Value: "x"}}},
		"not a member": {From: pod, Journal: j},
		"this journal": {From: pod, Journal: j, Member: true},
	} {
		if err := topology.CopyHistory(context.Background(), opts); !errors.Is(err, topology.ErrInvalidOptions) {
			t.Errorf("CopyHistory with %s: %v, want ErrInvalidOptions", name, err)
		}
	}
}

// A copy that cannot give an entity its whole history fails instead of
// leaving a hole: here B's stored offset is past an event of A that B
// does not hold (as after retention deleted it at A before B copied it).
func TestCopyHistoryGapFails(t *testing.T) {
	a := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	b := regiontest.Start(t, "eu", t.TempDir(), "127.0.0.1:0")
	defer a.Stop()
	defer b.Stop()
	aj, bj := a.Producer.Journal(), b.Producer.Journal()
	first := appendEvents(t, aj, usCopy("g", 1))
	appendEvents(t, aj, usCopy("g", 2))
	store, err := offsets.Wrap(bj, offsets.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	jid := aj.ID()
	if err := store.Set(offsets.Key{Consumer: "copy-eu-all-" + hex.EncodeToString(jid), JournalID: jid, Slices: offsets.AllSlices}, first[0].Offset); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = topology.CopyHistory(ctx, topology.ReplicationOptions{
		From: topology.Region{Name: "eu", Addrs: []string{a.Addr}}, Member: true, Journal: bj,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: quiet,
	})
	var gap *journal.OriginGapError
	if !errors.As(err, &gap) || gap.Origin != "us" || gap.EntityID != "g" || gap.Next != 1 || gap.Got != 2 {
		t.Fatalf("CopyHistory = %v, want an *journal.OriginGapError of us cart/g (next 1, got 2)", err)
	}
	if _, n := histories(t, bj, offsets.AllSlices); n != 0 {
		t.Fatalf("B holds %d events after the refused copy, want none", n)
	}
}

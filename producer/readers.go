package producer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/journal"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// Reader is a consumer reading from the producer, per consumer name and
// slice range, as the producer last heard of it.
type Reader struct {
	Consumer    string
	First, Last uint32 // slice range, inclusive
	Stream      string
	// Connected: a stream of it is open now. LastSeen is when the producer
	// last heard of it (now while connected).
	Connected bool
	LastSeen  time.Time
	// Addr is the remote address of its last stream.
	Addr string
	// Delivered is the highest offset sent to it or covered by Progress;
	// Stored the offset it last reported as stored (or resumed from).
	Delivered, Stored uint64
	Filter            []*streamdv1.FilterCriterion
	// Lag is the journal's last offset minus Stored; LagTime how long ago
	// the first event after Stored was committed (0 when Lag is 0).
	Lag     uint64
	LagTime time.Duration
}

// Proto is r as the admin API sends it.
func (r Reader) Proto() *streamdv1.ReaderStatus {
	return &streamdv1.ReaderStatus{
		Consumer: r.Consumer, Slices: &streamdv1.SliceRange{First: r.First, Last: r.Last}, Stream: r.Stream,
		Connected: r.Connected, LastSeenUnixNano: r.LastSeen.UnixNano(), Addr: r.Addr,
		DeliveredOffset: r.Delivered, StoredOffset: r.Stored, Filter: r.Filter,
		Lag: r.Lag, LagNanos: int64(r.LagTime),
	}
}

type readerKey struct {
	consumer    string
	first, last uint32
}

// readerState is a Reader and the streams open for it.
type readerState struct {
	r       Reader
	streams int
}

// readers is the producer's view of the consumers reading from it: kept in
// memory, saved beside the events in the journal (keys readerKeyPrefix…)
// at most every ServerOptions.ReaderSaveInterval and at Shutdown, loaded
// at NewServer. It holds at most MaxReaders, each seen within ReaderMaxAge;
// beyond, the one seen longest ago goes first.
type readers struct {
	j   *journal.Journal
	log *slog.Logger
	now func() time.Time
	max int
	age time.Duration
	// every bounds how often the view is saved.
	every time.Duration

	mu        sync.Mutex
	m         map[readerKey]*readerState
	dirty     map[readerKey]bool // changed (or removed) since saved
	junk      [][]byte           // keys of saved records that did not decode, to delete
	lastSaved time.Time

	saving sync.Mutex // one save at a time
}

// readerKeyPrefix begins the journal keys of the view: 0x00 (not the
// journal's own keys) 'r', then the consumer name (uvarint length
// prefixed) and the slice range (two big-endian uint16).
var readerKeyPrefix = []byte{0x00, 'r'}

func encodeReaderKey(k readerKey) []byte {
	b := append([]byte(nil), readerKeyPrefix...)
	b = binary.AppendUvarint(b, uint64(len(k.consumer)))
	b = append(b, k.consumer...)
	b = binary.BigEndian.AppendUint16(b, uint16(k.first))
	return binary.BigEndian.AppendUint16(b, uint16(k.last))
}

func newReaders(j *journal.Journal, opts ServerOptions) *readers {
	return &readers{
		j: j, log: opts.Logger, now: opts.Now, max: opts.MaxReaders, age: opts.ReaderMaxAge, every: opts.ReaderSaveInterval,
		m: map[readerKey]*readerState{}, dirty: map[readerKey]bool{}, lastSaved: opts.Now(),
	}
}

// load reads the saved view. Records that do not decode are dropped (and
// deleted at the next save) with a warning: the view is for operators and
// never stops the producer.
func (rs *readers) load() error {
	now := rs.now()
	err := rs.j.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: readerKeyPrefix, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().KeyCopy(nil)
			var p streamdv1.ReaderStatus
			err := it.Item().Value(func(v []byte) error { return proto.Unmarshal(v, &p) })
			r := readerFromProto(&p)
			key := readerKey{r.Consumer, r.First, r.Last}
			if err != nil || !bytes.Equal(encodeReaderKey(key), k) {
				rs.log.Warn("producer: dropping a saved consumer record that does not decode", "key", fmt.Sprintf("%x", k), "err", err)
				rs.junk = append(rs.junk, k)
				continue
			}
			r.Connected = false
			rs.m[key] = &readerState{r: r}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("producer: load the consumers view: %w", err)
	}
	rs.mu.Lock()
	rs.evictLocked(now)
	rs.mu.Unlock()
	return nil
}

func readerFromProto(p *streamdv1.ReaderStatus) Reader {
	return Reader{
		Consumer: p.GetConsumer(), First: p.GetSlices().GetFirst(), Last: p.GetSlices().GetLast(), Stream: p.GetStream(),
		LastSeen: time.Unix(0, p.GetLastSeenUnixNano()), Addr: p.GetAddr(),
		Delivered: p.GetDeliveredOffset(), Stored: p.GetStoredOffset(), Filter: p.GetFilter(),
	}
}

// evictLocked drops the readers seen before the age bound and, beyond the
// count bound, those seen longest ago.
func (rs *readers) evictLocked(now time.Time) {
	for k, s := range rs.m {
		if s.streams == 0 && now.Sub(s.r.LastSeen) > rs.age {
			delete(rs.m, k)
			rs.dirty[k] = true
		}
	}
	if len(rs.m) <= rs.max {
		return
	}
	keys := make([]readerKey, 0, len(rs.m))
	for k := range rs.m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b readerKey) int {
		sa, sb := rs.m[a], rs.m[b]
		if sa.streams > 0 != (sb.streams > 0) { // connected ones last
			if sa.streams > 0 {
				return 1
			}
			return -1
		}
		return sa.r.LastSeen.Compare(sb.r.LastSeen)
	})
	for _, k := range keys[:len(keys)-rs.max] {
		delete(rs.m, k)
		rs.dirty[k] = true
	}
}

// opened records a stream opened for sub and returns its key.
func (rs *readers) opened(sub *subscription, addr string, stored uint64) readerKey {
	k := readerKey{sub.consumer, sub.first, sub.last}
	now := rs.now()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	s := rs.m[k]
	if s == nil {
		s = &readerState{}
		rs.m[k] = s
	}
	s.streams++
	s.r = Reader{
		Consumer: sub.consumer, First: sub.first, Last: sub.last, Stream: sub.stream.def.Name,
		Connected: true, LastSeen: now, Addr: addr, Delivered: sub.reported, Stored: stored, Filter: sub.criteria,
	}
	rs.dirty[k] = true
	rs.evictLocked(now)
	return k
}

// update changes k's record with fn, if it is still in the view.
func (rs *readers) update(k readerKey, fn func(r *Reader)) {
	rs.mu.Lock()
	if s := rs.m[k]; s != nil {
		fn(&s.r)
		s.r.LastSeen = rs.now()
		rs.dirty[k] = true
	}
	rs.mu.Unlock()
}

// closed records the end of a stream of k.
func (rs *readers) closed(k readerKey) {
	rs.mu.Lock()
	if s := rs.m[k]; s != nil {
		s.streams--
		s.r.Connected = s.streams > 0
		s.r.LastSeen = rs.now()
		rs.dirty[k] = true
	}
	rs.mu.Unlock()
}

// maybeSave saves the view if it changed and the last save is at least
// every ago; a save under way elsewhere is not waited for.
func (rs *readers) maybeSave() {
	rs.mu.Lock()
	due := len(rs.dirty)+len(rs.junk) > 0 && rs.now().Sub(rs.lastSaved) >= rs.every
	rs.mu.Unlock()
	if due && rs.saving.TryLock() {
		defer rs.saving.Unlock()
		rs.save()
	}
}

// save writes the changed records to the journal, and deletes the records
// of readers no longer in the view. A failure is logged and retried at the
// next save: the view is for operators and never stops a stream.
func (rs *readers) save() {
	rs.mu.Lock()
	now := rs.now()
	rs.evictLocked(now)
	type write struct {
		key []byte
		val []byte // nil: delete
	}
	var writes []write
	changed := rs.dirty
	rs.dirty = map[readerKey]bool{}
	rs.lastSaved = now
	for _, k := range rs.junk {
		writes = append(writes, write{key: k})
	}
	junk := rs.junk
	rs.junk = nil
	for k := range changed {
		s := rs.m[k]
		if s == nil {
			writes = append(writes, write{key: encodeReaderKey(k)})
			continue
		}
		r := s.r
		if r.Connected {
			r.LastSeen = now
		}
		val, err := proto.Marshal(r.Proto())
		if err != nil {
			rs.log.Warn("producer: encode a consumer record", "consumer", k.consumer, "err", err)
			continue
		}
		writes = append(writes, write{key: encodeReaderKey(k), val: val})
	}
	rs.mu.Unlock()
	if len(writes) == 0 {
		return
	}
	err := rs.j.Update(func(txn *badger.Txn) error {
		for _, w := range writes {
			var err error
			if w.val == nil {
				err = txn.Delete(w.key)
			} else {
				err = txn.Set(w.key, w.val)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if !errors.Is(err, journal.ErrClosed) {
			rs.log.Warn("producer: save the consumers view; retrying at the next save", "err", err)
		}
		rs.mu.Lock()
		for k := range changed {
			rs.dirty[k] = true
		}
		rs.junk = append(rs.junk, junk...)
		rs.mu.Unlock()
	}
}

// list returns the view, sorted by consumer and slice range, with each
// reader's lag in the journal now.
func (rs *readers) list() []Reader {
	rs.mu.Lock()
	now := rs.now()
	rs.evictLocked(now)
	out := make([]Reader, 0, len(rs.m))
	for _, s := range rs.m {
		r := s.r
		if r.Connected {
			r.LastSeen = now
		}
		out = append(out, r)
	}
	rs.mu.Unlock()
	slices.SortFunc(out, func(a, b Reader) int {
		if a.Consumer != b.Consumer {
			if a.Consumer < b.Consumer {
				return -1
			}
			return 1
		}
		return int(a.First) - int(b.First)
	})
	info := rs.j.Info()
	for i := range out {
		r := &out[i]
		if r.Stored >= info.LastOffset {
			continue
		}
		r.Lag = info.LastOffset - r.Stored
		evs, err := rs.j.Read(max(r.Stored+1, info.FirstOffset), 1, nil)
		if err == nil && len(evs) == 1 {
			r.LagTime = max(now.Sub(time.Unix(0, evs[0].GetTimestampUnixNano())), 0)
		}
	}
	return out
}

// remoteAddr is the remote address of the stream's client, or "".
func remoteAddr(sub *subscription) string {
	if p, ok := peer.FromContext(sub.st.Context()); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

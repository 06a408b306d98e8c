package journal

import (
	"context"
	"sync"
)

// ring holds the most recent committed events, by offset, for live readers.
type ring struct {
	mu     sync.RWMutex
	buf    []Record
	oldest uint64 // smallest offset held
	next   uint64 // offset the next committed event will have
	notify chan struct{}
	closed bool
}

func newRing(size int) *ring {
	return &ring{buf: make([]Record, size), notify: make(chan struct{})}
}

func (r *ring) reset(next uint64) {
	r.mu.Lock()
	r.oldest, r.next = next, next
	r.mu.Unlock()
}

// push adds committed events (consecutive offsets from r.next) and wakes
// every waiting reader.
func (r *ring) push(records []Record) {
	size := uint64(len(r.buf))
	r.mu.Lock()
	for _, rec := range records {
		r.buf[rec.Offset%size] = rec
	}
	r.next = records[len(records)-1].Offset + 1
	if r.next-r.oldest > size {
		r.oldest = r.next - size
	}
	close(r.notify)
	r.notify = make(chan struct{})
	r.mu.Unlock()
}

func (r *ring) close() {
	r.mu.Lock()
	if !r.closed {
		r.closed = true
		close(r.notify)
	}
	r.mu.Unlock()
}

// read appends up to limit events from offset from. With nothing new it returns
// a channel closed at the next commit. ErrFellBehind if from is no longer held.
func (r *ring) read(from uint64, limit int, dst []Record) ([]Record, <-chan struct{}, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return dst, nil, ErrClosed
	}
	if from < r.oldest {
		return dst, nil, ErrFellBehind
	}
	if from >= r.next {
		return dst, r.notify, nil
	}
	size := uint64(len(r.buf))
	for o := from; o < r.next && limit > 0; o++ {
		dst = append(dst, r.buf[o%size])
		limit--
	}
	return dst, nil, nil
}

// ReadLive appends up to limit committed records from offset from out of the
// live ring. When none are committed yet it returns a channel that is closed
// at the next commit. When the ring no longer holds from it returns
// ErrFellBehind: read from the journal with ReadRecords, then return to the
// ring. Records from the ring are shared: callers must not modify them.
func (j *Journal) ReadLive(from uint64, limit int, dst []Record) ([]Record, <-chan struct{}, error) {
	return j.ring.read(from, limit, dst)
}

// Cursor reads the journal in offset order from a position, from the live
// ring while it keeps up and from Badger when it falls behind. The switch is
// by offset, so there is never a gap or a duplicate at the seam. A Cursor is
// not safe for concurrent use.
type Cursor struct {
	j    *Journal
	next uint64
	bufs *readBuffers // nil: each read allocates its own
}

// NewCursor starts a cursor at offset from (the first offset it returns).
func (j *Journal) NewCursor(from uint64) *Cursor { return &Cursor{j: j, next: from} }

// ReuseBuffers makes the cursor reuse its buffers from one Read to the
// next: the records a Read takes from Badger (not those of the live ring)
// are then valid only until the next Read, which overwrites them. For a
// reader done with each batch before it reads the next; it saves two
// allocations of a block's size per block read. The cursor keeps buffers
// of at most 1 MiB each (maxKeptBuffer), and none once it reads from the
// ring. It returns c.
func (c *Cursor) ReuseBuffers() *Cursor {
	c.bufs = new(readBuffers)
	return c
}

// Next is the offset the cursor reads next.
func (c *Cursor) Next() uint64 { return c.next }

// Read appends up to limit events without blocking. When there are none it
// returns a channel that is closed when more may be available.
func (c *Cursor) Read(limit int, dst []Record) ([]Record, <-chan struct{}, error) {
	if floor := c.j.floor.Load(); c.next < floor {
		return dst, nil, &OutOfRangeError{Requested: c.next, FirstAvailable: floor}
	}
	n := len(dst)
	dst, wait, err := c.j.ReadLive(c.next, limit, dst)
	switch {
	case err == ErrFellBehind:
		if c.bufs != nil {
			c.bufs.reset()
		}
		dst, err = c.j.readRecords(c.next, limit, dst, c.bufs)
		wait = nil
		if err == nil && len(dst) == n {
			// Raced with a commit that outran the ring; the next call reads it.
			wait = closedChan
		}
	case err == nil && c.bufs != nil:
		*c.bufs = readBuffers{} // the ring serves it now: keep nothing
	}
	if err != nil {
		return dst, nil, err
	}
	if len(dst) > n {
		c.next = dst[len(dst)-1].Offset + 1
	}
	return dst, wait, nil
}

// Wait blocks until Read returns at least one event, ctx is done, or an
// error occurs.
func (c *Cursor) Wait(ctx context.Context, limit int, dst []Record) ([]Record, error) {
	for {
		n := len(dst)
		var wait <-chan struct{}
		var err error
		dst, wait, err = c.Read(limit, dst)
		if err != nil || len(dst) > n {
			return dst, err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return dst, ctx.Err()
		}
	}
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

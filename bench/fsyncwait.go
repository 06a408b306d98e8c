package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"time"

	"github.com/streamd/streamd/internal/datasync"
)

// fsyncWaitMain is `bench fsync-wait`: the disk alone, written and
// fdatasync'd in a loop the way the journal's writer does (one frame, one
// fdatasync, the next one begun once it returns), and how long an event
// arriving at a steady rate would wait for the first fdatasync begun after
// it to end: the floor of live latency for any journal that delivers an
// event only once it is durable and syncs the same way on this disk.
func fsyncWaitMain(args []string) error {
	fs := flag.NewFlagSet("fsync-wait", flag.ContinueOnError)
	rate := fs.Float64("rate", 10000, "events/s arriving, for the wait")
	interval := fs.Duration("interval", 0, "begin an fdatasync at most this often (0: each as soon as the one before returns); the loop sleeps until then")
	d := fs.Duration("duration", 10*time.Second, "how long to write")
	frame := fs.Int("frame", 1024, "bytes written before each fdatasync")
	dir := fs.String("dir", "", "directory of the file written (default: a new temporary directory)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate <= 0 || *d <= 0 || *frame <= 0 || *interval < 0 {
		return fmt.Errorf("-rate, -duration and -frame must be positive, -interval not negative")
	}
	if *dir == "" {
		tmp, err := os.MkdirTemp("", "fsync-wait-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		*dir = tmp
	}
	file, err := newFsyncFile(*dir)
	if err != nil {
		return err
	}
	defer file.remove()
	syncs, err := file.loop(*d, *interval, *frame)
	if err != nil {
		return err
	}
	took := make([]int64, len(syncs))
	for i, s := range syncs {
		took[i] = int64(s.end - s.start)
	}
	f, w := summarize(took), summarize(eventWaits(syncs, *rate, *d))
	ms := func(ns int64) string { return sig3(float64(ns) / 1e6) }
	fmt.Printf("%d fdatasyncs of %d B writes in %s (%s/s): p50 %s ms, p99 %s ms, max %s ms\n",
		len(syncs), *frame, *d, fmtInt(float64(len(syncs))/d.Seconds()), ms(f.P50), ms(f.P99), ms(slices.Max(took)))
	fmt.Printf("an event arriving at %s/s waits for the first fdatasync begun after it: p50 %s ms, p99 %s ms, p99.9 %s ms\n",
		fmtInt(*rate), ms(w.P50), ms(w.P99), ms(w.P999))
	return nil
}

// span is one fdatasync: when it began and ended, from the loop's start.
type span struct{ start, end time.Duration }

// fsyncFile is a file filled with zeros beforehand (as the journal's
// segments are), to write and fdatasync in a loop.
type fsyncFile struct{ *os.File }

const fsyncFileSize = 256 << 20

func newFsyncFile(dir string) (fsyncFile, error) {
	f, err := os.CreateTemp(dir, "fsync-wait-")
	if err != nil {
		return fsyncFile{}, err
	}
	ff := fsyncFile{f}
	zeros := make([]byte, 1<<20)
	for off := 0; off < fsyncFileSize; off += len(zeros) {
		if _, err := f.Write(zeros); err != nil {
			ff.remove()
			return fsyncFile{}, err
		}
	}
	if err := f.Sync(); err != nil {
		ff.remove()
		return fsyncFile{}, err
	}
	return ff, nil
}

func (f fsyncFile) remove() {
	_ = f.Close()
	_ = os.Remove(f.Name())
}

// loop writes frame bytes and fdatasyncs them, in a loop, for d, an
// fdatasync begun at most every interval (0: each once the one before
// returned; the loop sleeps until then, so that it loads the machine no
// more than a journal's writer waiting for its next events does).
func (f fsyncFile) loop(d, interval time.Duration, frame int) ([]span, error) {
	buf := make([]byte, frame)
	for i := range buf {
		buf[i] = byte(i) | 1
	}
	var (
		syncs []span
		off   int64
		last  time.Duration
	)
	begin := time.Now()
	for time.Since(begin) < d {
		if wait := last + interval - time.Since(begin); interval > 0 && len(syncs) > 0 && wait > 0 {
			preciseSleep(wait)
		}
		if off+int64(frame) > fsyncFileSize {
			off = 0
		}
		if _, err := f.WriteAt(buf, off); err != nil {
			return nil, err
		}
		off += int64(frame)
		last = time.Since(begin)
		if err := datasync.File(f.File); err != nil {
			return nil, err
		}
		syncs = append(syncs, span{last, time.Since(begin)})
	}
	return syncs, nil
}

// eventWaits returns, for events arriving every 1/rate s over d, how long
// each waits from its arrival to the end of the first fdatasync begun after
// it (syncs in the order begun).
func eventWaits(syncs []span, rate float64, d time.Duration) []int64 {
	var waits []int64
	step := time.Duration(float64(time.Second) / rate)
	for t := time.Duration(0); t < d; t += step {
		i := sort.Search(len(syncs), func(i int) bool { return syncs[i].start >= t })
		if i == len(syncs) {
			break
		}
		waits = append(waits, int64(syncs[i].end-t))
	}
	return waits
}

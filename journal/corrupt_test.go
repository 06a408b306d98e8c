package journal

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

var corruptRandom = flag.Int("corrupt-random", 0, "random byte flips TestCorruption tries (default 12; 300 with STREAMD_FAULT_LONG=1)")

// A corruption case runs in a child process (Badger may panic or fault on
// damaged files, which must not take the test binary with it): the test
// binary started with these variables checks one damaged journal and prints
// a corruptResult.
const (
	corruptDirEnv  = "STREAMD_JOURNAL_CORRUPT_DIR"
	corruptWantEnv = "STREAMD_JOURNAL_CORRUPT_WANT"
	corruptPrefix  = "corrupt-result: "
)

func init() {
	if dir := os.Getenv(corruptDirEnv); dir != "" {
		r := checkCorrupted(dir, os.Getenv(corruptWantEnv))
		r.withoutDir(dir)
		b, _ := json.Marshal(r)
		fmt.Printf("%s%s\n", corruptPrefix, b)
		os.Exit(0)
	}
}

// corruptResult is what reading a damaged journal gave.
type corruptResult struct {
	OpenErr    string `json:",omitempty"`
	LastOffset uint64
	// By offset (ReadRecords of one offset, decoded), by scan (Read in
	// batches) and by entity (ReadEntity): events read back identical, read
	// back different, absent without an error, and errors.
	Identical, Wrong, Missing, Errs                         int
	ScanIdentical, ScanWrong, ScanMissing, ScanErrs         int
	EntityIdentical, EntityWrong, EntityMissing, EntityErrs int
	FirstErr                                                string   `json:",omitempty"`
	Examples                                                []string `json:",omitempty"`
	WrongExamples                                           []string `json:",omitempty"`
}

func (r *corruptResult) err(err error) {
	if r.FirstErr == "" {
		r.FirstErr = err.Error()
	}
}

// withoutDir takes the directory out of messages, so that only the error's
// own words are classified.
func (r *corruptResult) withoutDir(dir string) {
	r.OpenErr = strings.ReplaceAll(r.OpenErr, dir, "DIR")
	r.FirstErr = strings.ReplaceAll(r.FirstErr, dir, "DIR")
}

func (r *corruptResult) example(format string, args ...any) {
	if len(r.Examples) < 4 {
		r.Examples = append(r.Examples, fmt.Sprintf(format, args...))
	}
}

func (r *corruptResult) wrongExample(format string, args ...any) {
	if len(r.WrongExamples) < 4 {
		r.WrongExamples = append(r.WrongExamples, fmt.Sprintf(format, args...))
	}
}

// corruptOptions are the options the corpus is written and read with: the
// smallest memtable Badger takes with its 1 MiB value threshold (Validate
// allows 1 MiB, which Badger refuses), so that the events span tables.
var corruptOptions = Options{MemTableSize: 7 << 20}

// checkCorrupted opens the journal in dir and reads every event the want
// file lists by offset, by scan and by entity, comparing bytes.
func checkCorrupted(dir, wantPath string) corruptResult {
	var r corruptResult
	want, err := readWant(wantPath)
	if err != nil {
		r.OpenErr = "test setup: " + err.Error()
		return r
	}
	j, err := Open(dir, corruptOptions)
	if err != nil {
		r.OpenErr = err.Error()
		return r
	}
	defer j.Close()
	r.LastOffset = j.LastOffset()
	last := uint64(len(want))
	readOne := func(off uint64) {
		recs, err := j.ReadRecords(off, 1, nil)
		switch {
		case err != nil:
			r.Errs++
			r.err(err)
		case len(recs) == 0:
			r.Missing++
			r.example("offset %d: absent, no error", off)
		case recs[0].Offset != off || !bytes.Equal(recs[0].Raw, want[off-1]):
			r.Wrong++
			r.wrongExample("offset %d: read back different bytes (offset %d)", off, recs[0].Offset)
		default:
			if _, err := recs[0].Event(); err != nil {
				r.Errs++
				r.err(err)
			} else {
				r.Identical++
			}
		}
	}
	// Every third offset (blocks hold five events, so every position in a
	// block is read somewhere) and the last; the scan below reads them all.
	for off := uint64(1); off <= last; off += 3 {
		readOne(off)
	}
	if (last-1)%3 != 0 {
		readOne(last)
	}
	for from := uint64(1); from <= last; {
		batch, err := j.Read(from, 500, nil)
		if err != nil {
			r.ScanErrs++
			r.err(err)
			from++ // skip what fails, read on
			continue
		}
		if len(batch) == 0 {
			r.ScanMissing++
			r.example("scan: offset %d absent, no error", from)
			from++ // look past the hole, read on
			continue
		}
		for _, e := range batch {
			if raw, err := marshalOpts.Marshal(e); err != nil || e.Offset != from || !bytes.Equal(raw, want[from-1]) {
				r.ScanWrong++
				r.wrongExample("scan: offset %d read back as %d, different", from, e.Offset)
			} else {
				r.ScanIdentical++
			}
			from = e.Offset + 1
		}
	}
	// Per entity, through the index.
	byEntity := map[string][]*streamdv1.Event{}
	var entities []string
	for _, raw := range want {
		e := new(streamdv1.Event)
		if err := proto.Unmarshal(raw, e); err != nil {
			r.OpenErr = "test setup: " + err.Error()
			return r
		}
		ek := EntityKey(e.EntityType, e.EntityId)
		if byEntity[ek] == nil {
			entities = append(entities, ek)
		}
		byEntity[ek] = append(byEntity[ek], e)
	}
	for _, ek := range entities {
		ws := byEntity[ek]
		got, err := j.ReadEntity(ws[0].EntityType, ws[0].EntityId, 1, len(ws)+1, nil)
		if err != nil {
			r.EntityErrs++
			r.err(err)
			continue
		}
		if len(got) < len(ws) {
			r.EntityMissing += len(ws) - len(got)
			r.example("entity %q: %d of %d events, no error", ek, len(got), len(ws))
		}
		for _, e := range got {
			if e.SeqNr == 0 || e.SeqNr > uint64(len(ws)) || EntityKey(e.EntityType, e.EntityId) != ek || !proto.Equal(e, ws[e.SeqNr-1]) {
				r.EntityWrong++
				r.wrongExample("ReadEntity(%q) returned %s seqNr %d at offset %d", ek, e.EntityId, e.SeqNr, e.Offset)
			} else {
				r.EntityIdentical++
			}
		}
	}
	return r
}

// writeWant stores the encodings of the events at offsets 1, 2, 3…
func writeWant(path string, raws [][]byte) error {
	var b []byte
	for _, raw := range raws {
		b = binary.AppendUvarint(b, uint64(len(raw)))
		b = append(b, raw...)
	}
	return os.WriteFile(path, b, 0o600)
}

func readWant(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raws [][]byte
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < n {
			return nil, fmt.Errorf("bad want file %s", path)
		}
		raws = append(raws, b[k:k+int(n)])
		b = b[k+int(n):]
	}
	return raws, nil
}

// writeCorpus writes events of known contents over several tables, closes
// the journal and returns their encodings as read back.
func writeCorpus(t *testing.T, dir string) [][]byte {
	t.Helper()
	j, err := Open(dir, corruptOptions)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	// Few, large events: enough bytes for two tables, few reads per case.
	const events, perAppend, entities = 1000, 5, 40
	for i := 0; i < events; i += perAppend {
		batch := make([]*streamdv1.Event, perAppend)
		for k := range batch {
			p := make([]byte, 6000+rng.IntN(6000))
			for x := range p {
				p[x] = byte(rng.Uint32())
			}
			batch[k] = &streamdv1.Event{EntityType: "acct", EntityId: fmt.Sprintf("a%d", (i+k)%entities), EventType: "Deposited",
				Payload: p, Tags: []string{fmt.Sprint("t", k%3)}, Metadata: map[string]string{"n": fmt.Sprint(i + k)}}
		}
		if _, err := j.Append(context.Background(), batch...); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, dir, corruptOptions)
	recs, err := j.ReadRecords(1, events+1, nil)
	if err != nil || len(recs) != events {
		t.Fatalf("read back %d of %d events: %v", len(recs), events, err)
	}
	raws := make([][]byte, len(recs))
	for i, r := range recs {
		raws[i] = bytes.Clone(r.Raw)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	return raws
}

// A corruption damages one file of a copy of the journal directory.
type corruption struct {
	name string
	file string // relative to the directory
	do   func(path string) error
}

func flipAt(frac float64, last bool) func(string) error {
	return func(path string) error {
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			return err
		}
		i := int(frac * float64(len(b)))
		if last {
			i = len(b) - 1
		}
		b[min(i, len(b)-1)] ^= 0x5a
		return os.WriteFile(path, b, 0o600)
	}
}

func truncateTo(frac float64, minusOne bool) func(string) error {
	return func(path string) error {
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		size := int64(frac * float64(fi.Size()))
		if minusOne {
			size = fi.Size() - 1
		}
		return os.Truncate(path, max(size, 0))
	}
}

func remove(path string) error { return os.Remove(path) }

// corruptions lists deterministic damage to every file, then random flips.
func corruptions(t *testing.T, dir string) []corruption {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var cs []corruption
	var files []string
	var sizes []int64
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 || e.Name() == "LOCK" {
			continue
		}
		name := e.Name()
		files, sizes = append(files, name), append(sizes, fi.Size())
		add := func(what string, do func(string) error) {
			cs = append(cs, corruption{name: name + ": " + what, file: name, do: do})
		}
		// Tables and the MANIFEST get every kind of damage; the value log
		// (events stay in the tables), DISCARD and KEYREGISTRY fewer.
		thorough := strings.HasSuffix(name, ".sst") || name == "MANIFEST"
		add("first byte flipped", flipAt(0, false))
		if thorough {
			add("byte at 10% flipped", flipAt(0.1, false))
		}
		add("byte at 50% flipped", flipAt(0.5, false))
		if thorough {
			add("byte at 90% flipped", flipAt(0.9, false))
		}
		add("last byte flipped", flipAt(0, true))
		if thorough {
			add("truncated by one byte", truncateTo(0, true))
		}
		add("truncated to half", truncateTo(0.5, false))
		if thorough {
			add("truncated to 0 bytes", truncateTo(0, false))
		}
		add("deleted", remove)
	}
	n := *corruptRandom
	if n == 0 {
		n = 12
		if os.Getenv("STREAMD_FAULT_LONG") == "1" {
			n = 300
		}
	}
	var total int64
	for _, s := range sizes {
		total += s
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range n {
		at := rng.Int64N(total)
		i := 0
		for ; at >= sizes[i]; i++ {
			at -= sizes[i]
		}
		bit := byte(1) << rng.IntN(8)
		cs = append(cs, corruption{name: fmt.Sprintf("%s: bit %d of byte %d flipped", files[i], bit, at), file: files[i], do: func(path string) error {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			b := []byte{0}
			if _, err := f.ReadAt(b, at); err != nil {
				return err
			}
			b[0] ^= bit
			_, err = f.WriteAt(b, at)
			return err
		}})
	}
	return cs
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		src, err := os.Open(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(to, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(dst, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
		if err := dst.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// outcome classifies a case: how the damage showed, and whether that is
// acceptable (an error, a refusal to open, or no effect) or not (an event
// read back different, or absent without an error).
func outcome(r corruptResult) (kind string, silent bool) {
	wrong := r.Wrong + r.ScanWrong + r.EntityWrong
	missing := r.Missing + r.ScanMissing + r.EntityMissing
	errs := r.Errs + r.ScanErrs + r.EntityErrs
	switch {
	case r.OpenErr != "":
		return "refused at open", false
	case wrong > 0:
		return "WRONG EVENTS", true
	case missing > 0:
		return "MISSING WITHOUT ERROR", true
	case errs > 0:
		return "read errors", false
	default:
		return "no effect", false
	}
}

// Damaged journal files — bytes flipped, files truncated or deleted, in
// every file Badger keeps (tables, value log, MANIFEST, key registry) — are
// refused at open or fail reads with an error; an event is never read back
// different from what was written, and never silently absent.
func TestCorruption(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a child process per damaged journal")
	}
	pristine := t.TempDir()
	want := writeCorpus(t, pristine)
	wantPath := filepath.Join(t.TempDir(), "want")
	if err := writeWant(wantPath, want); err != nil {
		t.Fatal(err)
	}
	cs := corruptions(t, pristine)
	// Two cases at a time: each is a process reading its own copy.
	results := make([]caseResult, len(cs))
	next := make(chan int)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for i := range next {
				results[i] = runCorruption(t, pristine, wantPath, cs[i])
			}
		})
	}
	for i := range cs {
		next <- i
	}
	close(next)
	wg.Wait()
	if t.Failed() {
		return
	}
	tally := map[string]int{}
	var failures []string
	errText := map[string]int{}
	for i, c := range cs {
		res := results[i]
		if res.crash != "" {
			// A crash on damaged data is not a wrong event, but it is no
			// clear report either.
			tally["CRASH"]++
			t.Logf("%-52s %5dms CRASH: %s", c.name, res.took.Milliseconds(), res.crash)
			failures = append(failures, c.name+": the reader crashed: "+res.crash)
			continue
		}
		r := res.r
		kind, silent := outcome(r)
		if r.OpenErr == "" && r.LastOffset != uint64(len(want)) {
			silent = true
			kind += fmt.Sprintf(", last offset %d of %d", r.LastOffset, len(want))
		}
		if res.deleted > 0 {
			kind += fmt.Sprintf(", %d fewer tables after open", res.deleted)
		}
		tally[kind]++
		detail := r.FirstErr
		if r.OpenErr != "" {
			detail = r.OpenErr
		}
		if detail != "" {
			errText[classifyErr(detail)]++
		}
		t.Logf("%-52s %5dms %-22s offsets %d ok/%d err/%d missing/%d wrong, scan %d ok/%d err/%d missing/%d wrong, entities %d ok/%d err/%d missing/%d wrong %s",
			c.name, res.took.Milliseconds(), kind, r.Identical, r.Errs, r.Missing, r.Wrong, r.ScanIdentical, r.ScanErrs, r.ScanMissing, r.ScanWrong,
			r.EntityIdentical, r.EntityErrs, r.EntityMissing, r.EntityWrong, truncate(detail, 200))
		if silent {
			failures = append(failures, fmt.Sprintf("%s: %s %q", c.name, kind, append(r.WrongExamples, r.Examples...)))
		}
	}
	kinds := make([]string, 0, len(tally))
	for k := range tally {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	var summary []string
	for _, k := range kinds {
		summary = append(summary, fmt.Sprintf("%s %d", k, tally[k]))
	}
	t.Logf("%d damaged journals of %d events: %s; errors named: %v", len(cs), len(want), strings.Join(summary, ", "), errText)
	for _, f := range failures {
		t.Error(f)
	}
}

type caseResult struct {
	r       corruptResult
	crash   string // the child died: what it said
	took    time.Duration
	deleted int // how many fewer tables the directory had after the child
}

// runCorruption damages a copy of pristine and checks it in a child process.
func runCorruption(t *testing.T, pristine, wantPath string, c corruption) caseResult {
	dir := t.TempDir()
	copyDir(t, pristine, dir)
	if err := c.do(filepath.Join(dir, c.file)); err != nil {
		t.Errorf("%s: %v", c.name, err)
		return caseResult{}
	}
	tables := func() int {
		m, _ := filepath.Glob(filepath.Join(dir, "*.sst"))
		return len(m)
	}
	before := tables()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), corruptDirEnv+"="+dir, corruptWantEnv+"="+wantPath)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	runErr := cmd.Run()
	res := caseResult{took: time.Since(began), deleted: before - tables()}
	for l := range strings.Lines(stdout.String()) {
		if line, ok := strings.CutPrefix(l, corruptPrefix); ok && runErr == nil && json.Unmarshal([]byte(line), &res.r) == nil {
			return res
		}
	}
	// The first panic or fatal line and the first Badger frame say where.
	var said []string
	for l := range strings.Lines(stderr.String()) {
		l = strings.TrimSpace(l)
		if len(said) == 0 && (strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error") || strings.HasPrefix(l, "unexpected fault")) ||
			len(said) == 1 && strings.Contains(l, "dgraph-io/badger") {
			said = append(said, l)
		}
	}
	res.crash = fmt.Sprintf("%v: %s", runErr, strings.Join(said, " at "))
	return res
}

// classifyErr says whether an error names the damage.
func classifyErr(s string) string {
	l := strings.ToLower(s)
	for _, w := range []string{"checksum", "corrupt", "magic", "does not exist", "cannot parse", "mismatch", "eof"} {
		if strings.Contains(l, w) {
			return w
		}
	}
	return "other"
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/internal/eventjson"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func tailCommand() *cli.Command {
	return &cli.Command{
		Name:      "tail",
		Usage:     "print the events of a stream as they arrive",
		ArgsUsage: " ",
		Description: "Without --follow, tail stops at the journal's last offset as of when it\n" +
			"connected, or after --count events. --from OFFSET starts at that offset\n" +
			"(inclusive); --last N prints the last N events of the stream (after\n" +
			"--filter). With --follow, tail survives a restart of the server: it\n" +
			"reconnects and resumes after the last offset it printed. --filter takes\n" +
			"criteria in the filters syntax, for example 'include tag=sports',\n" +
			"'exclude entity~^test-', 'include topic=car/+/speed ttl=30m'.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "stream", Usage: "named stream (\"\" = the server's default stream)"},
			&cli.StringFlag{Name: "from", Value: "earliest", Usage: "where to start: earliest, latest, an OFFSET, or an RFC 3339 time"},
			&cli.IntFlag{Name: "last", Usage: "start with the last N events (instead of --from)"},
			&cli.StringSliceFlag{Name: "filter", Usage: "filter criterion (repeatable)"},
			&cli.IntFlag{Name: "count", Usage: "stop after this many events (0 = no limit)"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep waiting for new events (until interrupted or --count), reconnecting after a server restart"},
			&cli.StringFlag{Name: "consumer", Value: "streamctl-tail", Usage: "consumer name the server sees"},
		},
		Action: withClient(tail),
	}
}

// Reconnection delays of tail --follow.
const (
	reconnectFirst = 100 * time.Millisecond
	reconnectMax   = 5 * time.Second
)

func tail(c *cli.Context, cl *client) error {
	if err := noArgs(c); err != nil {
		return err
	}
	if c.Int("count") < 0 {
		return usagef("--count %d is negative", c.Int("count"))
	}
	last := c.Int("last")
	switch {
	case last < 0:
		return usagef("--last %d is negative", last)
	case c.IsSet("last") && c.IsSet("from"):
		return usagef("--last and --from are exclusive")
	case c.IsSet("last") && last == 0:
		return usagef("--last 0: want a positive number of events")
	}
	now := time.Now()
	init := &streamdv1.Init{Stream: c.String("stream"), ConsumerName: c.String("consumer")}
	for _, text := range c.StringSlice("filter") {
		crit, err := filters.Parse(text, now)
		if err != nil {
			return usagef("--filter: %v", err)
		}
		init.Filter = append(init.Filter, crit)
	}
	if last == 0 {
		if err := startFrom(c, cl, init); err != nil {
			return err
		}
	}

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := newPrinter(c)
	t := &tailer{cl: cl, p: p, t: p.table("OFFSET", "ENTITY", "SEQNR", "EVENT", "TAGS", "PAYLOAD"), count: c.Int("count")}
	follow := c.Bool("follow")
	var end uint64 // 0: the last offset the first stream's Hello reports
	if last > 0 {
		info, err := cl.journalInfo(c)
		if err != nil {
			return err
		}
		done, err := t.printLast(ctx, init, info, last)
		if err != nil || done || !follow {
			return ignoreEOF(err)
		}
		init.Position = &streamdv1.Position{JournalId: info.JournalId, Offset: info.LastOffset}
		end = info.LastOffset
	}
	if !follow {
		_, _, err := t.stream(ctx, init, false, end, t.print)
		return ignoreEOF(err)
	}
	// Follow: after a lost stream, resume after the last offset reached.
	var (
		resume    *streamdv1.Position
		delay     time.Duration
		connected bool
	)
	for {
		hello, reached, err := t.stream(ctx, init, true, 0, t.print)
		if hello != nil {
			resume = &streamdv1.Position{JournalId: hello.JournalId, Offset: reached}
			init.Position, init.StartPolicy, init.StartTimeUnixNano = resume, streamdv1.StartPolicy_START_POLICY_UNSPECIFIED, 0
			connected, delay = true, 0
		}
		if err == nil || errors.Is(err, io.EOF) || resume == nil || !lostStream(err) {
			return ignoreEOF(err)
		}
		if connected {
			fmt.Fprintf(p.errw, "streamctl: %v; reconnecting, to resume after offset %d\n", err, resume.Offset)
			connected = false
		}
		delay = min(max(2*delay, reconnectFirst), reconnectMax)
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return nil
		}
	}
}

// startFrom sets where init starts from --from.
func startFrom(c *cli.Context, cl *client, init *streamdv1.Init) error {
	switch from := c.String("from"); from {
	case "earliest":
		init.StartPolicy = streamdv1.StartPolicy_START_POLICY_EARLIEST
	case "latest":
		init.StartPolicy = streamdv1.StartPolicy_START_POLICY_LATEST
	default:
		off, err := strconv.ParseUint(from, 10, 64)
		if err != nil {
			t, err := time.Parse(time.RFC3339Nano, from)
			if err != nil {
				return usagef("--from %q: want earliest, latest, an offset or an RFC 3339 time", from)
			}
			init.StartPolicy = streamdv1.StartPolicy_START_POLICY_AT_TIME
			init.StartTimeUnixNano = t.UnixNano()
			return nil
		}
		if off == 0 {
			return usagef("--from 0: offsets start at 1")
		}
		info, err := cl.journalInfo(c)
		if err != nil {
			return err
		}
		// --from last+1 waits for the next event; beyond it no offset exists yet.
		if off > info.LastOffset+1 {
			return usagef("--from %d: journal %x ends at offset %d (tail --from %d waits for the next event, --from latest too)",
				off, info.JournalId, info.LastOffset, info.LastOffset+1)
		}
		init.Position = &streamdv1.Position{JournalId: info.JournalId, Offset: off - 1}
	}
	return nil
}

// lostStream: the server went away (a restart, a network failure), so a
// following tail reconnects.
func lostStream(err error) bool {
	var lost *lostError
	return errors.Is(err, errClosed) || errors.As(err, &lost)
}

// errClosed: the server ended a stream without a status.
var errClosed = errors.New("closed the stream")

// lostError is a stream that ended with Unavailable.
type lostError struct{ err error }

func (e *lostError) Error() string { return e.err.Error() }
func (e *lostError) Unwrap() error { return e.err }

// tailer prints the events of tail's streams.
type tailer struct {
	cl    *client
	p     *printer
	t     *table
	count int // 0 = no limit
	n     int // events printed
}

// print prints e; it returns true once --count events are printed.
func (t *tailer) print(e *streamdv1.Event) (bool, error) {
	printEvent(t.t, e)
	t.n++
	return t.count > 0 && t.n >= t.count, nil
}

// stream runs one Subscribe stream from init, calling onEvent for each
// event until it returns true. Without follow it ends once the stream has
// reached end (0: the last offset its Hello reports). It returns the Hello
// (nil if none came) and the last offset the stream reached, delivered or
// covered by Progress. An interrupted stream (ctx done) ends with io.EOF;
// errors are the server's, with its status.
func (t *tailer) stream(ctx context.Context, init *streamdv1.Init, follow bool, end uint64,
	onEvent func(*streamdv1.Event) (bool, error)) (*streamdv1.Hello, uint64, error) {
	cl := t.cl
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := cl.api.Subscribe(ctx)
	if err != nil {
		return nil, 0, cl.streamError(ctx, err)
	}
	if err := st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: init}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, cl.streamError(ctx, err)
	}
	first, err := st.Recv()
	if err != nil {
		return nil, 0, cl.streamError(ctx, err)
	}
	hello := first.GetHello()
	if hello == nil {
		return nil, 0, fmt.Errorf("server %s did not answer Init with Hello", cl.addr)
	}
	reached := hello.StartOffset - 1
	if hello.StartOffset == 0 {
		reached = 0
	}
	if end == 0 {
		end = hello.LastOffset
	}
	if !follow && reached >= end {
		return hello, reached, nil
	}
	for {
		r, err := st.Recv()
		if err != nil {
			return hello, reached, cl.streamError(ctx, err)
		}
		switch m := r.Response.(type) {
		case *streamdv1.SubscribeResponse_Events:
			replay := m.Events.Replay
			for _, e := range m.Events.Events {
				if !replay {
					reached = e.Offset
				}
				if stop, err := onEvent(e); err != nil || stop {
					if ferr := t.t.flush(); err == nil {
						err = ferr
					}
					return hello, reached, cmp.Or(err, io.EOF)
				}
			}
			if err := t.t.flush(); err != nil {
				return hello, reached, err
			}
		case *streamdv1.SubscribeResponse_Progress:
			reached = max(reached, m.Progress.Offset)
		}
		if !follow && reached >= end {
			return hello, reached, nil
		}
	}
}

// streamError says what ended a stream: io.EOF when ctx is done (an
// interrupt is a normal end), errClosed when the server closed it without
// a status, else the server's error.
func (cl *client) streamError(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil && status.Code(err) == codes.Canceled:
		return io.EOF
	case errors.Is(err, io.EOF):
		return fmt.Errorf("server %s %w", cl.addr, errClosed)
	case status.Code(err) == codes.Unavailable:
		return &lostError{cl.serverError(err)}
	}
	return cl.serverError(err)
}

// printLast prints the last n events of init's stream up to info's last
// offset. Filters and named streams skip offsets, so it reads back over a
// window of offsets that grows until it holds n events or reaches the
// first. It returns true when --count is reached.
func (t *tailer) printLast(ctx context.Context, init *streamdv1.Init, info *streamdv1.JournalInfoResponse, n int) (bool, error) {
	end, first := info.LastOffset, max(info.FirstOffset, 1)
	if end < first {
		return false, nil
	}
	ring := make([]*streamdv1.Event, n)
	for window := uint64(n); ; window *= 4 {
		from := first
		if end-first+1 > window {
			from = end - window + 1
		}
		seen := 0
		w := proto.CloneOf(init)
		w.Position = &streamdv1.Position{JournalId: info.JournalId, Offset: from - 1}
		_, _, err := t.stream(ctx, w, false, end, func(e *streamdv1.Event) (bool, error) {
			if e.Offset <= end {
				ring[seen%n] = e
				seen++
			}
			return e.Offset >= end, nil
		})
		if err != nil && !errors.Is(err, io.EOF) {
			return false, err
		}
		if ctx.Err() != nil {
			return true, nil
		}
		if seen < n && from > first {
			continue
		}
		for i := max(0, seen-n); i < seen; i++ {
			if stop, _ := t.print(ring[i%n]); stop {
				return true, t.t.flush()
			}
		}
		return false, t.t.flush()
	}
}

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func printEvent(t *table, e *streamdv1.Event) {
	text, isText := eventjson.PayloadText(e.Payload)
	tags := strings.Join(e.Tags, ",")
	if tags == "" {
		tags = "-"
	}
	if !isText {
		text = "base64:" + text
	}
	t.row(eventjson.Of(e), e.Offset, e.EntityType+"/"+e.EntityId, e.SeqNr, e.EventType, tags, text)
}

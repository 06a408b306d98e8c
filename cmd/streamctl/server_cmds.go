package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/streamd/streamd/filters"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// withClient runs fn with a connection made from the global flags.
func withClient(fn func(c *cli.Context, cl *client) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		cl, err := dial(c)
		if err != nil {
			return err
		}
		defer cl.Close()
		return fn(c, cl)
	}
}

func (cl *client) journalInfo(c *cli.Context) (*streamdv1.JournalInfoResponse, error) {
	ctx, cancel := unary(c)
	defer cancel()
	info, err := cl.api.JournalInfo(ctx, &streamdv1.JournalInfoRequest{})
	return info, cl.serverError(err)
}

func journalCommand() *cli.Command {
	return group("journal", "inspect the server's journal",
		&cli.Command{
			Name:  "info",
			Usage: "show the journal id, first and last offset, size, retention floor and streams",
			Action: withClient(func(c *cli.Context, cl *client) error {
				if err := noArgs(c); err != nil {
					return err
				}
				info, err := cl.journalInfo(c)
				if err != nil {
					return err
				}
				id := hex.EncodeToString(info.JournalId)
				streams := info.Streams
				if streams == nil {
					streams = []string{}
				}
				obj := map[string]any{
					"journal_id": id, "first_offset": info.FirstOffset, "last_offset": info.LastOffset,
					"events": info.Events, "bytes": info.Bytes, "retention_floor": info.RetentionFloor, "streams": streams,
				}
				text := fmt.Sprintf("journal id:       %s\nfirst offset:     %d\nlast offset:      %d\nevents:           %d\nbytes:            %d\nretention floor:  %d\nstreams:          %s",
					id, info.FirstOffset, info.LastOffset, info.Events, info.Bytes, info.RetentionFloor, strings.Join(streams, ", "))
				return newPrinter(c).one(obj, text)
			}),
		})
}

func streamsCommand() *cli.Command {
	return group("streams", "list the named streams the server offers",
		&cli.Command{
			Name:  "list",
			Usage: "list the named streams (subscribe with tail --stream NAME)",
			Action: withClient(func(c *cli.Context, cl *client) error {
				if err := noArgs(c); err != nil {
					return err
				}
				info, err := cl.journalInfo(c)
				if err != nil {
					return err
				}
				t := newPrinter(c).table("STREAM")
				for _, s := range info.Streams {
					t.row(map[string]string{"stream": s}, s)
				}
				return t.flush()
			}),
		})
}

// eventFlags describe one event to write (publish, primary write).
func eventFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "entity", Usage: "entity id (required)"},
		&cli.StringFlag{Name: "type", Usage: "entity type (required)"},
		&cli.StringFlag{Name: "event-type", Usage: "event type (required)"},
		&cli.StringSliceFlag{Name: "tag", Usage: "tag of the event (repeatable)"},
		&cli.StringFlag{Name: "topic", Usage: "slash-separated topic, for example car/17/speed"},
		&cli.StringFlag{Name: "data", Usage: "payload text"},
		&cli.StringFlag{Name: "file", Usage: "read the payload from this file"},
	}
}

// eventFromFlags is the event eventFlags describe; the payload is --data,
// --file or standard input.
func eventFromFlags(c *cli.Context, cmd string) (*streamdv1.Event, error) {
	if err := noArgs(c); err != nil {
		return nil, err
	}
	for _, f := range []string{"entity", "type", "event-type"} {
		if c.String(f) == "" {
			return nil, usagef("%s needs --%s", cmd, f)
		}
	}
	if c.IsSet("data") && c.IsSet("file") {
		return nil, usagef("%s takes --data or --file, not both", cmd)
	}
	var payload []byte
	var err error
	switch {
	case c.IsSet("data"):
		payload = []byte(c.String("data"))
	case c.IsSet("file"):
		payload, err = os.ReadFile(c.String("file"))
	case isTerminal(c.App.Reader):
		return nil, usagef("%s reads the payload from standard input, which is a terminal: give --data TEXT or --file PATH, or pipe the payload in", cmd)
	default:
		payload, err = io.ReadAll(c.App.Reader)
	}
	if err != nil {
		return nil, fmt.Errorf("read payload: %w", err)
	}
	return &streamdv1.Event{
		EntityType: c.String("type"), EntityId: c.String("entity"), EventType: c.String("event-type"),
		Tags: c.StringSlice("tag"), Topic: c.String("topic"), Payload: payload,
	}, nil
}

// isTerminal: r is a terminal, where reading a payload would wait for a
// person to type it.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func publishCommand() *cli.Command {
	return &cli.Command{
		Name:      "publish",
		Usage:     "publish one event and print where it landed: offset and seqNr, and for a pinned or request-region entity type the region that took it and its version",
		ArgsUsage: " ",
		Description: "The payload is --data, or the contents of --file, or else standard input\n" +
			"(piped in: on a terminal, publish refuses to wait for it).\n" +
			"The server writes the event as its entity type's mode says (streamd --config):\n" +
			"local types are appended to its journal, pinned ones forwarded to their primary,\n" +
			"request-region ones taken over first. An event of a replicated type carries CRDT\n" +
			"operations instead of an event type and payload: --set, --add-counter, --add and\n" +
			"--remove, applied in that order; read the merged state with 'streamctl state'.",
		Flags: append(eventFlags(),
			&cli.StringSliceFlag{Name: "set", Usage: "replicated types: set the register `FIELD=VALUE` (last writer wins; repeatable)"},
			&cli.StringSliceFlag{Name: "add-counter", Usage: "replicated types: add N to the counter `FIELD=N` (N may be negative; repeatable)"},
			&cli.StringSliceFlag{Name: "add", Usage: "replicated types: add ELEMENT to the set `FIELD=ELEMENT` (repeatable)"},
			&cli.StringSliceFlag{Name: "remove", Usage: "replicated types: remove ELEMENT from the set `FIELD=ELEMENT`, as far as the server has seen it added (repeatable)"},
		),
		Action: withClient(func(c *cli.Context, cl *client) error {
			ops, err := crdtOpsFromFlags(c)
			if err != nil {
				return err
			}
			var ev *streamdv1.Event
			if len(ops) > 0 {
				if ev, err = opsEventFromFlags(c, ops); err != nil {
					return err
				}
			} else if ev, err = eventFromFlags(c, "publish"); err != nil {
				return err
			}
			ctx, cancel := unary(c)
			defer cancel()
			resp, err := cl.api.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{ev}})
			if err != nil {
				if tooLarge(err) {
					return cl.tooLargeError(c, ev, err)
				}
				return cl.serverError(err)
			}
			if len(resp.Appended) != 1 {
				return fmt.Errorf("server %s answered %d appended events for 1", cl.addr, len(resp.Appended))
			}
			a := resp.Appended[0]
			if a.Region == "" {
				t := newPrinter(c).table("OFFSET", "SEQNR")
				t.row(map[string]uint64{"offset": a.Offset, "seq_nr": a.SeqNr}, a.Offset, a.SeqNr)
				return t.flush()
			}
			t := newPrinter(c).table("REGION", "VERSION", "OFFSET", "SEQNR")
			t.row(map[string]any{"region": a.Region, "version": a.Version, "offset": a.Offset, "seq_nr": a.SeqNr}, a.Region, a.Version, a.Offset, a.SeqNr)
			return t.flush()
		}),
	}
}

// tooLarge: gRPC refused a message over the server's limit before streamd
// saw it.
func tooLarge(err error) bool {
	st, _ := status.FromError(err)
	return st.Code() == codes.ResourceExhausted && strings.HasPrefix(st.Message(), "grpc: received message larger than max")
}

// tooLargeError says why gRPC refused ev in the words streamd uses for a
// payload over its limit, with the limits PublishStream's header tells.
func (cl *client) tooLargeError(c *cli.Context, ev *streamdv1.Event, err error) error {
	ctx, cancel := unary(c)
	defer cancel()
	limit := func(h metadata.MD, key string) int {
		v := h.Get(key)
		if len(v) != 1 {
			return 0
		}
		n, _ := strconv.Atoi(v[0])
		return n
	}
	var payload, message int
	if st, serr := cl.api.PublishStream(ctx); serr == nil {
		if h, herr := st.Header(); herr == nil {
			payload, message = limit(h, "streamd-max-payload-bytes"), limit(h, "streamd-max-message-bytes")
		}
	}
	what := fmt.Sprintf("server %s: event 0 (%s/%s)", cl.addr, ev.EntityType, ev.EntityId)
	switch {
	case payload > 0 && len(ev.Payload) > payload:
		return fmt.Errorf("%s: payload of %d bytes exceeds the limit of %d", what, len(ev.Payload), payload)
	case message > 0:
		return fmt.Errorf("%s: %d bytes encoded exceed the server's message limit of %d", what, proto.Size(ev), message)
	}
	return cl.serverError(err)
}

func consumersCommand() *cli.Command {
	return group("consumers", "the consumers the server runs (its replications, a service's consumers) and those reading from it",
		&cli.Command{
			Name:  "list",
			Usage: "show the consumers the server runs (connected, offset, lag, last error) and those reading from it (lag in events and time)",
			Description: "The first table: each consumer the server runs, per producer it reads from,\n" +
				"over its SLICES (a replicate: entry with group: copies the slices its pod owns\n" +
				"now, - while none; with -o json its rows have \"group\").\n" +
				"The second: each consumer reading from the server, per name and slice range, as\n" +
				"the server last heard of it (kept across restarts of either side): its stored\n" +
				"offset as it last reported it, the server's last offset minus it (LAG) and how\n" +
				"long ago the first event after it was written (LAG-TIME). With -o json, its rows\n" +
				"have \"reader\":true.",
			ArgsUsage: " ",
			Flags:     []cli.Flag{&cli.StringFlag{Name: "consumer", Usage: "only this consumer"}},
			Action: withClient(func(c *cli.Context, cl *client) error {
				if err := noArgs(c); err != nil {
					return err
				}
				ctx, cancel := unary(c)
				defer cancel()
				resp, err := streamdv1.NewAdminServiceClient(cl.conn).ListConsumers(ctx, &streamdv1.ListConsumersRequest{Consumer: c.String("consumer")})
				if err != nil {
					return cl.serverError(err)
				}
				p := newPrinter(c)
				t := p.table("CONSUMER", "SLICES", "STREAM", "RUNNING", "PRODUCER", "CONNECTED", "OFFSET", "LAG", "ERROR")
				for _, cs := range resp.GetConsumers() {
					stopped, stream, slices := cs.GetError(), cs.GetStream(), "-"
					if stream == "" {
						stream = "(default)"
					}
					if cs.GetSlices() != nil {
						slices = fmt.Sprintf("%d-%d", cs.GetSlices().GetFirst(), cs.GetSlices().GetLast())
					}
					producers := cs.GetProducers()
					if len(producers) == 0 { // a group member that has not run yet
						producers = []*streamdv1.ProducerStatus{{Addr: "-"}}
					}
					for _, p := range producers {
						// A connected stream's last error is history.
						errText := stopped
						if errText == "" && !p.GetConnected() {
							errText = p.GetLastError()
						}
						obj := map[string]any{
							"consumer": cs.GetName(), "slices": slices, "stream": cs.GetStream(), "running": cs.GetRunning(), "producer": p.GetAddr(),
							"journal_id": hex.EncodeToString(p.GetJournalId()), "connected": p.GetConnected(), "offset": p.GetOffset(), "lag": p.GetLag(), "error": errText,
						}
						if cs.GetGroup() != "" {
							obj["group"] = cs.GetGroup()
						}
						if errText == "" {
							errText = "-"
						}
						t.row(obj, cs.GetName(), slices, stream, cs.GetRunning(), p.GetAddr(), p.GetConnected(), p.GetOffset(), p.GetLag(), errText)
					}
				}
				if err := t.flush(); err != nil || len(resp.GetReaders()) == 0 {
					return err
				}
				if !p.json {
					fmt.Fprintln(p.w)
				}
				return printReaders(p, resp.GetReaders())
			}),
		})
}

// printReaders prints the consumers reading from a server.
func printReaders(p *printer, readers []*streamdv1.ReaderStatus) error {
	t := p.table("READER", "SLICES", "STREAM", "CONNECTED", "LAST-SEEN", "ADDR", "DELIVERED", "STORED", "LAG", "LAG-TIME", "FILTER")
	for _, r := range readers {
		slices := fmt.Sprintf("%d-%d", r.GetSlices().GetFirst(), r.GetSlices().GetLast())
		stream := r.GetStream()
		if stream == "" {
			stream = "(default)"
		}
		seen := time.Unix(0, r.GetLastSeenUnixNano()).UTC()
		lagTime := time.Duration(r.GetLagNanos()).Round(time.Millisecond)
		var crits []string
		for _, crit := range r.GetFilter() {
			crits = append(crits, filters.Format(crit))
		}
		obj := map[string]any{
			"reader": true, "consumer": r.GetConsumer(), "slices": slices, "stream": r.GetStream(), "connected": r.GetConnected(),
			"last_seen": seen.Format(time.RFC3339Nano), "addr": r.GetAddr(), "delivered_offset": r.GetDeliveredOffset(),
			"stored_offset": r.GetStoredOffset(), "lag": r.GetLag(), "lag_seconds": lagTime.Seconds(), "filter": crits,
		}
		if crits == nil {
			obj["filter"] = []string{}
		}
		filter := strings.Join(crits, "; ")
		if filter == "" {
			filter = "-"
		}
		t.row(obj, r.GetConsumer(), slices, stream, r.GetConnected(), seen.Format(time.RFC3339), r.GetAddr(),
			r.GetDeliveredOffset(), r.GetStoredOffset(), r.GetLag(), lagTime, filter)
	}
	return t.flush()
}

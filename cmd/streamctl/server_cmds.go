package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

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

func publishCommand() *cli.Command {
	return &cli.Command{
		Name:      "publish",
		Usage:     "append one event to the journal and print its offset and seqNr",
		ArgsUsage: " ",
		Description: "The payload is --data, or the contents of --file, or else standard input.\n" +
			"Events go to the server's journal, which every named stream reads.",
		Flags: eventFlags(),
		Action: withClient(func(c *cli.Context, cl *client) error {
			ev, err := eventFromFlags(c, "publish")
			if err != nil {
				return err
			}
			ctx, cancel := unary(c)
			defer cancel()
			resp, err := cl.api.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{ev}})
			if err != nil {
				return cl.serverError(err)
			}
			if len(resp.Appended) != 1 {
				return fmt.Errorf("server %s answered %d appended events for 1", cl.addr, len(resp.Appended))
			}
			a := resp.Appended[0]
			t := newPrinter(c).table("OFFSET", "SEQNR")
			t.row(map[string]uint64{"offset": a.Offset, "seq_nr": a.SeqNr}, a.Offset, a.SeqNr)
			return t.flush()
		}),
	}
}

func consumersCommand() *cli.Command {
	return group("consumers", "the consumers the server runs (its replications, a service's consumers) and those reading from it",
		&cli.Command{
			Name:  "list",
			Usage: "show the consumers the server runs (connected, offset, lag, last error) and those reading from it (lag in events and time)",
			Description: "The first table: each consumer the server runs, per producer it reads from.\n" +
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
				t := p.table("CONSUMER", "STREAM", "RUNNING", "PRODUCER", "CONNECTED", "OFFSET", "LAG", "ERROR")
				for _, cs := range resp.GetConsumers() {
					stopped, stream := cs.GetError(), cs.GetStream()
					if stream == "" {
						stream = "(default)"
					}
					for _, p := range cs.GetProducers() {
						errText := stopped
						if errText == "" {
							errText = p.GetLastError()
						}
						obj := map[string]any{
							"consumer": cs.GetName(), "stream": cs.GetStream(), "running": cs.GetRunning(), "producer": p.GetAddr(),
							"journal_id": hex.EncodeToString(p.GetJournalId()), "connected": p.GetConnected(), "offset": p.GetOffset(), "lag": p.GetLag(), "error": errText,
						}
						if errText == "" {
							errText = "-"
						}
						t.row(obj, cs.GetName(), stream, cs.GetRunning(), p.GetAddr(), p.GetConnected(), p.GetOffset(), p.GetLag(), errText)
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

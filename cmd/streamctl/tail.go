package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/filters"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func tailCommand() *cli.Command {
	return &cli.Command{
		Name:      "tail",
		Usage:     "print the events of a stream as they arrive",
		ArgsUsage: " ",
		Description: "Without --follow, tail stops at the journal's last offset as of when it\n" +
			"connected, or after --count events. --from OFFSET starts at that offset\n" +
			"(inclusive). --filter takes criteria in the filters syntax, for example\n" +
			"'include tag=sports', 'exclude entity~^test-', 'include topic=car/+/speed ttl=30m'.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "stream", Usage: "named stream (\"\" = the server's default stream)"},
			&cli.StringFlag{Name: "from", Value: "earliest", Usage: "where to start: earliest, latest, an OFFSET, or an RFC 3339 time"},
			&cli.StringSliceFlag{Name: "filter", Usage: "filter criterion (repeatable)"},
			&cli.IntFlag{Name: "count", Usage: "stop after this many events (0 = no limit)"},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep waiting for new events (until interrupted or --count)"},
			&cli.StringFlag{Name: "consumer", Value: "streamctl-tail", Usage: "consumer name the server sees"},
		},
		Action: withClient(tail),
	}
}

func tail(c *cli.Context, cl *client) error {
	if err := noArgs(c); err != nil {
		return err
	}
	if c.Int("count") < 0 {
		return usagef("--count %d is negative", c.Int("count"))
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
	switch from := c.String("from"); from {
	case "earliest":
		init.StartPolicy = streamdv1.StartPolicy_START_POLICY_EARLIEST
	case "latest":
		init.StartPolicy = streamdv1.StartPolicy_START_POLICY_LATEST
	default:
		if off, err := strconv.ParseUint(from, 10, 64); err == nil {
			if off == 0 {
				return usagef("--from 0: offsets start at 1")
			}
			info, err := cl.journalInfo(c)
			if err != nil {
				return err
			}
			init.Position = &streamdv1.Position{JournalId: info.JournalId, Offset: off - 1}
		} else if t, err := time.Parse(time.RFC3339Nano, from); err == nil {
			init.StartPolicy = streamdv1.StartPolicy_START_POLICY_AT_TIME
			init.StartTimeUnixNano = t.UnixNano()
		} else {
			return usagef("--from %q: want earliest, latest, an offset or an RFC 3339 time", from)
		}
	}

	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := cl.api.Subscribe(ctx)
	if err != nil {
		return cl.serverError(err)
	}
	if err := st.Send(&streamdv1.SubscribeRequest{Request: &streamdv1.SubscribeRequest_Init{Init: init}}); err != nil && !errors.Is(err, io.EOF) {
		return cl.serverError(err)
	}
	recv := func() (*streamdv1.SubscribeResponse, error) {
		r, err := st.Recv()
		if err != nil {
			if ctx.Err() != nil && status.Code(err) == codes.Canceled {
				return nil, io.EOF // interrupted: a normal end
			}
			if errors.Is(err, io.EOF) {
				return nil, fmt.Errorf("server %s closed the stream", cl.addr)
			}
			return nil, cl.serverError(err)
		}
		return r, nil
	}
	first, err := recv()
	if err != nil {
		return ignoreEOF(err)
	}
	hello := first.GetHello()
	if hello == nil {
		return fmt.Errorf("server %s did not answer Init with Hello", cl.addr)
	}
	follow, count := c.Bool("follow"), c.Int("count")
	end := hello.LastOffset
	if !follow && hello.StartOffset > end {
		return nil
	}
	p := newPrinter(c)
	t := p.table("OFFSET", "ENTITY", "SEQNR", "EVENT", "TAGS", "PAYLOAD")
	n := 0
	for {
		r, err := recv()
		if err != nil {
			return ignoreEOF(err)
		}
		var reached uint64
		switch m := r.Response.(type) {
		case *streamdv1.SubscribeResponse_Events:
			for _, e := range m.Events.Events {
				printEvent(t, e)
				n++
				if count > 0 && n >= count {
					return t.flush()
				}
			}
			if err := t.flush(); err != nil {
				return err
			}
			if evs := m.Events.Events; len(evs) > 0 && !m.Events.Replay {
				reached = evs[len(evs)-1].Offset
			}
		case *streamdv1.SubscribeResponse_Progress:
			reached = m.Progress.Offset
		}
		if !follow && reached >= end {
			return nil
		}
	}
}

func ignoreEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// eventJSON is an event as tail -o json prints it.
type eventJSON struct {
	Offset        uint64            `json:"offset"`
	EntityType    string            `json:"entity_type"`
	EntityID      string            `json:"entity_id"`
	SeqNr         uint64            `json:"seq_nr"`
	Slice         uint32            `json:"slice"`
	Timestamp     string            `json:"timestamp"`
	EventType     string            `json:"event_type"`
	Tags          []string          `json:"tags"`
	Topic         string            `json:"topic,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	Origin        string            `json:"origin,omitempty"`
	OriginSeqNr   uint64            `json:"origin_seq_nr,omitempty"`
	Payload       *string           `json:"payload,omitempty"`
	PayloadBase64 *string           `json:"payload_base64,omitempty"`
}

func printEvent(t *table, e *streamdv1.Event) {
	text, isText := payloadText(e.Payload)
	j := eventJSON{
		Offset: e.Offset, EntityType: e.EntityType, EntityID: e.EntityId, SeqNr: e.SeqNr, Slice: e.Slice,
		Timestamp: time.Unix(0, e.TimestampUnixNano).UTC().Format(time.RFC3339Nano),
		EventType: e.EventType, Tags: e.Tags, Topic: e.Topic, Metadata: e.Metadata,
		Origin: e.Origin, OriginSeqNr: e.OriginSeqNr,
	}
	if j.Tags == nil {
		j.Tags = []string{}
	}
	if payload := text; isText {
		j.Payload = &payload
	} else {
		j.PayloadBase64 = &payload
	}
	tags := strings.Join(e.Tags, ",")
	if tags == "" {
		tags = "-"
	}
	if !isText {
		text = "base64:" + text
	}
	t.row(j, e.Offset, e.EntityType+"/"+e.EntityId, e.SeqNr, e.EventType, tags, text)
}

// payloadText is the payload as text when it is printable UTF-8, else base64.
func payloadText(b []byte) (string, bool) {
	if !utf8.Valid(b) {
		return base64.StdEncoding.EncodeToString(b), false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && r != ' ' {
			return base64.StdEncoding.EncodeToString(b), false
		}
	}
	return string(b), true
}

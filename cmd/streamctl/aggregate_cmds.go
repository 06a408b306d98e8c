package main

import (
	"time"

	"github.com/urfave/cli/v2"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func aggregatesCommand() *cli.Command {
	return group("aggregates", "the aggregation stages the server runs (aggregate: in its config file)",
		&cli.Command{
			Name:      "list",
			Usage:     "show each stage's position, lag, last window written and counts (read, late, skipped, summaries)",
			ArgsUsage: " ",
			Flags:     []cli.Flag{&cli.StringFlag{Name: "name", Usage: "only this stage"}},
			Action: withClient(func(c *cli.Context, cl *client) error {
				if err := noArgs(c); err != nil {
					return err
				}
				ctx, cancel := unary(c)
				defer cancel()
				resp, err := streamdv1.NewAggregateServiceClient(cl.conn).ListAggregates(ctx, &streamdv1.ListAggregatesRequest{Name: c.String("name")})
				if err != nil {
					return cl.serverError(err)
				}
				t := newPrinter(c).table("AGGREGATE", "RUNNING", "NEXT", "LAG", "WATERMARK", "OPEN", "LAST WINDOW", "SUMMARIES", "EVENTS", "READ", "LATE", "SKIPPED", "ERROR")
				for _, a := range resp.GetAggregates() {
					skipped := a.GetSkippedNotJson() + a.GetSkippedMissingField() + a.GetSkippedNotNumber() + a.GetSkippedTooManyWindows()
					last, lastSummaries, lastEvents := "-", uint32(0), uint64(0)
					obj := map[string]any{
						"aggregate": a.GetName(), "output_entity_type": a.GetOutputEntityType(), "running": a.GetRunning(), "error": a.GetError(),
						"next_offset": a.GetNextOffset(), "lag": a.GetLag(), "watermark": msTime(a.GetWatermarkUnixMs()), "open_windows": a.GetOpenWindows(),
						"read": a.GetRead(), "aggregated": a.GetAggregated(), "late": a.GetLate(), "summaries": a.GetSummaries(),
						"skipped": map[string]uint64{"not_json": a.GetSkippedNotJson(), "missing_field": a.GetSkippedMissingField(),
							"not_number": a.GetSkippedNotNumber(), "too_many_windows": a.GetSkippedTooManyWindows()},
					}
					if w := a.GetLastWindow(); w != nil {
						last, lastSummaries, lastEvents = msTime(w.GetStartUnixMs())+"/"+msTime(w.GetEndUnixMs()), w.GetSummaries(), w.GetEvents()
						obj["last_window"] = map[string]any{"start": msTime(w.GetStartUnixMs()), "end": msTime(w.GetEndUnixMs()),
							"summaries": w.GetSummaries(), "events": w.GetEvents(), "written": time.Unix(0, w.GetWrittenUnixNano()).UTC().Format(time.RFC3339Nano)}
					}
					errText := a.GetError()
					if errText == "" {
						errText = "-"
					}
					t.row(obj, a.GetName(), a.GetRunning(), a.GetNextOffset(), a.GetLag(), msTime(a.GetWatermarkUnixMs()), a.GetOpenWindows(),
						last, lastSummaries, lastEvents, a.GetRead(), a.GetLate(), skipped, errText)
				}
				return t.flush()
			}),
		})
}

// msTime formats unix milliseconds in RFC 3339, UTC; 0 is "-".
func msTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

package main

import (
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func interestCommand() *cli.Command {
	return group("interest", "the entities of on-demand entity types (replication: on-demand in the server's config) its region has interest in",
		&cli.Command{
			Name: "list",
			Usage: "show each entity this region has interest in: its history and new events are replicated here from the regions listed until " +
				"the interest expires, an inactivity period after the last Publish, LoadEvent, EntityEvents or State of it here",
			ArgsUsage: " ",
			Action: withClient(func(c *cli.Context, cl *client) error {
				if err := noArgs(c); err != nil {
					return err
				}
				ctx, cancel := unary(c)
				defer cancel()
				resp, err := streamdv1.NewInterestServiceClient(cl.conn).ListInterests(ctx, &streamdv1.ListInterestsRequest{})
				if err != nil {
					return cl.serverError(err)
				}
				t := newPrinter(c).table("ENTITY", "TYPES", "REGIONS", "SINCE", "EXPIRES")
				for _, x := range resp.GetInterests() {
					since, expires := nanoTime(x.GetSinceUnixNano()), nanoTime(x.GetExpiresAtUnixNano())
					obj := map[string]any{"entity_id": x.GetEntityId(), "entity_types": x.GetEntityTypes(), "regions": x.GetRegions(), "since": since, "expires": expires}
					t.row(obj, x.GetEntityId(), orDash(strings.Join(x.GetEntityTypes(), ",")), strings.Join(x.GetRegions(), ","), since, expires)
				}
				return t.flush()
			}),
		})
}

// nanoTime formats unix nanoseconds in RFC 3339, UTC, to the second; 0 is "-".
func nanoTime(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return time.Unix(0, ns).UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/streamd/streamd/internal/failoverreport"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// primaryCommand shows and steers single-writer entity types (pinned-region
// and request-region primaries) through streamd's PrimaryService.
func primaryCommand() *cli.Command {
	typeFlag := func() cli.Flag { return &cli.StringFlag{Name: "type", Usage: "entity type (required)"} }
	return group("primary", "single-writer entity types: their primary region, the owner of an entity, failover of a region",
		&cli.Command{
			Name:      "get",
			Usage:     "show an entity type's mode and primary as the server knows them; with --entity, also the entity's owner and version",
			ArgsUsage: " ",
			Flags:     []cli.Flag{typeFlag(), &cli.StringFlag{Name: "entity", Usage: "entity id"}},
			Action: withClient(func(c *cli.Context, cl *client) error {
				if err := needType(c, "get"); err != nil {
					return err
				}
				ctx, cancel := unary(c)
				defer cancel()
				resp, err := streamdv1.NewPrimaryServiceClient(cl.conn).GetPrimary(ctx, &streamdv1.GetPrimaryRequest{EntityType: c.String("type"), EntityId: c.String("entity")})
				if err != nil {
					return cl.serverError(err)
				}
				obj := map[string]any{
					"entity_type": resp.EntityType, "mode": resp.Mode, "configured": resp.Configured,
					"primary": resp.Primary, "pinned_in": resp.PinnedIn, "pinned_at_unix_nano": resp.PinnedAtUnixNano,
				}
				text := fmt.Sprintf("entity type:  %s\nmode:         %s\nconfigured:   %s", resp.EntityType, resp.Mode, resp.Configured)
				if resp.Mode == "pinned" {
					pinned := "- (the configured primary)"
					if resp.PinnedIn != "" {
						pinned = fmt.Sprintf("%s in %s", time.Unix(0, resp.PinnedAtUnixNano).UTC().Format(time.RFC3339), resp.PinnedIn)
					}
					text += fmt.Sprintf("\nprimary:      %s\npinned:       %s", resp.Primary, pinned)
				}
				if e := c.String("entity"); e != "" {
					obj["entity_id"], obj["owner"], obj["version"] = e, resp.Owner, resp.Version
					text += fmt.Sprintf("\nentity:       %s\nowner:        %s\nversion:      %d", e, resp.Owner, resp.Version)
				}
				return newPrinter(c).one(obj, text)
			}),
		},
		&cli.Command{
			Name:  "set",
			Usage: "pin the primary region of a pinned entity type (replicates to every region; entities move on their next write there)",
			Flags: []cli.Flag{typeFlag(), &cli.StringFlag{Name: "region", Usage: "the new primary region (required)"}},
			Action: withClient(func(c *cli.Context, cl *client) error {
				if err := needType(c, "set"); err != nil {
					return err
				}
				if c.String("region") == "" {
					return usagef("primary set needs --region")
				}
				ctx, cancel := unary(c)
				defer cancel()
				_, err := streamdv1.NewPrimaryServiceClient(cl.conn).SetPrimary(ctx, &streamdv1.SetPrimaryRequest{EntityType: c.String("type"), Primary: c.String("region")})
				if err != nil {
					return cl.serverError(err)
				}
				return newPrinter(c).one(map[string]string{"entity_type": c.String("type"), "primary": c.String("region")},
					fmt.Sprintf("pinned %s to %s", c.String("type"), c.String("region")))
			}),
		},
		&cli.Command{
			Name:  "write",
			Usage: "append one event to a single-writer entity at its primary (forwarded there) or, in request-region mode, at the server's region, and print its version",
			Description: "The payload is --data, or the contents of --file, or else standard input.\n" +
				"With --expected-version the write fails (Aborted) if the entity moved past it.",
			Flags: append(eventFlags(), &cli.Uint64Flag{Name: "expected-version", Usage: "the entity's version the write expects"}),
			Action: withClient(func(c *cli.Context, cl *client) error {
				ev, err := eventFromFlags(c, "primary write")
				if err != nil {
					return err
				}
				req := &streamdv1.WriteRequest{EntityType: ev.EntityType, EntityId: ev.EntityId, Events: []*streamdv1.Event{ev}}
				if c.IsSet("expected-version") {
					v := c.Uint64("expected-version")
					req.ExpectedVersion = &v
				}
				ctx, cancel := unary(c)
				defer cancel()
				resp, err := streamdv1.NewPrimaryServiceClient(cl.conn).Write(ctx, req)
				if err != nil {
					return cl.serverError(err)
				}
				if len(resp.Versions) != 1 || len(resp.Offsets) != 1 {
					return fmt.Errorf("server %s answered %d versions for 1 event", cl.addr, len(resp.Versions))
				}
				t := newPrinter(c).table("REGION", "VERSION", "OFFSET")
				t.row(map[string]any{"region": resp.Region, "version": resp.Versions[0], "offset": resp.Offsets[0]}, resp.Region, resp.Versions[0], resp.Offsets[0])
				return t.flush()
			}),
		},
		&cli.Command{
			Name:  "takeover",
			Usage: "make the server's region the owner of an entity, asking the current owner to hand it over",
			Description: "With --force the region takes the entity without the owner's consent: the operator\n" +
				"override for an owner that is gone. If that owner is alive and writes, the history\n" +
				"forks; every region keeps the forced branch and the old owner's later writes are lost.",
			Flags: []cli.Flag{typeFlag(), &cli.StringFlag{Name: "entity", Usage: "entity id (required)"}, &cli.BoolFlag{Name: "force", Usage: "do not ask the current owner"}},
			Action: withClient(func(c *cli.Context, cl *client) error {
				if err := needType(c, "takeover"); err != nil {
					return err
				}
				if c.String("entity") == "" {
					return usagef("primary takeover needs --entity")
				}
				ctx, cancel := unary(c)
				defer cancel()
				resp, err := streamdv1.NewPrimaryServiceClient(cl.conn).Takeover(ctx, &streamdv1.TakeoverRequest{EntityType: c.String("type"), EntityId: c.String("entity"), Force: c.Bool("force")})
				if err != nil {
					return cl.serverError(err)
				}
				return newPrinter(c).one(map[string]any{"entity_type": c.String("type"), "entity_id": c.String("entity"), "version": resp.Version},
					fmt.Sprintf("%s/%s is owned here at version %d", c.String("type"), c.String("entity"), resp.Version))
			}),
		},
		&cli.Command{
			Name:      "failover",
			Usage:     "move every pinned entity type and every entity of region --from to region --to, the server's (dry run unless --execute)",
			ArgsUsage: " ",
			Description: "Run it against the region taking over (--to). Without --execute it reports how far each\n" +
				"region has applied --from's journal (APPLIED) against the last offset it knows --from wrote\n" +
				"(KNOWN), and how many of --from's events no reachable region holds: what the failover may\n" +
				"lose. With --execute it writes one failover record, which replicates to every region:\n" +
				"writes of those types and entities go to --to from then on, in every region, --from\n" +
				"included once it is back (it forwards them). Events --from wrote after the failover point\n" +
				"(the last of its events --to had applied) join no history: streamctl primary conflicts\n" +
				"lists them. To fail back, run it the other way against the old region.",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "from", Usage: "the region that failed (required)"},
				&cli.StringFlag{Name: "to", Usage: "the region taking over: the server's (required)"},
				&cli.BoolFlag{Name: "execute", Usage: "fail over (without it, only report)"},
			},
			Action: withClient(func(c *cli.Context, cl *client) error {
				if err := noArgs(c); err != nil {
					return err
				}
				from, to := c.String("from"), c.String("to")
				if from == "" || to == "" {
					return usagef("primary failover needs --from (the region that failed) and --to (the server's region)")
				}
				ctx, cancel := unary(c)
				defer cancel()
				resp, err := streamdv1.NewPrimaryServiceClient(cl.conn).Failover(ctx, &streamdv1.FailoverRequest{From: from, To: to, Execute: c.Bool("execute")})
				if err != nil {
					return cl.serverError(err)
				}
				return printFailover(c, from, to, resp)
			}),
		},
		&cli.Command{
			Name:      "conflicts",
			Usage:     "list the events a failover fenced out: written by the failed-over region after the failover point, in no history",
			ArgsUsage: " ",
			Action: withClient(func(c *cli.Context, cl *client) error {
				if err := noArgs(c); err != nil {
					return err
				}
				ctx, cancel := unary(c)
				defer cancel()
				resp, err := streamdv1.NewPrimaryServiceClient(cl.conn).Conflicts(ctx, &streamdv1.ConflictsRequest{})
				if err != nil {
					return cl.serverError(err)
				}
				t := newPrinter(c).table("FROM", "TO", "ENTITY", "ORIGIN_SEQNR", "VERSION", "EVENT_TYPE", "OFFSET")
				for _, cf := range resp.Conflicts {
					ev := cf.Event
					t.row(map[string]any{
						"from": cf.From, "to": cf.To, "entity_type": ev.GetEntityType(), "entity_id": ev.GetEntityId(),
						"origin_seq_nr": ev.GetOriginSeqNr(), "version": version(ev), "event_type": ev.GetEventType(), "offset": ev.GetOffset(),
					}, cf.From, cf.To, ev.GetEntityType()+"/"+ev.GetEntityId(), ev.GetOriginSeqNr(), version(ev), ev.GetEventType(), ev.GetOffset())
				}
				return t.flush()
			}),
		},
	)
}

// printFailover prints a failover's report: per region its progress in
// from's journal, then what moves and what may be lost. When a region
// reports more than one journal of from (from's pods share its entities),
// the table has a row per region and journal, with the journal id's first
// bytes; otherwise a row per region, as the sums.
func printFailover(c *cli.Context, from, to string, resp *streamdv1.FailoverResponse) error {
	p := newPrinter(c)
	perJournal := false
	for _, rp := range resp.Progress {
		perJournal = perJournal || len(rp.Journals) > 1
	}
	header := []string{"REGION", "REACHABLE", "APPLIED", "KNOWN"}
	if perJournal {
		header = []string{"REGION", "REACHABLE", "JOURNAL", "APPLIED", "KNOWN"}
	}
	t := p.table(header...)
	for _, rp := range resp.Progress {
		applied, known := fmt.Sprint(rp.AppliedOffset), fmt.Sprint(rp.KnownOffset)
		reachable := "yes"
		if !rp.Reachable {
			applied, known, reachable = "-", "-", "no"
		}
		journals := []map[string]any{}
		for _, j := range rp.Journals {
			journals = append(journals, map[string]any{"journal_id": hex.EncodeToString(j.JournalId), "applied_offset": j.AppliedOffset, "known_offset": j.KnownOffset})
		}
		obj := map[string]any{
			"region": rp.Region, "reachable": rp.Reachable, "applied_offset": rp.AppliedOffset, "known_offset": rp.KnownOffset, "error": rp.Error,
			"journals": journals,
		}
		switch {
		case !perJournal:
			t.row(obj, rp.Region, reachable, applied, known)
		case p.json || len(rp.Journals) == 0:
			t.row(obj, rp.Region, reachable, "-", applied, known)
		default:
			for _, j := range rp.Journals {
				t.row(obj, rp.Region, reachable, shortJournalID(j.JournalId), j.AppliedOffset, j.KnownOffset)
			}
		}
	}
	if err := t.flush(); err != nil {
		return err
	}
	if p.json {
		return json.NewEncoder(p.w).Encode(map[string]any{
			"from": from, "to": to, "entity_types": resp.EntityTypes, "unlisted_types": resp.UnlistedTypes, "at_risk": resp.AtRisk,
			"from_applied_unix_nano": resp.FromAppliedUnixNano, "executed": resp.Executed, "offset": resp.Offset,
		})
	}
	for _, line := range failoverreport.Notes(from, to, resp, "add --execute to fail over") {
		p.note("%s", line)
	}
	return nil
}

// shortJournalID is the hex of a journal id's first 4 bytes, enough to
// tell a region's journals apart in a table ("-" for none).
func shortJournalID(id []byte) string {
	if len(id) == 0 {
		return "-"
	}
	return hex.EncodeToString(id[:min(len(id), 4)])
}

func needType(c *cli.Context, cmd string) error {
	if err := noArgs(c); err != nil {
		return err
	}
	if c.String("type") == "" {
		return usagef("primary %s needs --type", cmd)
	}
	return nil
}

// version is an event's version in its single-writer entity's history:
// the sum of its version vector.
func version(ev *streamdv1.Event) uint64 {
	var v uint64
	for _, n := range ev.GetVersionVector() {
		v += n
	}
	return v
}

package main

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// consumerAdmin is where the offsets and filters commands act: an offsets
// store directory (--store), or the AdminService of the process that runs
// the consumers (--addr).
type consumerAdmin interface {
	offsets(consumer string) ([]offsets.Entry, error)
	resolve(sel offsets.Selector) (offsets.Key, offsets.Resolution, error)
	move(sel offsets.Selector, to offsets.Offset, execute bool) ([]offsets.Change, error)
	// filters lists the filters of consumer ("" = all); stream "" with
	// anyStream lists every stream's.
	filters(consumer, stream string, anyStream bool) ([]offsets.FilterEntry, error)
	editFilter(consumer, stream string, add, remove []*streamdv1.FilterCriterion) (offsets.FilterEntry, error)
	// ends returns the last offset of each journal the consumer's
	// producers serve, as last heard from them (none with --store).
	ends(consumer string) ([]journalEnd, error)
	// when says when a change takes effect.
	when(consumer string) string
	Close() error
}

var adminFlags = []cli.Flag{
	&cli.StringFlag{Name: "store", Usage: "offsets store directory of a consumer that is stopped (it holds a lock); without it, the consumers the server at --addr runs"},
	&cli.StringFlag{Name: "consumer", Usage: "consumer name"},
}

// withAdmin opens the consumerAdmin of --store or --addr for fn.
func withAdmin(needConsumer bool, fn func(c *cli.Context, a consumerAdmin) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if needConsumer && c.String("consumer") == "" {
			return usagef("%s needs --consumer NAME", c.Command.HelpName)
		}
		a, err := openAdmin(c)
		if err != nil {
			return err
		}
		err = fn(c, a)
		if cerr := a.Close(); err == nil && cerr != nil {
			return cerr
		}
		return err
	}
}

func openAdmin(c *cli.Context) (consumerAdmin, error) {
	dir := c.String("store")
	if dir == "" {
		if c.IsSet("stream") {
			return nil, usagef("--stream goes with --store: a running consumer's filter is for the stream it follows")
		}
		return dialAdmin(c)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("offsets store %s: not a directory", dir)
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := offsets.Open(dir, offsets.Options{Logger: log})
	// Badger formats the flock error into its message (%+v), so the text
	// is all there is to match.
	if err != nil && strings.Contains(err.Error(), "Cannot acquire directory lock") {
		return nil, fmt.Errorf("offsets store %s is held by a running process (its lock is taken): steer that process's consumers through its admin API with --addr HOST:PORT instead of --store, for example 'streamctl --addr <service> %s'", dir, c.Command.HelpName[strings.Index(c.Command.HelpName, " ")+1:])
	}
	if err != nil {
		return nil, fmt.Errorf("open offsets store %s: %w", dir, err)
	}
	return &storeAdmin{dir: dir, s: s}, nil
}

func offsetsCommand() *cli.Command {
	keyFlags := append(adminFlags[:2:2],
		&cli.StringFlag{Name: "journal", Usage: "journal id in hex (see 'streamctl journal info')"},
		&cli.StringFlag{Name: "slices", Usage: "slice range first-last, for example 0-1023"},
	)
	moveFlags := append(keyFlags[:4:4],
		&cli.Uint64Flag{Name: "to-offset", Usage: "last processed offset: the consumer resumes at N+1"},
		&cli.BoolFlag{Name: "to-earliest", Usage: "restart from the first stored event"},
		&cli.BoolFlag{Name: "to-latest", Usage: "skip to the end of the journal"},
		&cli.StringFlag{Name: "to-time", Usage: "restart from the first event at or after this RFC 3339 time"},
		&cli.BoolFlag{Name: "execute", Usage: "apply the change (without it, only show what would change)"},
	)
	move := &cli.Command{
		Name:      "set",
		Usage:     "move a consumer's stored offsets (dry run unless --execute)",
		ArgsUsage: " ",
		Description: "Changes the stored offsets of --consumer matching --journal and --slices (all\n" +
			"of them when neither is given); with --journal and no stored offset,\n" +
			"creates one. A consumer the server runs is stopped, moved and\n" +
			"started again; with --store, stop the consumer first: a running consumer\n" +
			"saves its own offset over the moved one.",
		Flags:  moveFlags,
		Action: withAdmin(true, moveOffsets),
	}
	reset := *move
	reset.Name = "reset"
	return group("offsets", "inspect and move consumer offsets (of a running server's consumers, or in an offsets store with --store)",
		&cli.Command{
			Name:      "list",
			Usage:     "list stored offsets (of every consumer unless --consumer)",
			ArgsUsage: " ",
			Flags:     adminFlags,
			Action: withAdmin(false, func(c *cli.Context, a consumerAdmin) error {
				if err := noArgs(c); err != nil {
					return err
				}
				es, err := a.offsets(c.String("consumer"))
				if err != nil {
					return err
				}
				t := newPrinter(c).table("CONSUMER", "JOURNAL", "SLICES", "OFFSET", "UPDATED")
				for _, e := range es {
					t.row(entryJSON(e.Key, e.Offset), e.Consumer, hex.EncodeToString(e.JournalID), e.Slices, e.Offset, e.UpdatedAt.UTC().Format(time.RFC3339))
				}
				return t.flush()
			}),
		},
		&cli.Command{
			Name:      "get",
			Usage:     "show where a consumer would start (merging the stored offsets of overlapping slice ranges)",
			ArgsUsage: " ",
			Flags:     keyFlags,
			Action: withAdmin(true, func(c *cli.Context, a consumerAdmin) error {
				if err := noArgs(c); err != nil {
					return err
				}
				sel, err := selector(c)
				if err != nil {
					return err
				}
				k, r, err := a.resolve(sel)
				if err != nil {
					return err
				}
				if !r.Found {
					return fmt.Errorf("no stored offset for %s: the consumer uses its start policy", k)
				}
				obj := entryJSON(k, r.Offset)
				obj["exact"] = r.Exact
				t := newPrinter(c).table("CONSUMER", "JOURNAL", "SLICES", "OFFSET", "EXACT")
				t.row(obj, k.Consumer, hex.EncodeToString(k.JournalID), k.Slices, r.Offset, r.Exact)
				return t.flush()
			}),
		},
		move, &reset,
	)
}

func entryJSON(k offsets.Key, p offsets.Offset) map[string]any {
	obj := map[string]any{"consumer": k.Consumer, "journal_id": hex.EncodeToString(k.JournalID), "slices": k.Slices.String(), "stored": p.String()}
	if !p.Pending() {
		obj["offset"] = p.Offset
	}
	if !p.UpdatedAt.IsZero() {
		obj["updated_at"] = p.UpdatedAt.UTC().Format(time.RFC3339Nano)
	}
	return obj
}

// selector reads --consumer, --journal and --slices.
func selector(c *cli.Context) (offsets.Selector, error) {
	sel := offsets.Selector{Consumer: c.String("consumer")}
	if j := c.String("journal"); j != "" {
		id, err := hex.DecodeString(j)
		if err != nil || len(id) != offsets.JournalIDLen {
			return sel, usagef("--journal %q: want %d bytes in hex", j, offsets.JournalIDLen)
		}
		sel.JournalID = id
	}
	if sr := c.String("slices"); sr != "" {
		r, err := offsets.ParseSliceRange(sr)
		if err != nil {
			return sel, usagef("--slices: %v", err)
		}
		sel.Slices = &r
	}
	return sel, nil
}

func moveOffsets(c *cli.Context, a consumerAdmin) error {
	if err := noArgs(c); err != nil {
		return err
	}
	var (
		n    int
		want offsets.Offset
	)
	if c.IsSet("to-offset") {
		n++
		want.Offset = c.Uint64("to-offset")
	}
	if c.Bool("to-earliest") {
		n++
		want.Start = streamdv1.StartPolicy_START_POLICY_EARLIEST
	}
	if c.Bool("to-latest") {
		n++
		want.Start = streamdv1.StartPolicy_START_POLICY_LATEST
	}
	if c.IsSet("to-time") {
		n++
		t, err := time.Parse(time.RFC3339Nano, c.String("to-time"))
		if err != nil {
			return usagef("--to-time %q: want an RFC 3339 time", c.String("to-time"))
		}
		want.Start, want.StartTime = streamdv1.StartPolicy_START_POLICY_AT_TIME, t
	}
	if n != 1 {
		return usagef("%s needs exactly one of --to-offset, --to-earliest, --to-latest, --to-time", c.Command.HelpName)
	}
	sel, err := selector(c)
	if err != nil {
		return err
	}
	changes, err := a.move(sel, want, false)
	if err != nil {
		return err
	}
	if c.IsSet("to-offset") {
		if err := pastEnd(a, changes, want.Offset); err != nil {
			return err
		}
	}
	if c.Bool("execute") {
		if changes, err = a.move(sel, want, true); err != nil {
			return err
		}
	}
	p := newPrinter(c)
	t := p.table("CONSUMER", "JOURNAL", "SLICES", "FROM", "TO")
	for _, ch := range changes {
		from := "(none)"
		if ch.Found {
			from = ch.From.String()
		}
		obj := entryJSON(ch.Key, ch.To)
		obj["from"], obj["to"], obj["executed"] = from, ch.To.String(), c.Bool("execute")
		delete(obj, "stored")
		t.row(obj, ch.Key.Consumer, hex.EncodeToString(ch.Key.JournalID), ch.Key.Slices, from, ch.To.String())
	}
	if err := t.flush(); err != nil {
		return err
	}
	if c.Bool("execute") {
		p.note("changed %d offset(s); %s", len(changes), a.when(sel.Consumer))
	} else {
		p.note("dry run: nothing changed; add --execute to apply")
	}
	return nil
}

// journalEnd is the last offset of a journal a producer serves.
type journalEnd struct {
	producer   string
	journalID  []byte
	lastOffset uint64
}

// pastEnd refuses to move an offset past the end of its journal: the
// consumer would skip the events that take the offsets in between.
func pastEnd(a consumerAdmin, changes []offsets.Change, to uint64) error {
	for _, ch := range changes {
		ends, err := a.ends(ch.Key.Consumer)
		if err != nil {
			return err
		}
		for _, e := range ends {
			if bytes.Equal(e.journalID, ch.Key.JournalID) && to > e.lastOffset {
				return usagef("--to-offset %d: journal %x ends at offset %d (producer %s): the consumer would skip the events that take the offsets in between; give at most %d, or --to-latest",
					to, e.journalID, e.lastOffset, e.producer, e.lastOffset)
			}
		}
	}
	return nil
}

func filtersCommand() *cli.Command {
	flags := append(adminFlags[:2:2],
		&cli.StringFlag{Name: "stream", Usage: "with --store: stream the filter applies to (\"\" = the default stream)"},
	)
	editFlags := append(flags[:3:3],
		&cli.DurationFlag{Name: "ttl", Usage: "expire the added criteria after this long (criteria with ttl= or until= keep theirs)"},
	)
	edit := func(add bool) cli.ActionFunc {
		return withAdmin(true, func(c *cli.Context, a consumerAdmin) error {
			if !c.Args().Present() {
				return usagef("%s needs at least one criterion, for example 'include tag=sports'", c.Command.HelpName)
			}
			if !add && c.IsSet("ttl") {
				return usagef("--ttl goes with filters add")
			}
			now := time.Now()
			var crits []*streamdv1.FilterCriterion
			for _, text := range c.Args().Slice() {
				crit, err := filters.Parse(text, now)
				if err != nil {
					return usagef("%v", err)
				}
				if ttl := c.Duration("ttl"); add && ttl > 0 && crit.ExpiresAtUnixNano == 0 {
					crit.ExpiresAtUnixNano = now.Add(ttl).UnixNano()
				}
				crits = append(crits, crit)
			}
			var e offsets.FilterEntry
			var err error
			if add {
				e, err = a.editFilter(c.String("consumer"), c.String("stream"), crits, nil)
			} else {
				e, err = a.editFilter(c.String("consumer"), c.String("stream"), nil, crits)
			}
			if err != nil {
				return err
			}
			p := newPrinter(c)
			if err := printFilters(p, []offsets.FilterEntry{e}, now, true); err != nil {
				return err
			}
			p.note("%s", a.when(e.Consumer))
			return nil
		})
	}
	return group("filters", "edit a consumer's filter (of a running server's consumers, or in an offsets store with --store)",
		&cli.Command{
			Name:      "list",
			Usage:     "list filters (of every consumer unless --consumer); criteria that expired are left out unless --expired",
			ArgsUsage: " ",
			Flags:     append(flags[:3:3], &cli.BoolFlag{Name: "expired", Usage: "also list the criteria that expired, marked (expired)"}),
			Action: withAdmin(false, func(c *cli.Context, a consumerAdmin) error {
				if err := noArgs(c); err != nil {
					return err
				}
				es, err := a.filters(c.String("consumer"), c.String("stream"), !c.IsSet("stream"))
				if err != nil {
					return err
				}
				return printFilters(newPrinter(c), es, time.Now(), c.Bool("expired"))
			}),
		},
		&cli.Command{Name: "add", Usage: "add criteria to a consumer's filter (replacing ones with the same action, field and value)", ArgsUsage: "'CRITERION'...", Flags: editFlags, Action: edit(true)},
		&cli.Command{Name: "remove", Usage: "remove criteria (matched by action, field and value) from a consumer's filter", ArgsUsage: "'CRITERION'...", Flags: flags, Action: edit(false)},
	)
}

// printFilters prints the criteria of es; those expired at now are left
// out, or with expired marked "(expired)".
func printFilters(p *printer, es []offsets.FilterEntry, now time.Time, expired bool) error {
	t := p.table("CONSUMER", "STREAM", "CRITERION")
	for _, e := range es {
		stream := e.Stream
		if stream == "" {
			stream = "(default)"
		}
		for _, crit := range e.Criteria {
			gone := crit.GetExpiresAtUnixNano() != 0 && crit.GetExpiresAtUnixNano() <= now.UnixNano()
			if gone && !expired {
				continue
			}
			text := filters.Format(crit)
			obj := map[string]any{"consumer": e.Consumer, "stream": e.Stream, "criterion": text}
			if gone {
				obj["expired"] = true
				text += " (expired)"
			}
			t.row(obj, e.Consumer, stream, text)
		}
	}
	return t.flush()
}

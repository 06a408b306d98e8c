package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/streamd/streamd/filters"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

var storeFlags = []cli.Flag{
	&cli.StringFlag{Name: "store", Usage: "offsets store directory of the consumer (required; stop the consumer first, it holds a lock)"},
	&cli.StringFlag{Name: "consumer", Usage: "consumer name"},
}

// withStore opens the offsets store of --store for fn.
func withStore(needConsumer bool, fn func(c *cli.Context, s *offsets.Store) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		dir := c.String("store")
		if dir == "" {
			return usagef("%s needs --store DIR", c.Command.HelpName)
		}
		if needConsumer && c.String("consumer") == "" {
			return usagef("%s needs --consumer NAME", c.Command.HelpName)
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("offsets store %s: not a directory", dir)
		}
		log := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: slog.LevelWarn}))
		s, err := offsets.Open(dir, offsets.Options{Logger: log})
		if err != nil {
			return fmt.Errorf("open offsets store %s: %w", dir, err)
		}
		err = fn(c, s)
		if cerr := s.Close(); err == nil && cerr != nil {
			return fmt.Errorf("close offsets store %s: %w", dir, cerr)
		}
		return err
	}
}

func offsetsCommand() *cli.Command {
	keyFlags := append(storeFlags[:2:2],
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
		Usage:     "move a consumer's position (dry run unless --execute)",
		ArgsUsage: " ",
		Description: "Changes the positions of --consumer matching --journal and --slices (all of\n" +
			"its positions when neither is given); with --journal and no stored\n" +
			"position, creates one. The consumer uses it at its next connect: stop it\n" +
			"first, a running consumer saves its own position over it.",
		Flags:  moveFlags,
		Action: withStore(true, movePositions),
	}
	reset := *move
	reset.Name = "reset"
	return group("offsets", "inspect and move the positions in a consumer's offsets store",
		&cli.Command{
			Name:      "list",
			Usage:     "list stored positions (of every consumer unless --consumer)",
			ArgsUsage: " ",
			Flags:     storeFlags,
			Action: withStore(false, func(c *cli.Context, s *offsets.Store) error {
				if err := noArgs(c); err != nil {
					return err
				}
				es, err := s.List(c.String("consumer"))
				if err != nil {
					return err
				}
				t := newPrinter(c).table("CONSUMER", "JOURNAL", "SLICES", "POSITION", "UPDATED")
				for _, e := range es {
					t.row(entryJSON(e.Key, e.Position), e.Consumer, hex.EncodeToString(e.JournalID), e.Slices, e.Position, e.UpdatedAt.UTC().Format(time.RFC3339))
				}
				return t.flush()
			}),
		},
		&cli.Command{
			Name:      "get",
			Usage:     "show where a consumer would start (merging positions of overlapping slice ranges)",
			ArgsUsage: " ",
			Flags:     keyFlags,
			Action: withStore(true, func(c *cli.Context, s *offsets.Store) error {
				if err := noArgs(c); err != nil {
					return err
				}
				k, err := singleKey(c, s)
				if err != nil {
					return err
				}
				r, err := s.Resolve(k)
				if err != nil {
					return err
				}
				if !r.Found {
					return fmt.Errorf("no stored position for %s: the consumer uses its start policy", k)
				}
				obj := entryJSON(k, r.Position)
				obj["exact"] = r.Exact
				t := newPrinter(c).table("CONSUMER", "JOURNAL", "SLICES", "POSITION", "EXACT")
				t.row(obj, k.Consumer, hex.EncodeToString(k.JournalID), k.Slices, r.Position, r.Exact)
				return t.flush()
			}),
		},
		move, &reset,
	)
}

func entryJSON(k offsets.Key, p offsets.Position) map[string]any {
	obj := map[string]any{"consumer": k.Consumer, "journal_id": hex.EncodeToString(k.JournalID), "slices": k.Slices.String(), "position": p.String()}
	if !p.Pending() {
		obj["offset"] = p.Offset
	}
	if !p.UpdatedAt.IsZero() {
		obj["updated_at"] = p.UpdatedAt.UTC().Format(time.RFC3339Nano)
	}
	return obj
}

// keyFilter reads --journal and --slices; nil means "any".
func keyFilter(c *cli.Context) (journal []byte, slices *offsets.SliceRange, err error) {
	if j := c.String("journal"); j != "" {
		if journal, err = hex.DecodeString(j); err != nil || len(journal) != offsets.JournalIDLen {
			return nil, nil, usagef("--journal %q: want %d bytes in hex", j, offsets.JournalIDLen)
		}
	}
	if sr := c.String("slices"); sr != "" {
		r, err := offsets.ParseSliceRange(sr)
		if err != nil {
			return nil, nil, usagef("--slices: %v", err)
		}
		slices = &r
	}
	return journal, slices, nil
}

// targets are the stored keys of --consumer matching --journal and --slices,
// or the key those flags name when nothing matches and --journal is given.
func targets(c *cli.Context, s *offsets.Store) ([]offsets.Key, error) {
	journal, slices, err := keyFilter(c)
	if err != nil {
		return nil, err
	}
	es, err := s.List(c.String("consumer"))
	if err != nil {
		return nil, err
	}
	var keys []offsets.Key
	for _, e := range es {
		if (journal == nil || string(e.JournalID) == string(journal)) && (slices == nil || e.Slices == *slices) {
			keys = append(keys, e.Key)
		}
	}
	if len(keys) == 0 {
		if journal == nil {
			return nil, fmt.Errorf("no stored position matches consumer %q: give --journal HEX (see 'streamctl journal info') to create one", c.String("consumer"))
		}
		k := offsets.Key{Consumer: c.String("consumer"), JournalID: journal, Slices: offsets.AllSlices}
		if slices != nil {
			k.Slices = *slices
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// singleKey is the key offsets get resolves: --journal, or the one journal
// the consumer has positions in.
func singleKey(c *cli.Context, s *offsets.Store) (offsets.Key, error) {
	journal, slices, err := keyFilter(c)
	if err != nil {
		return offsets.Key{}, err
	}
	k := offsets.Key{Consumer: c.String("consumer"), JournalID: journal, Slices: offsets.AllSlices}
	if slices != nil {
		k.Slices = *slices
	}
	if journal != nil {
		return k, nil
	}
	es, err := s.List(k.Consumer)
	if err != nil {
		return k, err
	}
	for _, e := range es {
		if k.JournalID != nil && string(k.JournalID) != string(e.JournalID) {
			return k, usagef("consumer %q has positions in several journals: give --journal", k.Consumer)
		}
		k.JournalID = e.JournalID
	}
	if k.JournalID == nil {
		return k, fmt.Errorf("no stored position for consumer %q", k.Consumer)
	}
	return k, nil
}

func movePositions(c *cli.Context, s *offsets.Store) error {
	if err := noArgs(c); err != nil {
		return err
	}
	var (
		n      int
		want   offsets.Position
		policy streamdv1.StartPolicy
	)
	if c.IsSet("to-offset") {
		n++
		want.Offset = c.Uint64("to-offset")
	}
	if c.Bool("to-earliest") {
		n++
		policy = streamdv1.StartPolicy_START_POLICY_EARLIEST
	}
	if c.Bool("to-latest") {
		n++
		policy = streamdv1.StartPolicy_START_POLICY_LATEST
	}
	if c.IsSet("to-time") {
		n++
		t, err := time.Parse(time.RFC3339Nano, c.String("to-time"))
		if err != nil {
			return usagef("--to-time %q: want an RFC 3339 time", c.String("to-time"))
		}
		policy, want.StartTime = streamdv1.StartPolicy_START_POLICY_AT_TIME, t
	}
	if n != 1 {
		return usagef("%s needs exactly one of --to-offset, --to-earliest, --to-latest, --to-time", c.Command.HelpName)
	}
	want.Start = policy
	keys, err := targets(c, s)
	if err != nil {
		return err
	}
	p := newPrinter(c)
	t := p.table("CONSUMER", "JOURNAL", "SLICES", "FROM", "TO")
	for _, k := range keys {
		cur, found, err := s.Get(k)
		if err != nil {
			return err
		}
		from := "(none)"
		if found {
			from = cur.String()
		}
		if c.Bool("execute") {
			if policy == streamdv1.StartPolicy_START_POLICY_UNSPECIFIED {
				err = s.Set(k, want.Offset)
			} else {
				err = s.Reset(k, policy, want.StartTime)
			}
			if err != nil {
				return err
			}
		}
		obj := entryJSON(k, want)
		obj["from"], obj["to"], obj["executed"] = from, want.String(), c.Bool("execute")
		delete(obj, "position")
		t.row(obj, k.Consumer, hex.EncodeToString(k.JournalID), k.Slices, from, want.String())
	}
	if err := t.flush(); err != nil {
		return err
	}
	if c.Bool("execute") {
		p.note("changed %d position(s); the consumer starts there at its next connect", len(keys))
	} else {
		p.note("dry run: nothing changed; add --execute to apply")
	}
	return nil
}

func filtersCommand() *cli.Command {
	flags := append(storeFlags[:2:2],
		&cli.StringFlag{Name: "stream", Usage: "stream the filter applies to (\"\" = the default stream)"},
	)
	editFlags := append(flags[:3:3],
		&cli.DurationFlag{Name: "ttl", Usage: "expire the added criteria after this long (criteria with ttl= or until= keep theirs)"},
	)
	edit := func(add bool) cli.ActionFunc {
		return withStore(true, func(c *cli.Context, s *offsets.Store) error {
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
			consumer, stream := c.String("consumer"), c.String("stream")
			cur, err := s.Filters(consumer, stream)
			if err != nil && !errorsIsNotFound(err) {
				return err
			}
			var next []*streamdv1.FilterCriterion
			if add {
				next = filters.Apply(cur, crits, nil)
				if _, err := filters.Compile(next, filters.Limits{}); err != nil {
					return err
				}
			} else {
				next = cur
				for i := range crits {
					after := filters.Apply(next, nil, crits[i:i+1])
					if len(after) == len(next) {
						return fmt.Errorf("%q is not in the filter of consumer %q on stream %q", c.Args().Get(i), consumer, stream)
					}
					next = after
				}
			}
			if err := s.SetFilters(consumer, stream, next); err != nil {
				return err
			}
			p := newPrinter(c)
			if err := printFilters(p, []offsets.FilterEntry{{Consumer: consumer, Stream: stream, Criteria: next}}); err != nil {
				return err
			}
			p.note("stored; consumer %q picks the new filter up at its next (re)connect", consumer)
			return nil
		})
	}
	return group("filters", "edit the filter stored for a consumer in its offsets store",
		&cli.Command{
			Name:      "list",
			Usage:     "list stored filters (of every consumer unless --consumer)",
			ArgsUsage: " ",
			Flags:     flags,
			Action: withStore(false, func(c *cli.Context, s *offsets.Store) error {
				if err := noArgs(c); err != nil {
					return err
				}
				all, err := s.ListFilters()
				if err != nil {
					return err
				}
				var es []offsets.FilterEntry
				for _, e := range all {
					if (c.String("consumer") == "" || e.Consumer == c.String("consumer")) && (!c.IsSet("stream") || e.Stream == c.String("stream")) {
						es = append(es, e)
					}
				}
				return printFilters(newPrinter(c), es)
			}),
		},
		&cli.Command{Name: "add", Usage: "add criteria to a consumer's filter (replacing ones with the same action, field and value)", ArgsUsage: "'CRITERION'...", Flags: editFlags, Action: edit(true)},
		&cli.Command{Name: "remove", Usage: "remove criteria (matched by action, field and value) from a consumer's filter", ArgsUsage: "'CRITERION'...", Flags: flags, Action: edit(false)},
	)
}

func printFilters(p *printer, es []offsets.FilterEntry) error {
	t := p.table("CONSUMER", "STREAM", "CRITERION")
	for _, e := range es {
		stream := e.Stream
		if stream == "" {
			stream = "(default)"
		}
		for _, crit := range e.Criteria {
			text := filters.Format(crit)
			t.row(map[string]string{"consumer": e.Consumer, "stream": e.Stream, "criterion": text}, e.Consumer, stream, text)
		}
	}
	return t.flush()
}

func errorsIsNotFound(err error) bool { return errors.Is(err, offsets.ErrNotFound) }

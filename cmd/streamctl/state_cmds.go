package main

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// crdtOpsFromFlags reads publish's CRDT operation flags, in the order
// --set, --add-counter, --add, --remove.
func crdtOpsFromFlags(c *cli.Context) ([]*streamdv1.CrdtOp, error) {
	var ops []*streamdv1.CrdtOp
	for _, flag := range []string{"set", "add-counter", "add", "remove"} {
		for _, v := range c.StringSlice(flag) {
			field, value, ok := strings.Cut(v, "=")
			if !ok || field == "" {
				return nil, usagef("publish --%s %q: want FIELD=%s", flag, v, map[bool]string{true: "N", false: "VALUE"}[flag == "add-counter"])
			}
			op := &streamdv1.CrdtOp{Field: field}
			switch flag {
			case "set":
				op.Op = &streamdv1.CrdtOp_SetRegister{SetRegister: value}
			case "add-counter":
				n, err := strconv.ParseInt(value, 10, 64)
				if err != nil {
					return nil, usagef("publish --add-counter %q: %q is not a whole number", v, value)
				}
				op.Op = &streamdv1.CrdtOp_AddCounter{AddCounter: n}
			case "add":
				op.Op = &streamdv1.CrdtOp_AddElement{AddElement: value}
			case "remove":
				op.Op = &streamdv1.CrdtOp_RemoveElement{RemoveElement: value}
			}
			ops = append(ops, op)
		}
	}
	return ops, nil
}

// opsEventFromFlags is the event of a replicated type carrying ops: an
// entity and nothing else.
func opsEventFromFlags(c *cli.Context, ops []*streamdv1.CrdtOp) (*streamdv1.Event, error) {
	if err := noArgs(c); err != nil {
		return nil, err
	}
	for _, f := range []string{"entity", "type"} {
		if c.String(f) == "" {
			return nil, usagef("publish needs --%s", f)
		}
	}
	for _, f := range []string{"event-type", "data", "file", "tag", "topic"} {
		if c.IsSet(f) {
			return nil, usagef("publish with CRDT operations (--set, --add-counter, --add, --remove) takes no --%s: they are the event", f)
		}
	}
	return &streamdv1.Event{EntityType: c.String("type"), EntityId: c.String("entity"), CrdtOps: ops}, nil
}

// stateCommand shows the merged state of a replicated entity.
func stateCommand() *cli.Command {
	return &cli.Command{
		Name:      "state",
		Usage:     "show the merged state of an entity of a replicated entity type, as the server's region holds it",
		ArgsUsage: " ",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "type", Usage: "entity type (required)"},
			&cli.StringFlag{Name: "entity", Usage: "entity id (required)"},
		},
		Action: withClient(func(c *cli.Context, cl *client) error {
			if err := noArgs(c); err != nil {
				return err
			}
			for _, f := range []string{"type", "entity"} {
				if c.String(f) == "" {
					return usagef("state needs --%s", f)
				}
			}
			ctx, cancel := unary(c)
			defer cancel()
			resp, err := streamdv1.NewPrimaryServiceClient(cl.conn).State(ctx, &streamdv1.StateRequest{EntityType: c.String("type"), EntityId: c.String("entity")})
			if err != nil {
				return cl.serverError(err)
			}
			t := newPrinter(c).table("KIND", "FIELD", "VALUE")
			for _, name := range slices.Sorted(maps.Keys(resp.Registers)) {
				t.row(map[string]any{"kind": "register", "field": name, "value": resp.Registers[name]}, "register", name, resp.Registers[name])
			}
			for _, name := range slices.Sorted(maps.Keys(resp.Counters)) {
				t.row(map[string]any{"kind": "counter", "field": name, "value": resp.Counters[name]}, "counter", name, resp.Counters[name])
			}
			for _, name := range slices.Sorted(maps.Keys(resp.Sets)) {
				elems := resp.Sets[name].GetElements()
				t.row(map[string]any{"kind": "set", "field": name, "value": elems}, "set", name, strings.Join(elems, " "))
			}
			return t.flush()
		}),
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

// printer writes results as a table or as one JSON object per line.
type printer struct {
	w, errw io.Writer
	json    bool
}

func newPrinter(c *cli.Context) *printer {
	return &printer{w: c.App.Writer, errw: c.App.ErrWriter, json: c.String("output") == "json"}
}

// one prints a single result: v as JSON, or text as it is.
func (p *printer) one(v any, text string) error {
	if p.json {
		return json.NewEncoder(p.w).Encode(v)
	}
	_, err := fmt.Fprintln(p.w, text)
	return err
}

// table prints rows under header, or each JSON object of objs on its line.
type table struct {
	p    *printer
	tw   *tabwriter.Writer
	rows int
}

func (p *printer) table(header ...string) *table {
	t := &table{p: p}
	if !p.json {
		t.tw = tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(t.tw, strings.Join(header, "\t"))
	}
	return t
}

func (t *table) row(obj any, cells ...any) error {
	t.rows++
	if t.p.json {
		return json.NewEncoder(t.p.w).Encode(obj)
	}
	s := make([]string, len(cells))
	for i, c := range cells {
		s[i] = fmt.Sprint(c)
	}
	fmt.Fprintln(t.tw, strings.Join(s, "\t"))
	return nil
}

// flush ends the table; streaming callers flush after every row.
func (t *table) flush() error {
	if t.tw == nil {
		return nil
	}
	return t.tw.Flush()
}

// note writes a remark for people: to stdout in table output, to stderr in
// JSON output so that stdout stays one object per line.
func (p *printer) note(format string, args ...any) {
	w := p.w
	if p.json {
		w = p.errw
	}
	fmt.Fprintf(w, format+"\n", args...)
}

package main

import (
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// plotMain is `bench plot-memory -o FILE.svg LABEL=CSV...`: an SVG chart of
// the resident set (VmHWM and VmRSS) against events stored, one line pair
// per curve the memory workload wrote (-memory-csv). LABEL names the build
// measured, e.g. before=old.csv after=new.csv; each server in a file is a
// curve of its own.
func plotMain(args []string) error {
	fs := flag.NewFlagSet("plot-memory", flag.ContinueOnError)
	out := fs.String("o", "memory.svg", "SVG file to write")
	title := fs.String("title", "Resident set publishing 128-byte events", "chart title")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("usage: bench plot-memory -o FILE.svg LABEL=CSV [LABEL=CSV]")
	}
	var curves []curve
	for _, a := range fs.Args() {
		label, path, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("%q: want LABEL=CSV", a)
		}
		cs, err := readCurves(label, path)
		if err != nil {
			return err
		}
		curves = append(curves, cs...)
	}
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	writeSVG(f, *title, curves)
	return f.Close()
}

// curve is one server's resident set against events stored.
type curve struct {
	label    string
	events   []float64
	hwm, rss []float64 // MiB
}

// readCurves reads a CSV appendMemoryCSV wrote: one curve per server.
func readCurves(label, path string) ([]curve, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(rows) < 2 || strings.Join(rows[0], ",") != "server,seconds,events,vmrss_mib,rss_anon_mib,rss_file_mib,vmhwm_mib" {
		return nil, fmt.Errorf("%s: not a CSV of the memory workload (-memory-csv)", path)
	}
	byServer := map[string]*curve{}
	var order []string
	for i, r := range rows[1:] {
		var v [7]float64
		for k := 1; k < 7; k++ {
			if v[k], err = strconv.ParseFloat(r[k], 64); err != nil {
				return nil, fmt.Errorf("%s: line %d: %w", path, i+2, err)
			}
		}
		c := byServer[r[0]]
		if c == nil {
			c = &curve{label: label + ": " + r[0]}
			byServer[r[0]] = c
			order = append(order, r[0])
		}
		c.events, c.rss, c.hwm = append(c.events, v[2]), append(c.rss, v[3]), append(c.hwm, v[6])
	}
	var cs []curve
	for _, s := range order {
		cs = append(cs, *byServer[s])
	}
	return cs, nil
}

// writeSVG draws the curves: VmRSS as a line, VmHWM dashed, same colour.
func writeSVG(w io.Writer, title string, curves []curve) {
	const width, height, left, right, top, bottom = 900.0, 500.0, 70.0, 250.0, 40.0, 50.0
	maxX, maxY := 1.0, 1.0
	for _, c := range curves {
		for i := range c.events {
			maxX, maxY = max(maxX, c.events[i]), max(maxY, c.hwm[i], c.rss[i])
		}
	}
	maxY = niceCeil(maxY)
	maxX = niceCeil(maxX)
	x := func(v float64) float64 { return left + v/maxX*(width-left-right) }
	y := func(v float64) float64 { return height - bottom - v/maxY*(height-top-bottom) }
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%g" height="%g" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(w, `<rect width="100%%" height="100%%" fill="white"/><text x="%g" y="22" font-size="15">%s</text>`+"\n", left, title)
	for i := 0; i <= 5; i++ {
		vy, vx := maxY*float64(i)/5, maxX*float64(i)/5
		fmt.Fprintf(w, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%g" y="%.1f" text-anchor="end">%.0f MiB</text>`+"\n",
			left, width-right, y(vy), y(vy), left-6, y(vy)+4, vy)
		fmt.Fprintf(w, `<text x="%.1f" y="%g" text-anchor="middle">%s</text>`+"\n", x(vx), height-bottom+18, fmtInt(vx))
	}
	fmt.Fprintf(w, `<text x="%g" y="%g" text-anchor="middle">events stored</text>`+"\n", (left+width-right)/2, height-12)
	colours := []string{"#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}
	for i, c := range curves {
		col := colours[i%len(colours)]
		for k, vals := range [][]float64{c.rss, c.hwm} {
			var pts strings.Builder
			for j := range c.events {
				fmt.Fprintf(&pts, "%.1f,%.1f ", x(c.events[j]), y(vals[j]))
			}
			dash := ""
			if k == 1 {
				dash = ` stroke-dasharray="5,3"`
			}
			fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`+"\n", col, dash, pts.String())
		}
		ly := top + 20 + float64(i)*36
		fmt.Fprintf(w, `<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="%s" stroke-width="2"/><text x="%g" y="%g">%s</text>`+"\n",
			width-right+10, width-right+34, ly, ly, col, width-right+40, ly+4, c.label)
		fmt.Fprintf(w, `<text x="%g" y="%g" fill="#555">VmRSS; dashed: VmHWM (peak)</text>`+"\n", width-right+40, ly+18)
	}
	fmt.Fprintln(w, "</svg>")
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := 1.0
	for p*10 <= v {
		p *= 10
	}
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

//go:build linux

package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"encoding/xml"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/benchkit"
)

// cell is one synthetic flood row: opens of 20 and the rate the generator sent.
type cell struct {
	target, subject string
	rate            string
	sent            float64
	opens           int
}

func synthResults(calib []float64, cells []cell) *Results {
	r := &Results{
		Machine: Machine{CPU: "Test CPU", CPUs: 2}, Started: time.Date(2026, 11, 22, 2, 57, 0, 0, time.UTC),
		FloodSeconds: 10, Rates: []string{"10000", "50000", "100000", "200000", "max"},
	}
	for i, c := range calib {
		r.Calibration = append(r.Calibration, Calibration{Threads: i + 1, Flood: benchkit.FloodResult{Achieved: c}})
	}
	for i, c := range cells {
		f := FloodRow{Target: c.target, Subject: c.subject, Rate: c.rate, Tries: 20, Opens: c.opens, DaemonAlive: true,
			Flood: benchkit.FloodResult{Achieved: c.sent}}
		if c.opens > 0 {
			f.Latency = benchkit.Summary{N: c.opens, P50: 0.3 + float64(i)}
		}
		if c.opens < 0 {
			f.NotAvailable, f.Opens = "not built with SPA", 0
		}
		r.Flood = append(r.Flood, f)
	}
	return r
}

// fullRun is every flood target with the subjects the harness runs on it, five rates each.
func fullRun() []cell {
	plan := []struct {
		target string
		subs   []string
	}{
		{tRandom, []string{"sesame (knock)", "sesame (SPA)", "knockd", "fwknopd (SPA, UDP)"}},
		{tKnock, []string{"sesame (knock)", "knockd"}},
		{tSPABytes, []string{"sesame (SPA)", "fwknopd (SPA, UDP)"}},
		{tSPAWrong, []string{"sesame (SPA)", "fwknopd (SPA, UDP)"}},
	}
	rates := []struct {
		rate string
		sent float64
	}{{"10000", 10000}, {"50000", 50000}, {"100000", 100000}, {"200000", 178000}, {"max", 158000}}
	var out []cell
	for pi, p := range plan {
		for si, s := range p.subs {
			for ri, rt := range rates {
				out = append(out, cell{p.target, s, rt.rate, rt.sent, 20 - (pi*si*ri)%21})
			}
		}
	}
	return out
}

// xnode is any element of the decoded SVG.
type xnode struct {
	XMLName xml.Name
	Attrs   []xml.Attr `xml:",any,attr"`
	Nodes   []xnode    `xml:",any"`
	Text    string     `xml:",chardata"`
}

func (n xnode) attr(name string) string {
	for _, a := range n.Attrs {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

func (n xnode) num(t *testing.T, name string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(n.attr(name), 64)
	if err != nil {
		t.Fatalf("<%s %s=%q>: %v", n.XMLName.Local, name, n.attr(name), err)
	}
	return v
}

// all is every element under n (n included) that f accepts, in document order.
func (n xnode) all(f func(xnode) bool) []xnode {
	var out []xnode
	if f(n) {
		out = append(out, n)
	}
	for _, c := range n.Nodes {
		out = append(out, c.all(f)...)
	}
	return out
}

func class(c string) func(xnode) bool {
	return func(n xnode) bool { return n.attr("class") == c }
}

type drawStyle struct{ color, marker, dash string }

func TestPlotFloodFigure(t *testing.T) {
	seen := map[string]drawStyle{} // a subject's style over every case: it must never change
	tests := []struct {
		name      string
		calib     []float64
		cells     []cell
		panels    []string
		legend    []string
		markLabel string
	}{
		{
			name: "every daemon and target", calib: []float64{287000, 509000}, cells: fullRun(),
			panels:    []string{"Flood at random ports", "Flood at knock ports", "Flood at SPA port, random bytes", "Flood at SPA port, wrong key"},
			legend:    []string{"sesame (knock)", "sesame (SPA)", "knockd", "fwknopd (SPA, UDP)"},
			markLabel: "bed max ≈ 509 kpps",
		},
		{
			name: "knockd alone keeps its style", calib: []float64{120000},
			cells: []cell{
				{tKnock, "knockd", "10000", 10000, 19}, {tKnock, "knockd", "max", 110000, 0},
				{tRandom, "knockd", "max", 118000, 20}, {tRandom, "knockd", "10000", 10000, 20},
			},
			panels: []string{"Flood at random ports", "Flood at knock ports"}, legend: []string{"knockd"},
			markLabel: "bed max ≈ 120 kpps",
		},
		{
			name: "no calibration, a daemon that never opened, SPA not available",
			cells: []cell{
				{tRandom, "sesame (knock)", "2000", 1999.7, 3}, {tRandom, "sesame (SPA)", "2000", 0, -1},
				{tSPAWrong, "fwknopd (SPA, UDP)", "2000", 2000.4, 0}, {tSPAWrong, "fwknopd (SPA, UDP)", "50000", 48100, 0},
			},
			panels: []string{"Flood at random ports", "Flood at SPA port, wrong key"}, legend: []string{"sesame (knock)", "fwknopd (SPA, UDP)"},
			markLabel: "fastest flood ≈ 48 kpps",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := synthResults(tt.calib, tt.cells)
			var buf bytes.Buffer
			if err := r.plot(&buf); err != nil {
				t.Fatal(err)
			}
			var doc xnode
			if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
				t.Fatalf("the SVG is not well-formed XML: %v", err)
			}
			if doc.XMLName.Local != "svg" {
				t.Fatalf("root element %q, want svg", doc.XMLName.Local)
			}
			panels := doc.all(class("panel"))
			var titles []string
			for _, p := range panels {
				titles = append(titles, p.attr("data-title"))
			}
			if !slices.Equal(titles, tt.panels) {
				t.Errorf("panels %q, want %q", titles, tt.panels)
			}
			var legend []string
			for _, e := range doc.all(class("legend-entry")) {
				legend = append(legend, e.attr("data-series"))
			}
			if !slices.Equal(legend, tt.legend) {
				t.Errorf("legend %q, want %q", legend, tt.legend)
			}
			for _, p := range panels {
				title := p.attr("data-title")
				if l := p.all(class("xmark-label")); len(l) != 1 || strings.TrimSpace(l[0].Text) != tt.markLabel {
					t.Errorf("%s: mark labels %v, want one %q", title, l, tt.markLabel)
				}
				charts := p.all(class("chart"))
				if len(charts) != 2 {
					t.Fatalf("%s: %d charts, want 2 (opens, latency)", title, len(charts))
				}
				for ci, c := range charts {
					if n := len(c.all(class("xmark"))); n != 1 {
						t.Errorf("%s chart %d: %d dashed rate marks, want 1", title, ci, n)
					}
					checkChart(t, title, ci, c, r, seen)
				}
			}
		})
	}
}

// checkChart checks one chart's series: one colour, marker and dash each, distinct within the
// chart, the same as everywhere else, one marker per measured point, and (opens chart) each
// marker's height is its row's opens.
func checkChart(t *testing.T, panel string, ci int, c xnode, r *Results, seen map[string]drawStyle) {
	t.Helper()
	lines := map[string]xnode{}
	for _, l := range c.all(class("series-line")) {
		lines[l.attr("data-series")] = l
	}
	rect := c.all(func(n xnode) bool { return n.XMLName.Local == "rect" })[0]
	top, height := rect.num(t, "y"), rect.num(t, "height")
	colors, marks := map[string]string{}, map[string]string{}
	for _, s := range c.all(class("series")) {
		name := s.attr("data-series")
		var st drawStyle
		uses := s.all(func(n xnode) bool { return n.XMLName.Local == "use" })
		for i, u := range uses {
			got := drawStyle{color: u.attr("fill"), marker: u.attr("href")}
			if i > 0 && (got.color != st.color || got.marker != st.marker) {
				t.Errorf("%s chart %d, %s: markers differ: %+v and %+v", panel, ci, name, st, got)
			}
			st.color, st.marker = got.color, got.marker
		}
		for _, pl := range lines[name].all(func(n xnode) bool { return n.XMLName.Local == "polyline" }) {
			if pl.attr("stroke") != st.color {
				t.Errorf("%s chart %d, %s: line %s, markers %s", panel, ci, name, pl.attr("stroke"), st.color)
			}
			st.dash = pl.attr("stroke-dasharray")
		}
		if len(uses) == 0 {
			// Nothing drawn (no open, so no latency): only the count below applies.
		} else if st.color == "" || !strings.HasPrefix(st.marker, "#m-") {
			t.Errorf("%s chart %d, %s: no colour or marker: %+v", panel, ci, name, st)
		}
		if len(uses) > 0 {
			if o, ok := colors[st.color]; ok {
				t.Errorf("%s chart %d: %s and %s share colour %s", panel, ci, o, name, st.color)
			}
			if o, ok := marks[st.marker]; ok {
				t.Errorf("%s chart %d: %s and %s share marker %s", panel, ci, o, name, st.marker)
			}
			colors[st.color], marks[st.marker] = name, name
			if prev, ok := seen[name]; ok && (prev.color != st.color || prev.marker != st.marker) {
				t.Errorf("%s chart %d, %s: colour and marker %+v, elsewhere %+v", panel, ci, name, st, prev)
			}
			seen[name] = drawStyle{color: st.color, marker: st.marker}
			if len(lines[name].Nodes) > 0 {
				if prev, ok := seen[name+" line"]; ok && prev.dash != st.dash {
					t.Errorf("%s chart %d, %s: dash %q, elsewhere %q", panel, ci, name, st.dash, prev.dash)
				}
				seen[name+" line"] = drawStyle{dash: st.dash}
			}
		}

		// The rows this series draws, by rate sent.
		var rows []FloodRow
		for _, f := range r.Flood {
			if "Flood at "+f.Target == panel && f.Subject == name && f.NotAvailable == "" && (ci == 0 || f.Opens > 0) {
				rows = append(rows, f)
			}
		}
		slices.SortFunc(rows, func(a, b FloodRow) int { return cmp.Compare(a.Flood.Achieved, b.Flood.Achieved) })
		if len(uses) != len(rows) {
			t.Errorf("%s chart %d, %s: %d markers, want %d", panel, ci, name, len(uses), len(rows))
			continue
		}
		for i, u := range uses {
			if i > 0 && u.num(t, "x") <= uses[i-1].num(t, "x") {
				t.Errorf("%s chart %d, %s: markers not in order of rate", panel, ci, name)
			}
			if ci == 0 {
				opens := (top + height - u.num(t, "y")) / height * 20
				if math.Abs(opens-float64(rows[i].Opens)) > 0.1 {
					t.Errorf("%s, %s at %.0f pps: marker at %.2f opens, want %d", panel, name, rows[i].Flood.Achieved, opens, rows[i].Opens)
				}
			}
		}
	}
	for _, f := range r.Flood {
		if f.NotAvailable != "" && "Flood at "+f.Target == panel && len(c.all(func(n xnode) bool { return n.attr("data-series") == f.Subject })) > 0 {
			t.Errorf("%s: %s is not available but is drawn", panel, f.Subject)
		}
	}
}

// TestPlotReplot redraws the report from a results.json, as -replot does, without root.
func TestPlotReplot(t *testing.T) {
	dir := t.TempDir()
	r := synthResults([]float64{509000}, fullRun())
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, "results.json")
	if err := os.WriteFile(in, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	if err := run([]string{"-replot", in, "-out", out}); err != nil {
		t.Fatalf("-replot: %v", err)
	}
	var want bytes.Buffer
	if err := r.plot(&want); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(out, "flood.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("replotted flood.svg differs from the plot of the same results")
	}
	if md, err := os.ReadFile(filepath.Join(out, "results.md")); err != nil || !strings.Contains(string(md), "### Flood at SPA port, wrong key") {
		t.Errorf("results.md: %v\n%s", err, md)
	}
	if err := run([]string{"-replot", filepath.Join(dir, "missing.json")}); err == nil {
		t.Error("-replot of a missing file: no error")
	}
}

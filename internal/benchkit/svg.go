package benchkit

import (
	"fmt"
	"html"
	"io"
	"math"
	"strconv"
	"strings"
)

// Marker is the shape drawn at each point of a series.
type Marker string

// The markers, in the order Style hands them out.
const (
	Circle       Marker = "circle"
	Square       Marker = "square"
	TriangleUp   Marker = "triangle-up"
	Diamond      Marker = "diamond"
	TriangleDown Marker = "triangle-down"
	Plus         Marker = "plus"
)

var markers = []Marker{Circle, Square, TriangleUp, Diamond, TriangleDown, Plus}

// markerPath is each marker's outline around (0,0), about 9 px across.
var markerPath = map[Marker]string{
	Circle:       "M-4.5,0a4.5,4.5 0 1,0 9,0a4.5,4.5 0 1,0 -9,0z",
	Square:       "M-4,-4h8v8h-8z",
	TriangleUp:   "M0,-5.2L5,3.6H-5z",
	Diamond:      "M0,-5.5L5,0L0,5.5L-5,0z",
	TriangleDown: "M0,5.2L5,-3.6H-5z",
	Plus:         "M-1.8,-5h3.6v3.2h3.2v3.6h-3.2v3.2h-3.6v-3.2h-3.2v-3.6h3.2z",
}

// okabeIto is the Okabe-Ito colour-blind-safe palette without its yellow, which is too light
// on white.
var okabeIto = []string{"#0072B2", "#009E73", "#D55E00", "#CC79A7", "#E69F00", "#56B4E9", "#000000"}

var dashes = []string{"", "7 3", "2 2", "9 3 2 3"}

// Style is how one series is drawn, the same in every panel of a figure.
type Style struct {
	Color  string
	Marker Marker
	Dash   string // stroke-dasharray of the line; "" is solid
}

// StyleAt is the i-th style of a fixed sequence: every colour of a colour-blind-safe palette
// with its own marker, then the same colours with other markers and dashes.
func StyleAt(i int) Style {
	i = max(i, 0)
	return Style{
		Color:  okabeIto[i%len(okabeIto)],
		Marker: markers[(i+i/len(okabeIto))%len(markers)],
		Dash:   dashes[(i+i/len(okabeIto))%len(dashes)],
	}
}

// Point is one measurement; a NaN Y is a gap in the line.
type Point struct{ X, Y float64 }

// Series is one line of a chart; its style is the figure's style for its name.
type Series struct {
	Name   string
	Points []Point
}

// Chart is one plot area of a panel. Charts at the same index in every panel share their Y
// range, so that panels compare at a glance.
type Chart struct {
	YLabel   string
	LogY     bool
	YMin     float64 // lower bound (linear) or smallest decade (log); 0 picks from data
	YMax     float64 // 0 picks from data
	Height   int     // plot height in px; 0 is 150
	RefY     float64 // a dotted horizontal reference line at this Y; 0 is none
	RefLabel string
	Series   []Series
}

// Panel is one small multiple: a title over charts stacked on a shared X axis.
type Panel struct {
	Title  string
	Charts []Chart
}

// Figure is a grid of panels that share one logarithmic X axis, one legend and one style per
// series name.
type Figure struct {
	Title      string
	Subtitle   string
	XLabel     string
	XMark      float64 // a dashed vertical line and a labelled tick at this X in every panel; 0 is none
	XMarkLabel string
	Columns    int      // panels per row; 0 is 2
	Legend     []string // series names in legend order
	Styles     map[string]Style
	Panels     []Panel
}

const (
	panelW     = 460
	marginL    = 60
	marginR    = 20
	chartGap   = 16
	charW      = 6.6 // average width of an 11 px sans-serif character, with room to spare
	boldW      = 7.4 // the same, bold
	dodgePx    = 7   // horizontal offset between series, so equal values stay visible
	defaultCht = 150
)

// WriteFigure draws f as an SVG document. Every series is a group with class "series" and
// data-series naming it; its line is a polyline stroked in its colour and its points are
// <use> elements of the marker symbol "#m-<marker>".
func WriteFigure(w io.Writer, f Figure) error {
	cols := f.Columns
	if cols <= 0 {
		cols = 2
	}
	cols = max(1, min(cols, len(f.Panels)))
	rows := (len(f.Panels) + cols - 1) / cols
	W := cols * panelW

	xlo, xhi := xRange(f)
	legendRows := legendLayout(f.Legend, W)
	top := 44
	if f.Subtitle != "" {
		top += 16
	}
	legendTop := top
	top += 20*len(legendRows) + 8
	panelH := 0
	for _, p := range f.Panels {
		panelH = max(panelH, panelHeight(p))
	}
	H := top + rows*panelH + 10

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", W, H, W, H)
	b.WriteString("<defs>")
	for _, m := range markers {
		fmt.Fprintf(&b, `<path id="m-%s" d="%s"/>`, m, markerPath[m])
	}
	b.WriteString("</defs>\n")
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="15" font-weight="bold" text-anchor="middle">%s</text>`+"\n", W/2, esc(f.Title))
	if f.Subtitle != "" {
		fmt.Fprintf(&b, `<text x="%d" y="42" text-anchor="middle" fill="#444">%s</text>`+"\n", W/2, esc(f.Subtitle))
	}
	b.WriteString(`<g class="legend">` + "\n")
	for ri, row := range legendRows {
		width := 0.0
		for _, name := range row {
			width += legendEntryW(name)
		}
		x := (float64(W) - width) / 2
		y := float64(legendTop + 20*ri + 10)
		for _, name := range row {
			st := f.Styles[name]
			fmt.Fprintf(&b, `<g class="legend-entry" data-series="%s"><line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" stroke="%s" stroke-width="2"%s/>%s<text x="%.1f" y="%.1f">%s</text></g>`+"\n",
				esc(name), x, x+28, y, y, st.Color, dashAttr(st.Dash), markerUse(st, x+14, y), x+34, y+4, esc(name))
			x += legendEntryW(name)
		}
	}
	b.WriteString("</g>\n")

	yr := yRanges(f)
	for pi, p := range f.Panels {
		px := (pi % cols) * panelW
		py := top + (pi/cols)*panelH
		writePanel(&b, f, p, px, py, xlo, xhi, yr)
	}
	b.WriteString("</svg>\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	return nil
}

func writePanel(b *strings.Builder, f Figure, p Panel, px, py int, xlo, xhi float64, yr []yRange) {
	x0 := px + marginL
	iw := panelW - marginL - marginR
	xOf := func(v float64) float64 {
		return float64(x0) + (math.Log10(v)-math.Log10(xlo))/(math.Log10(xhi)-math.Log10(xlo))*float64(iw)
	}
	fmt.Fprintf(b, `<g class="panel" data-title="%s">`+"\n", esc(p.Title))
	fmt.Fprintf(b, `<text class="panel-title" x="%d" y="%d" font-size="13" font-weight="bold" text-anchor="middle">%s</text>`+"\n", x0+iw/2, py+16, esc(p.Title))
	y0 := py + 26
	for ci, c := range p.Charts {
		ih := chartHeight(c)
		r := yr[ci]
		yOf := func(v float64) float64 {
			if c.LogY {
				v = math.Max(v, r.lo)
				return float64(y0+ih) - (math.Log10(v)-math.Log10(r.lo))/(math.Log10(r.hi)-math.Log10(r.lo))*float64(ih)
			}
			return float64(y0+ih) - (v-r.lo)/(r.hi-r.lo)*float64(ih)
		}
		fmt.Fprintf(b, `<g class="chart"><rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", x0, y0, iw, ih)
		for _, t := range yTicks(c.LogY, r) {
			y := yOf(t)
			fmt.Fprintf(b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#e6e6e6"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", x0+1, x0+iw-1, y, y, x0-4, y+4, number(t))
		}
		for _, t := range xTicks(xlo, xhi) {
			x := xOf(t)
			fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#f0f0f0"/>`+"\n", x, x, y0+1, y0+ih-1)
		}
		fmt.Fprintf(b, `<text transform="translate(%d,%d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", x0-44, y0+ih/2, esc(c.YLabel))
		if c.RefY > 0 && c.RefY >= r.lo && c.RefY <= r.hi {
			y := yOf(c.RefY)
			ly := y - 3 // the label above the line at the right, or below it at the top of the chart
			if y-float64(y0) < 14 {
				ly = y + 11
			}
			fmt.Fprintf(b, `<line class="ref" x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#777" stroke-dasharray="1 3"/><text x="%d" y="%.1f" fill="#555" font-size="10" text-anchor="end">%s</text>`+"\n", x0+1, x0+iw-1, y, y, x0+iw-4, ly, esc(c.RefLabel))
		}
		if f.XMark > 0 {
			x := xOf(f.XMark)
			fmt.Fprintf(b, `<line class="xmark" x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#555" stroke-dasharray="5 3"/>`+"\n", x, x, y0, y0+ih)
		}
		// Lines first, then markers on top of every line.
		type drawn struct {
			s   Series
			st  Style
			pts [][]Point // runs without gaps, in pixels
		}
		var ds []drawn
		n := len(c.Series)
		for si, s := range c.Series {
			d := drawn{s: s, st: f.Styles[s.Name]}
			dx := (float64(si) - float64(n-1)/2) * dodgePx
			var run []Point
			for _, pt := range s.Points {
				if math.IsNaN(pt.Y) || pt.X <= 0 || c.LogY && pt.Y <= 0 {
					if len(run) > 0 {
						d.pts = append(d.pts, run)
					}
					run = nil
					continue
				}
				run = append(run, Point{xOf(pt.X) + dx, yOf(pt.Y)})
			}
			if len(run) > 0 {
				d.pts = append(d.pts, run)
			}
			ds = append(ds, d)
		}
		for _, d := range ds {
			fmt.Fprintf(b, `<g class="series-line" data-series="%s">`, esc(d.s.Name))
			for _, run := range d.pts {
				if len(run) < 2 {
					continue
				}
				var pts []string
				for _, pt := range run {
					pts = append(pts, fmt.Sprintf("%.1f,%.1f", pt.X, pt.Y))
				}
				fmt.Fprintf(b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2" stroke-opacity="0.85"%s/>`, strings.Join(pts, " "), d.st.Color, dashAttr(d.st.Dash))
			}
			b.WriteString("</g>\n")
		}
		for _, d := range ds {
			fmt.Fprintf(b, `<g class="series" data-series="%s">`, esc(d.s.Name))
			for _, run := range d.pts {
				for _, pt := range run {
					b.WriteString(markerUse(d.st, pt.X, pt.Y))
				}
			}
			b.WriteString("</g>\n")
		}
		b.WriteString("</g>\n")
		y0 += ih + chartGap
	}
	// X axis under the last chart: the mark's value in bold among the ticks, the ticks that do
	// not collide with it, then the axis label and the mark's label, on two rows if they collide.
	ya := y0 - chartGap + 15
	var markL, markR, mx float64
	if f.XMark > 0 {
		mx = xOf(f.XMark)
		l := rate(math.Round(f.XMark/1000) * 1000)
		hw := float64(len(l)) * boldW / 2
		markL, markR = mx-hw-4, mx+hw+4
		fmt.Fprintf(b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%d" stroke="#555"/><text class="xmark-tick" x="%.1f" y="%d" text-anchor="middle" font-weight="bold" fill="#333">%s</text>`+"\n",
			mx, mx, ya-15, ya-11, mx, ya, l)
	}
	for _, t := range xTicks(xlo, xhi) {
		x := xOf(t)
		l := rate(t)
		hw := float64(len(l)) * charW / 2
		if f.XMark > 0 && x+hw > markL && x-hw < markR {
			continue
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, ya, l)
	}
	tw := float64(len([]rune(f.XLabel))) * charW
	tx := float64(x0+iw/2) - tw/2
	if f.XMark > 0 {
		wd := float64(len([]rune(f.XMarkLabel))) * boldW
		right := math.Min(mx+wd/2, float64(x0+iw+marginR-4))
		left := right - wd
		ly := ya + 17
		if left < tx+tw+8 {
			tx = float64(x0) // the axis label moves left, and under it the mark's label if need be
			if left < tx+tw+8 {
				ly += 16
			}
		}
		fmt.Fprintf(b, `<text class="xmark-label" x="%.1f" y="%d" text-anchor="end" font-weight="bold" fill="#333">%s</text>`+"\n", right, ly, esc(f.XMarkLabel))
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%d" fill="#333">%s</text>`+"\n", tx, ya+17, esc(f.XLabel))
	b.WriteString("</g>\n")
}

type yRange struct{ lo, hi float64 }

// yRanges is the Y range of each chart index over every panel.
func yRanges(f Figure) []yRange {
	var out []yRange
	for ci := 0; ; ci++ {
		var c *Chart
		var vals []float64
		for pi := range f.Panels {
			if ci < len(f.Panels[pi].Charts) {
				cc := &f.Panels[pi].Charts[ci]
				if c == nil {
					c = cc
				}
				for _, s := range cc.Series {
					for _, p := range s.Points {
						if !math.IsNaN(p.Y) && !(cc.LogY && p.Y <= 0) {
							vals = append(vals, p.Y)
						}
					}
				}
			}
		}
		if c == nil {
			return out
		}
		out = append(out, chartRange(*c, vals))
	}
}

func chartRange(c Chart, vals []float64) yRange {
	lo, hi := c.YMin, c.YMax
	for _, v := range vals {
		if c.YMax == 0 {
			hi = math.Max(hi, v)
		}
		if c.LogY && c.YMin == 0 && (lo == 0 || v < lo) {
			lo = v
		}
	}
	if c.LogY {
		if lo <= 0 {
			lo = 0.1
		}
		lo = math.Pow(10, math.Floor(math.Log10(lo)))
		hi = math.Pow(10, math.Ceil(math.Log10(math.Max(hi, lo*10))))
	} else if hi <= lo {
		hi = lo + 1
	}
	return yRange{lo, hi}
}

func yTicks(logY bool, r yRange) []float64 {
	var ticks []float64
	if logY {
		for v := r.lo; v <= r.hi*1.0001; v *= 10 {
			ticks = append(ticks, v)
		}
		return ticks
	}
	step := niceStep((r.hi - r.lo) / 4)
	for v := math.Ceil(r.lo/step) * step; v <= r.hi+step*1e-9; v += step {
		ticks = append(ticks, v)
	}
	return ticks
}

// niceStep is the smallest 1-2-5 value at least v.
func niceStep(v float64) float64 {
	if v <= 0 {
		return 1
	}
	d := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if d*m >= v*(1-1e-9) {
			return d * m
		}
	}
	return 10 * d
}

// xRange spans every point and the mark, with some room on both sides.
func xRange(f Figure) (float64, float64) {
	lo, hi := math.Inf(1), 0.0
	see := func(v float64) {
		if v > 0 && !math.IsInf(v, 0) {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	see(f.XMark)
	for _, p := range f.Panels {
		for _, c := range p.Charts {
			for _, s := range c.Series {
				for _, pt := range s.Points {
					see(pt.X)
				}
			}
		}
	}
	if hi == 0 {
		return 1, 10
	}
	return lo / 1.35, hi * 1.35
}

// xTicks are the 1-2-5 values inside [lo, hi].
func xTicks(lo, hi float64) []float64 {
	var out []float64
	for d := math.Pow(10, math.Floor(math.Log10(lo))); d <= hi; d *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if v := d * m; v >= lo && v <= hi {
				out = append(out, v)
			}
		}
	}
	return out
}

// rate writes a packet rate as 500, 20k or 1.5M.
func rate(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func number(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func panelHeight(p Panel) int {
	h := 26 + 56 // title; tick labels, axis label and the mark's label
	for i, c := range p.Charts {
		if i > 0 {
			h += chartGap
		}
		h += chartHeight(c)
	}
	return h + 14
}

func chartHeight(c Chart) int {
	if c.Height > 0 {
		return c.Height
	}
	return defaultCht
}

func legendEntryW(name string) float64 { return 34 + float64(len([]rune(name)))*charW + 22 }

// legendLayout breaks the legend into rows that fit the figure's width.
func legendLayout(names []string, width int) [][]string {
	var rows [][]string
	used := 0.0
	for _, n := range names {
		w := legendEntryW(n)
		if len(rows) == 0 || used+w > float64(width-20) {
			rows = append(rows, nil)
			used = 0
		}
		rows[len(rows)-1] = append(rows[len(rows)-1], n)
		used += w
	}
	return rows
}

func markerUse(st Style, x, y float64) string {
	m := st.Marker
	if _, ok := markerPath[m]; !ok {
		m = Circle
	}
	return fmt.Sprintf(`<use href="#m-%s" x="%.1f" y="%.1f" fill="%s" stroke="white" stroke-width="1"/>`, m, x, y, st.Color)
}

func dashAttr(d string) string {
	if d == "" {
		return ""
	}
	return ` stroke-dasharray="` + d + `"`
}

func esc(s string) string { return html.EscapeString(s) }

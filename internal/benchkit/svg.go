package benchkit

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

// Series is one line of a panel: Y values at the panel's X categories (NaN: no point).
type Series struct {
	Name string
	Y    []float64
}

// Panel is one chart with categorical X values.
type Panel struct {
	Title  string
	YLabel string
	LogY   bool
	YMin   float64 // lower bound (linear) or smallest decade (log); 0 picks from data
	YMax   float64 // 0 picks from data
	Series []Series
}

var palette = []string{"#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"}

// WriteSVG draws panels side by side over the X categories xs and writes an SVG document.
func WriteSVG(w io.Writer, title string, xs []string, panels []Panel) error {
	const pw, ph, ml, mr, mt, mb = 460, 300, 60, 20, 40, 50
	legendH := 18 * maxSeries(panels)
	W, H := pw*len(panels), ph+legendH+30
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%d" y="18" font-size="14" text-anchor="middle">%s</text>`+"\n", W/2, html.EscapeString(title))
	for pi, p := range panels {
		x0 := pi*pw + ml
		y0 := mt
		iw, ih := pw-ml-mr, ph-mt-mb
		lo, hi := p.YMin, p.YMax
		for _, s := range p.Series {
			for _, v := range s.Y {
				if math.IsNaN(v) || p.LogY && v <= 0 {
					continue
				}
				if p.YMax == 0 {
					hi = math.Max(hi, v)
				}
				if p.LogY && p.YMin == 0 && (lo == 0 || v < lo) {
					lo = v
				}
			}
		}
		if p.LogY {
			if lo <= 0 {
				lo = 0.1
			}
			lo = math.Pow(10, math.Floor(math.Log10(lo)))
			hi = math.Pow(10, math.Ceil(math.Log10(math.Max(hi, lo*10))))
		} else if hi <= lo {
			hi = lo + 1
		}
		yOf := func(v float64) float64 {
			if p.LogY {
				v = math.Max(v, lo)
				return float64(y0+ih) - (math.Log10(v)-math.Log10(lo))/(math.Log10(hi)-math.Log10(lo))*float64(ih)
			}
			return float64(y0+ih) - (v-lo)/(hi-lo)*float64(ih)
		}
		xOf := func(i int) float64 {
			if len(xs) == 1 {
				return float64(x0 + iw/2)
			}
			return float64(x0) + float64(i)*float64(iw)/float64(len(xs)-1)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="12" text-anchor="middle">%s</text>`+"\n", x0+iw/2, y0-8, html.EscapeString(p.Title))
		fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#999"/>`+"\n", x0, y0, iw, ih)
		// Y grid.
		var ticks []float64
		if p.LogY {
			for v := lo; v <= hi*1.0001; v *= 10 {
				ticks = append(ticks, v)
			}
		} else {
			for k := 0; k <= 4; k++ {
				ticks = append(ticks, lo+(hi-lo)*float64(k)/4)
			}
		}
		for _, t := range ticks {
			y := yOf(t)
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#eee"/><text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", x0, x0+iw, y, y, x0-4, y+4, trimFloat(t))
		}
		fmt.Fprintf(&b, `<text transform="translate(%d,%d) rotate(-90)" text-anchor="middle">%s</text>`+"\n", x0-45, y0+ih/2, html.EscapeString(p.YLabel))
		for i, x := range xs {
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", xOf(i), y0+ih+16, html.EscapeString(x))
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">flood rate (packets/s)</text>`+"\n", x0+iw/2, y0+ih+34)
		for si, s := range p.Series {
			col := palette[si%len(palette)]
			var pts []string
			for i, v := range s.Y {
				if i >= len(xs) || math.IsNaN(v) {
					continue
				}
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", xOf(i), yOf(v)))
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", xOf(i), yOf(v), col)
			}
			if len(pts) > 1 {
				fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`+"\n", strings.Join(pts, " "), col)
			}
			ly := ph + 10 + 18*si
			fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d" stroke="%s" stroke-width="3"/><text x="%d" y="%d">%s</text>`+"\n", x0, x0+20, ly, ly, col, x0+26, ly+4, html.EscapeString(s.Name))
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("write svg: %w", err)
	}
	return nil
}

func maxSeries(ps []Panel) int {
	n := 0
	for _, p := range ps {
		n = max(n, len(p.Series))
	}
	return n
}

func trimFloat(v float64) string {
	s := fmt.Sprintf("%.3g", v)
	return s
}

package benchkit

import (
	"bytes"
	"encoding/xml"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestSVGStyleAtDistinct(t *testing.T) {
	colors, marks := map[string]int{}, map[Marker]int{}
	for i := range len(markers) {
		st := StyleAt(i)
		if j, ok := colors[st.Color]; ok {
			t.Errorf("styles %d and %d share colour %s", j, i, st.Color)
		}
		if j, ok := marks[st.Marker]; ok {
			t.Errorf("styles %d and %d share marker %s", j, i, st.Marker)
		}
		if markerPath[st.Marker] == "" {
			t.Errorf("style %d: marker %q has no shape", i, st.Marker)
		}
		colors[st.Color], marks[st.Marker] = i, i
	}
	if StyleAt(2) != StyleAt(2) || StyleAt(-1) != StyleAt(0) {
		t.Error("StyleAt is not a fixed sequence")
	}
}

func TestSVGAxes(t *testing.T) {
	tests := []struct {
		lo, hi float64
		ticks  []float64
		labels []string
	}{
		{7400, 690000, []float64{1e4, 2e4, 5e4, 1e5, 2e5, 5e5}, []string{"10k", "20k", "50k", "100k", "200k", "500k"}},
		{1480, 51000, []float64{2e3, 5e3, 1e4, 2e4, 5e4}, []string{"2k", "5k", "10k", "20k", "50k"}},
		{300, 2.5e6, []float64{500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6}, []string{"500", "1k", "2k", "5k", "10k", "20k", "50k", "100k", "200k", "500k", "1M", "2M"}},
	}
	for _, tt := range tests {
		got := xTicks(tt.lo, tt.hi)
		if len(got) != len(tt.ticks) {
			t.Errorf("xTicks(%g, %g) = %v, want %v", tt.lo, tt.hi, got, tt.ticks)
			continue
		}
		for i := range got {
			if math.Abs(got[i]-tt.ticks[i]) > 1e-6*tt.ticks[i] || rate(got[i]) != tt.labels[i] {
				t.Errorf("xTicks(%g, %g)[%d] = %g (%s), want %g (%s)", tt.lo, tt.hi, i, got[i], rate(got[i]), tt.ticks[i], tt.labels[i])
			}
		}
	}
	for _, tt := range []struct {
		r     yRange
		ticks []float64
	}{
		{yRange{0, 20}, []float64{0, 5, 10, 15, 20}},
		{yRange{0, 3}, []float64{0, 1, 2, 3}},
		{yRange{0, 1}, []float64{0, 0.5, 1}},
		{yRange{0, 8}, []float64{0, 2, 4, 6, 8}},
	} {
		if got := yTicks(false, tt.r); !slices.Equal(got, tt.ticks) {
			t.Errorf("yTicks(%v) = %v, want %v", tt.r, got, tt.ticks)
		}
	}
}

// TestSVGGapsAndEscaping: a NaN breaks the line, names are escaped, the result is XML.
func TestSVGGapsAndEscaping(t *testing.T) {
	name := `a<b & "c"`
	f := Figure{
		Title: "t & t", XLabel: "x", XMark: 100, XMarkLabel: "mark < 100", Legend: []string{name},
		Styles: map[string]Style{name: StyleAt(0)},
		Panels: []Panel{{Title: "p", Charts: []Chart{{YLabel: "y", Series: []Series{{Name: name, Points: []Point{
			{10, 1}, {20, 2}, {30, math.NaN()}, {40, 4}, {50, 5}, {60, 6},
		}}}}}}},
	}
	var b bytes.Buffer
	if err := WriteFigure(&b, f); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(b.Bytes(), new(struct{})); err != nil {
		t.Fatalf("not XML: %v", err)
	}
	s := b.String()
	if n := strings.Count(s, "<polyline"); n != 2 {
		t.Errorf("%d polylines, want 2 (the NaN breaks the line)", n)
	}
	if n := strings.Count(s, `<use href="#m-circle"`) - 1; n != 5 { // one is the legend's
		t.Errorf("%d markers, want 5", n)
	}
	if !strings.Contains(s, "a&lt;b &amp; &#34;c&#34;") || !strings.Contains(s, "mark &lt; 100") {
		t.Errorf("names not escaped:\n%s", s)
	}
}

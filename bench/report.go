//go:build linux

package main

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/benchkit"
)

// Results is everything one run measured; it is written as results.json.
type Results struct {
	Machine      Machine          `json:"machine"`
	Command      string           `json:"command"`
	Started      time.Time        `json:"started"`
	Finished     time.Time        `json:"finished"`
	Smoke        bool             `json:"smoke"`
	Scenarios    []string         `json:"scenarios"`
	Daemons      []string         `json:"daemons"`
	FloodSeconds float64          `json:"flood_seconds"`
	Rates        []string         `json:"rates"`
	GenThreads   int              `json:"max_rate_threads"`
	SPAAvailable string           `json:"sesame_spa_available"`
	SPANote      string           `json:"sesame_spa_note,omitempty"`
	Ran          []ScenarioTime   `json:"ran"`
	SetupSeconds float64          `json:"setup_seconds"` // building beds and starting daemons
	Errors       []string         `json:"errors,omitempty"`
	Calibration  []Calibration    `json:"calibration"`
	Latency      []LatencyRow     `json:"latency"`
	Flood        []FloodRow       `json:"flood"`
	Noise        []NoiseRow       `json:"noise"`
	Concurrency  []ConcurrencyRow `json:"concurrency"`
	Sweep        []SweepRow       `json:"sweep"`
	Scale        []ScaleRow       `json:"scale"`
	Memory       []MemoryRow      `json:"memory"`
}

// Machine describes the host.
type Machine struct {
	CPU    string   `json:"cpu"`
	CPUs   int      `json:"cpus"`
	Memory string   `json:"memory"`
	Kernel string   `json:"kernel"`
	Go     string   `json:"go"`
	Tools  []string `json:"tools"`
}

// ScenarioTime is how long a scenario took.
type ScenarioTime struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// Calibration is the bed's top injection rate with some sending threads.
type Calibration struct {
	Threads     int                  `json:"threads"`
	Flood       benchkit.FloodResult `json:"flood"`
	ServerRxPPS float64              `json:"server_rx_pps"`
}

// errNotes keeps the first few distinct errors of a row.
type errNotes struct {
	Errors []string `json:"errors,omitempty"`
}

func (n *errNotes) note(err error) {
	s := err.Error()
	if len(n.Errors) < 3 && !slices.Contains(n.Errors, s) {
		n.Errors = append(n.Errors, s)
	}
}

// LatencyRow is the latency scenario of one subject.
type LatencyRow struct {
	Subject      string           `json:"subject"`
	NotAvailable string           `json:"not_available,omitempty"`
	Tries        int              `json:"tries"`
	Failures     int              `json:"failures"`
	Latency      benchkit.Summary `json:"latency"`
	RSSMiB       float64          `json:"rss_mib"`
	errNotes
}

// FloodRow is one subject under one flood.
type FloodRow struct {
	Target       string               `json:"target"`
	Subject      string               `json:"subject"`
	Rate         string               `json:"rate"`
	NotAvailable string               `json:"not_available,omitempty"`
	Flood        benchkit.FloodResult `json:"flood"`
	ServerRxPPS  float64              `json:"server_rx_pps"`
	Tries        int                  `json:"tries"`
	Opens        int                  `json:"opens"`
	Latency      benchkit.Summary     `json:"latency"`
	CPUPercent   float64              `json:"daemon_cpu_percent"`
	PeakRSSMiB   float64              `json:"daemon_peak_rss_mib"`
	DaemonAlive  bool                 `json:"daemon_alive"`
	errNotes
}

// NoiseRow is one subject under spoofed noise from its own address.
type NoiseRow struct {
	Subject string           `json:"subject"`
	RatePPS float64          `json:"rate_pps"`
	Tries   int              `json:"tries"`
	Opens   int              `json:"opens"`
	Latency benchkit.Summary `json:"latency"`
	errNotes
}

// ConcurrencyRow is many sources opening at once.
type ConcurrencyRow struct {
	Subject        string  `json:"subject"`
	NotAvailable   string  `json:"not_available,omitempty"`
	Sources        int     `json:"sources"`
	Opened         int     `json:"opened"`
	SendMS         float64 `json:"send_ms"`
	AllOpenSeconds float64 `json:"last_open_seconds"`
}

// SweepRow is one blind sweep.
type SweepRow struct {
	Subject     string               `json:"subject"`
	Order       string               `json:"order"`
	Packets     uint64               `json:"packets"`
	Flood       benchkit.FloodResult `json:"flood"`
	ServerRxPPS float64              `json:"server_rx_pps"`
	Opened      bool                 `json:"door_opened"`
	DaemonAlive bool                 `json:"daemon_alive"`
}

// ScaleRow is one subject with some live grants.
type ScaleRow struct {
	Subject     string           `json:"subject"`
	Grants      int              `json:"grants"`
	FillSeconds float64          `json:"fill_seconds"`
	AddTries    int              `json:"add_tries"`
	Add         benchkit.Summary `json:"add_one_open_latency"`
	Connect     benchkit.Summary `json:"connect_latency"`
	ConnPerSec  float64          `json:"connections_per_second"`
	ConnFailed  int              `json:"connect_failures"`
	errNotes
}

// MemoryRow is a subject after many distinct spoofed sources.
type MemoryRow struct {
	Subject      string               `json:"subject"`
	Sources      uint64               `json:"sources"`
	Flood        benchkit.FloodResult `json:"flood"`
	ServerRxPPS  float64              `json:"server_rx_pps"`
	RSSBeforeMiB float64              `json:"rss_before_mib"`
	RSSAfterMiB  float64              `json:"rss_after_mib"`
	PeakRSSMiB   float64              `json:"peak_rss_mib"`
	CPUSeconds   float64              `json:"cpu_seconds"`
	DaemonAlive  bool                 `json:"daemon_alive"`
}

func newResults(o options, args []string) *Results {
	return &Results{
		Machine: machine(), Command: "go run ./bench " + strings.Join(args, " "), Started: time.Now(), Smoke: o.smoke,
		Scenarios: o.scenarios, Daemons: o.daemons, FloodSeconds: o.duration.Seconds(), Rates: o.rates, GenThreads: o.genThreads,
	}
}

func f2(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10:
		return fmt.Sprintf("%.2f", v)
	case v < 100:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func kpps(v float64) string { return fmt.Sprintf("%.0fk", v/1000) }

func (r *Results) markdown() string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# sesame bench results\n\n")
	w("Command: `%s`  \nStarted %s, took %s. Machine: %s × %d, %s, Linux %s, %s.  \n",
		r.Command, r.Started.Format(time.RFC3339), r.Finished.Sub(r.Started).Round(time.Second), r.Machine.CPU, r.Machine.CPUs, r.Machine.Memory, r.Machine.Kernel, r.Machine.Go)
	w("Tools: %s.  \n", strings.Join(r.Machine.Tools, "; "))
	w("Sesame SPA server: %s %s\n\n", orDash(r.SPAAvailable), r.SPANote)
	for _, e := range r.Errors {
		w("**Error:** %s\n\n", e)
	}
	if len(r.Calibration) > 0 {
		w("## Bed: highest injection rate\n\n| threads | sent | server received |\n|---|---|---|\n")
		for _, c := range r.Calibration {
			w("| %d | %s pps | %s pps |\n", c.Threads, kpps(c.Flood.Achieved), kpps(c.ServerRxPPS))
		}
		w("\n")
	}
	if len(r.Latency) > 0 {
		ref := map[string]float64{}
		for _, l := range r.Latency {
			ref[l.Subject] = l.Latency.P50
		}
		w("## Latency: last packet leaving the client → greeting and echo through the gate\n\n")
		w("| daemon | tries | failures | p50 ms | p95 ms | p99 ms | max ms | p50 vs knockd | p50 vs fwknopd | RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|\n")
		for _, l := range r.Latency {
			if l.NotAvailable != "" {
				w("| %s | not available | | | | | | | | |\n", l.Subject)
				continue
			}
			w("| %s | %d | %d | %s | %s | %s | %s | %s | %s | %s |\n", l.Subject, l.Tries, l.Failures, f2(l.Latency.P50), f2(l.Latency.P95), f2(l.Latency.P99), f2(l.Latency.Max),
				ratio(ref["knockd"], l.Latency.P50), ratio(ref["fwknopd (SPA, UDP)"], l.Latency.P50), f2(l.RSSMiB))
		}
		w("\n")
	}
	if len(r.Flood) > 0 {
		w("## Floods: legitimate opens during %.0f s of spoofed junk\n\n", r.FloodSeconds)
		w("Cell: opens/tries, median latency (ms), daemon CPU %%, daemon peak RSS (MiB). Rate: asked → sent (server received).\n\n")
		var targets []string
		for _, f := range r.Flood {
			if !slices.Contains(targets, f.Target) {
				targets = append(targets, f.Target)
			}
		}
		for _, t := range targets {
			var subs []string
			for _, f := range r.Flood {
				if f.Target == t && !slices.Contains(subs, f.Subject) {
					subs = append(subs, f.Subject)
				}
			}
			w("### Flood at %s\n\n| rate |", t)
			for _, s := range subs {
				w(" %s |", s)
			}
			w("\n|---|%s\n", strings.Repeat("---|", len(subs)))
			for _, rate := range r.Rates {
				var sent string
				var cells []string
				for _, s := range subs {
					f := find(r.Flood, func(f FloodRow) bool { return f.Target == t && f.Subject == s && f.Rate == rate })
					if f == nil {
						cells = append(cells, "")
						continue
					}
					if f.NotAvailable != "" {
						cells = append(cells, "not available")
						continue
					}
					if sent == "" {
						sent = fmt.Sprintf(" → %s (%s)", kpps(f.Flood.Achieved), kpps(f.ServerRxPPS))
					}
					c := fmt.Sprintf("**%d/%d**, %s ms, %s %%, %s MiB", f.Opens, f.Tries, f2(f.Latency.P50), f2(f.CPUPercent), f2(f.PeakRSSMiB))
					if !f.DaemonAlive {
						c += " (daemon died)"
					}
					cells = append(cells, c)
				}
				w("| %s%s | %s |\n", rate, sent, strings.Join(cells, " | "))
			}
			w("\n")
		}
	}
	if len(r.Noise) > 0 {
		w("## Spoofed noise from the legitimate client's own address at the knock ports\n\n| daemon | noise pps | opens | p50 ms | p95 ms |\n|---|---|---|---|---|\n")
		for _, n := range r.Noise {
			w("| %s | %.0f | %d/%d | %s | %s |\n", n.Subject, n.RatePPS, n.Opens, n.Tries, f2(n.Latency.P50), f2(n.Latency.P95))
		}
		w("\n")
	}
	if len(r.Concurrency) > 0 {
		w("## Concurrency: sources opening at once (interleaved frames)\n\n| daemon | opened | all frames sent in | last open after |\n|---|---|---|---|\n")
		for _, c := range r.Concurrency {
			if c.NotAvailable != "" {
				w("| %s | not available | | |\n", c.Subject)
				continue
			}
			w("| %s | %d/%d | %s ms | %s s |\n", c.Subject, c.Opened, c.Sources, f2(c.SendMS), f2(c.AllOpenSeconds))
		}
		w("\n")
	}
	if len(r.Sweep) > 0 {
		w("## Blind sweep: one source, every TCP and UDP port, over and over\n\n| daemon | order | packets | rate | door opened |\n|---|---|---|---|---|\n")
		for _, s := range r.Sweep {
			w("| %s | %s | %d | %s pps | %s |\n", s.Subject, s.Order, s.Packets, kpps(s.Flood.Achieved), yesNo(s.Opened))
		}
		w("\n")
	}
	if len(r.Scale) > 0 {
		w("## Scale: live grants\n\n| daemon | grants | fill | add one grant: open p50 ms (n) | connections/s | connect+echo p50 ms | p99 ms | vs 0 grants (add, conn/s) |\n|---|---|---|---|---|---|---|---|\n")
		base := map[string]ScaleRow{}
		for _, s := range r.Scale {
			if s.Grants == 0 {
				base[s.Subject] = s
			}
		}
		for _, s := range r.Scale {
			b0 := base[s.Subject]
			w("| %s | %d | %s s | %s (%d/%d) | %.0f | %s | %s | %s, %s |\n", s.Subject, s.Grants, f2(s.FillSeconds), f2(s.Add.P50), s.Add.N, s.AddTries, s.ConnPerSec,
				fmt.Sprintf("%.3f", s.Connect.P50), fmt.Sprintf("%.3f", s.Connect.P99), pct(s.Add.P50, b0.Add.P50), pct(s.ConnPerSec, b0.ConnPerSec))
		}
		w("\n")
	}
	if len(r.Memory) > 0 {
		w("## Memory: distinct spoofed sources, one knock each\n\n| daemon | sources | rate | RSS before | RSS after | peak RSS | CPU s |\n|---|---|---|---|---|---|---|\n")
		for _, m := range r.Memory {
			w("| %s | %d | %s pps | %s MiB | %s MiB | %s MiB | %s |\n", m.Subject, m.Sources, kpps(m.Flood.Achieved), f2(m.RSSBeforeMiB), f2(m.RSSAfterMiB), f2(m.PeakRSSMiB), f2(m.CPUSeconds))
		}
		w("\n")
	}
	return b.String()
}

func find[T any](l []T, f func(T) bool) *T {
	for i := range l {
		if f(l[i]) {
			return &l[i]
		}
	}
	return nil
}

func ratio(ref, v float64) string {
	if ref == 0 || v == 0 {
		return "–"
	}
	if ref >= v {
		return fmt.Sprintf("%.0f× faster", ref/v)
	}
	return fmt.Sprintf("%.1f× slower", v/ref)
}

func pct(v, base float64) string {
	if base == 0 {
		return "–"
	}
	return fmt.Sprintf("%+.0f %%", 100*(v-base)/base)
}

func yesNo(b bool) string {
	if b {
		return "**yes**"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "not checked"
	}
	return s
}

// plotSubjects is the order of the plot's legend; a subject's place here fixes its colour and
// marker, so a daemon looks the same in every panel and in every run, whichever daemons ran.
var plotSubjects = []subject{{dSesame, mKnock}, {dSesame, mSPA}, {dKnockd, mKnock}, {dFwknopd, mSPA}}

// plotTargets is the order of the plot's panels.
var plotTargets = []string{tRandom, tKnock, tSPABytes, tSPAWrong}

// plot draws the flood scenario: one panel per flood target, each with the legitimate opens and
// their median latency against the rate the generator sent, one series per daemon.
func (r *Results) plot(w io.Writer) error {
	return benchkit.WriteFigure(w, r.floodFigure())
}

// floodFigure is the flood plot of r; it depends on nothing but r.
func (r *Results) floodFigure() benchkit.Figure {
	var names, targets []string
	for _, s := range plotSubjects {
		names = append(names, s.String())
	}
	targets = append(targets, plotTargets...)
	tries := 0
	var rows []FloodRow
	for _, f := range r.Flood {
		if f.NotAvailable != "" || f.Tries == 0 {
			continue
		}
		rows = append(rows, f)
		tries = max(tries, f.Tries)
		if !slices.Contains(names, f.Subject) {
			names = append(names, f.Subject)
		}
		if !slices.Contains(targets, f.Target) {
			targets = append(targets, f.Target)
		}
	}
	fig := benchkit.Figure{
		Title:   "Legitimate opens during spoofed floods, by flood target",
		XLabel:  "flood rate sent (packets/s, log scale)",
		Columns: 2,
		Styles:  map[string]benchkit.Style{},
	}
	fig.Subtitle = fmt.Sprintf("%s × %d CPUs, run of %s: %d legitimate opens tried during each %g s flood",
		orDash(r.Machine.CPU), r.Machine.CPUs, r.Started.Format("2006-01-02 15:04"), tries, r.FloodSeconds)
	for i, n := range names {
		fig.Styles[n] = benchkit.StyleAt(i)
	}
	fig.XMark, fig.XMarkLabel = bedMax(r)
	inLegend := map[string]bool{}
	for _, t := range targets {
		opens := benchkit.Chart{YLabel: fmt.Sprintf("opens of %d", tries), YMin: 0, YMax: float64(tries), Height: 110}
		lat := benchkit.Chart{YLabel: "median open, ms (log)", LogY: true, Height: 150, RefY: 10, RefLabel: "10 ms target"}
		for _, n := range names {
			var pts []FloodRow
			for _, f := range rows {
				if f.Target == t && f.Subject == n && floodX(f) > 0 {
					pts = append(pts, f)
				}
			}
			if len(pts) == 0 {
				continue
			}
			inLegend[n] = true
			slices.SortStableFunc(pts, func(a, b FloodRow) int { return cmp.Compare(floodX(a), floodX(b)) })
			so, sl := benchkit.Series{Name: n}, benchkit.Series{Name: n}
			for _, f := range pts {
				x := floodX(f)
				so.Points = append(so.Points, benchkit.Point{X: x, Y: float64(f.Opens) * float64(tries) / float64(f.Tries)})
				y := math.NaN()
				if f.Opens > 0 {
					y = f.Latency.P50
				}
				sl.Points = append(sl.Points, benchkit.Point{X: x, Y: y})
			}
			opens.Series = append(opens.Series, so)
			lat.Series = append(lat.Series, sl)
		}
		if len(opens.Series) > 0 {
			fig.Panels = append(fig.Panels, benchkit.Panel{Title: "Flood at " + t, Charts: []benchkit.Chart{opens, lat}})
		}
	}
	for _, n := range names {
		if inLegend[n] {
			fig.Legend = append(fig.Legend, n)
		}
	}
	return fig
}

// floodX is the rate a flood row's generator sent, or the rate asked for when it sent nothing.
func floodX(f FloodRow) float64 {
	if f.Flood.Achieved > 0 {
		return f.Flood.Achieved
	}
	if f.Flood.Requested > 0 {
		return f.Flood.Requested
	}
	v, err := strconv.ParseFloat(f.Rate, 64)
	if err != nil {
		return 0
	}
	return v
}

// bedMax is the bed's highest measured injection rate (the calibration scenario), or without
// it the fastest flood of the run, and its label.
func bedMax(r *Results) (float64, string) {
	var v float64
	for _, c := range r.Calibration {
		v = max(v, c.Flood.Achieved)
	}
	if v > 0 {
		return v, fmt.Sprintf("bed max ≈ %.0f kpps", v/1000)
	}
	for _, f := range r.Flood {
		if f.NotAvailable == "" {
			v = max(v, f.Flood.Achieved)
		}
	}
	if v > 0 {
		return v, fmt.Sprintf("fastest flood ≈ %.0f kpps", v/1000)
	}
	return 0, ""
}

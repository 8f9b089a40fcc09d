//go:build linux

// Command bench measures sesame, knockd and fwknopd under attack in throw-away network namespaces.
//
// Run it as root from the repository root:
//
//	go run ./bench -out /tmp/bench              # every scenario, every daemon
//	go run ./bench -smoke -out /tmp/smoke       # a few seconds, sesame only
//	go run ./bench -scenarios latency,flood -daemons sesame,knockd -rates 10000,max -duration 5s
//	go run ./bench -replot /tmp/bench/results.json  # redraw results.md and flood.svg, run nothing
//	go run ./bench fleet -out /tmp/fleet         # three gateways on Redis against one host
//
// Every load is bounded in rate, count and time and stays inside the bench's namespaces; all
// namespaces and daemons are removed at the end, also on error or Ctrl-C. Results go to
// DIR/results.json, DIR/results.md and DIR/flood.svg.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/spa"
)

var allScenarios = []string{"calibrate", "latency", "flood", "noise", "concurrency", "sweep", "scale", "memory"}

type options struct {
	scenarios    []string
	daemons      []string
	duration     time.Duration
	rates        []string
	out          string
	smoke        bool
	sesameBin    string
	genThreads   int
	latencyTries int
	floodTries   int
	noiseRates   []float64
	concurrent   int
	sweepPackets uint64
	scaleLevels  []int
	memSources   uint64
	memRate      float64
	replot       string
}

type harness struct {
	ctx  context.Context
	opts options
	res  *Results
	log  func(format string, args ...any)

	sesameBin    string
	sesameKey    spa.SharedKey
	fwKeys       fwknop.Keys
	spaAvailable string // "", "yes" or "no"
	spaNote      string
	idle         []*netnsbed.Bed // beds free for the next env
	sesameEnv    []string        // extra environment of sesame (profiling)
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "fleet" {
		return runFleet(args[1:]) // a fleet of three gateways on Redis (docs/FLEET.md)
	}
	o, err := parseOptions(args)
	if err != nil {
		return err
	}
	if o.replot != "" {
		return replot(o)
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: the bench creates network namespaces and starts firewall daemons")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer cleanupAll()
	h := &harness{ctx: ctx, opts: o, fwKeys: fwknop.Keys{Key: randBytes(32), HMACKey: randBytes(64)}}
	h.log = func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("output dir: %w", err)
	}
	if h.sesameBin = o.sesameBin; h.sesameBin == "" {
		dir, err := os.MkdirTemp("", "sesame-bench-bin-")
		if err != nil {
			return fmt.Errorf("temp dir: %w", err)
		}
		defer os.RemoveAll(dir)
		h.sesameBin = filepath.Join(dir, "sesame")
		cmd := exec.Command("go", "build", "-o", h.sesameBin, "github.com/sesame-knock/sesame/cmd/sesame")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build sesame: %w\n%s", err, out)
		}
	}
	h.res = newResults(o, args)
	err = h.runAll()
	h.res.Finished = time.Now()
	h.res.SPAAvailable, h.res.SPANote = h.spaAvailable, h.spaNote
	if werr := h.write(); werr != nil {
		err = errors.Join(err, werr)
	}
	return err
}

func parseOptions(args []string) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o options
	scen := fs.String("scenarios", strings.Join(allScenarios, ","), "comma-separated `LIST` of scenarios: "+strings.Join(allScenarios, ","))
	daemons := fs.String("daemons", "sesame,knockd,fwknopd", "comma-separated `LIST` of daemons")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each flood")
	rates := fs.String("rates", "10000,50000,100000,200000,max", "flood rates in packets/s; max is as fast as the bed goes")
	fs.StringVar(&o.out, "out", "bench-out", "output `DIR`")
	fs.BoolVar(&o.smoke, "smoke", false, "a few seconds in all: tiny rates and counts, sesame only unless -daemons is given")
	fs.StringVar(&o.sesameBin, "sesame", "", "sesame binary to run (default: go build ./cmd/sesame)")
	fs.IntVar(&o.genThreads, "gen-threads", 2, "sending threads of the max-rate flood")
	fs.Uint64Var(&o.sweepPackets, "sweep-packets", 10_000_000, "packets per blind sweep")
	fs.IntVar(&o.latencyTries, "latency-tries", 200, "tries of the latency scenario")
	fs.StringVar(&o.replot, "replot", "", "redraw results.md and flood.svg from a results.json `FILE` into -out (default: FILE's directory); runs nothing")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.replot != "" && !set["out"] {
		o.out = filepath.Dir(o.replot)
	}
	o.scenarios = splitList(*scen)
	for _, s := range o.scenarios {
		if !contains(allScenarios, s) {
			return o, fmt.Errorf("unknown scenario %q (want %s)", s, strings.Join(allScenarios, ","))
		}
	}
	o.daemons = splitList(*daemons)
	for _, d := range o.daemons {
		if d != dSesame && d != dKnockd && d != dFwknopd {
			return o, fmt.Errorf("unknown daemon %q (want sesame, knockd or fwknopd)", d)
		}
	}
	o.rates = splitList(*rates)
	o.floodTries, o.concurrent, o.memSources, o.memRate = 20, 1000, 1_000_000, 100_000
	o.noiseRates = []float64{10, 100, 1000}
	o.scaleLevels = []int{0, 1000, 10000, 100000}
	if o.smoke {
		if !set["daemons"] {
			o.daemons = []string{dSesame}
		}
		if !set["rates"] {
			o.rates = []string{"2000"}
		}
		if !set["duration"] {
			o.duration = time.Second
		}
		if !set["latency-tries"] {
			o.latencyTries = 5
		}
		if !set["sweep-packets"] {
			o.sweepPackets = 20000
		}
		o.floodTries, o.concurrent, o.memSources, o.memRate = 3, 20, 20000, 50000
		o.noiseRates = []float64{100}
		o.scaleLevels = []int{0, 100}
	}
	for _, r := range o.rates {
		if r == "max" {
			continue
		}
		if v, err := strconv.ParseFloat(r, 64); err != nil || v <= 0 || v > 10_000_000 {
			return o, fmt.Errorf("rate %q: want packets/s in 1-10000000 or max", r)
		}
	}
	if o.duration <= 0 || o.duration > 2*time.Minute {
		return o, errors.New("-duration: want 1ms to 2m")
	}
	if o.sweepPackets > 100_000_000 {
		return o, errors.New("-sweep-packets: at most 100 million")
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func (h *harness) want(scenario string) bool { return contains(h.opts.scenarios, scenario) }

func (h *harness) runAll() error {
	steps := []struct {
		name string
		fn   func() error
	}{
		{"calibrate", h.calibrate},
		{"latency", h.latency},
		{"flood", h.flood},
		{"noise", h.noise},
		{"concurrency", h.concurrency},
		{"sweep", h.sweep},
		{"scale", h.scale},
		{"memory", h.memory},
	}
	var errs []error
	for _, s := range steps {
		if !h.want(s.name) {
			continue
		}
		if h.ctx.Err() != nil {
			return h.ctx.Err()
		}
		t0 := time.Now()
		h.log("scenario %s", s.name)
		if err := s.fn(); err != nil {
			h.log("scenario %s: %v", s.name, err)
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
			h.res.Errors = append(h.res.Errors, fmt.Sprintf("%s: %v", s.name, err))
		}
		h.res.Ran = append(h.res.Ran, ScenarioTime{Name: s.name, Seconds: time.Since(t0).Seconds()})
		// Partial results survive a later failure or an interrupt.
		h.res.SPAAvailable, h.res.SPANote = h.spaAvailable, h.spaNote
		if err := h.write(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (h *harness) write() error { return writeResults(h.opts.out, h.res) }

// writeResults writes res as results.json, results.md and flood.svg into dir.
func writeResults(dir string, res *Results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), b, 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return writeReport(dir, res)
}

// writeReport writes res as results.md and flood.svg into dir.
func writeReport(dir string, res *Results) error {
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(res.markdown()), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	f, err := os.Create(filepath.Join(dir, "flood.svg"))
	if err != nil {
		return fmt.Errorf("write plot: %w", err)
	}
	if err := res.plot(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write plot: %w", err)
	}
	return nil
}

// replot redraws the report of an earlier run from its results.json.
func replot(o options) error {
	b, err := os.ReadFile(o.replot)
	if err != nil {
		return fmt.Errorf("replot: %w", err)
	}
	var res Results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("replot %s: %w", o.replot, err)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("output dir: %w", err)
	}
	return writeReport(o.out, &res)
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				_, m.CPU, _ = strings.Cut(l, ": ")
				break
			}
		}
	}
	var u syscall.Utsname
	if syscall.Uname(&u) == nil {
		m.Kernel = cstr(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		l, _, _ := strings.Cut(string(b), "\n")
		m.Memory = strings.Join(strings.Fields(l)[1:], " ")
	}
	for _, c := range [][]string{{"knockd", "-V"}, {"fwknopd", "--version"}, {"nft", "--version"}, {"iptables", "--version"}} {
		out, _ := exec.Command(c[0], c[1:]...).CombinedOutput()
		m.Tools = append(m.Tools, firstLine(string(out)))
	}
	return m
}

func cstr(b []int8) string {
	var s []byte
	for _, c := range b {
		if c == 0 {
			break
		}
		s = append(s, byte(c))
	}
	return string(s)
}

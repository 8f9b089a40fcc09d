//go:build linux

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/benchkit"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netport"
)

// subjects lists the subjects of the selected daemons that open by one of methods.
func (h *harness) subjects(methods ...string) []subject {
	var out []subject
	for _, d := range h.opts.daemons {
		for _, m := range methods {
			switch {
			case d == dSesame:
				out = append(out, subject{d, m})
			case d == dKnockd && m == mKnock, d == dFwknopd && m == mSPA:
				out = append(out, subject{d, m})
			}
		}
	}
	return out
}

// spaMissing reports (and records) that sesame's SPA server cannot be measured.
func (h *harness) spaMissing(s subject) bool {
	return s.Daemon == dSesame && s.Method == mSPA && h.spaAvailable == "no"
}

// --- patterns ---------------------------------------------------------------------------

var reserved = map[uint16]bool{7000: true, 8000: true, 9000: true, svcPort: true, spaPort: true}

func randomSrc(rng *benchkit.Rand) netip.Addr { return benchkit.Addr10(rng.Uint32() >> 8) }

func sport(rng *benchkit.Rand) uint16 { return uint16(1024 + rng.Intn(64000)) }

var junk = make([]byte, 16)

// patRandomPorts: TCP SYN or UDP to a random port that is none of the bed's knock, SPA or
// service ports, from a random spoofed source.
func patRandomPorts(l *benchkit.Link) benchkit.Pattern {
	return func(buf []byte, i uint64, rng *benchkit.Rand) int {
		v := rng.Uint64()
		port := uint16(v>>16) | 1
		for reserved[port] {
			port++
		}
		if v&1 == 0 {
			return benchkit.WriteTCPSYN(buf, l, randomSrc(rng), netnsbed.Server4, sport(rng), port, uint32(v>>32))
		}
		return benchkit.WriteUDP(buf, l, randomSrc(rng), netnsbed.Server4, sport(rng), port, junk)
	}
}

// patKnockPorts: a random element of the door's sequence from a random spoofed source.
func patKnockPorts(l *benchkit.Link) benchkit.Pattern {
	return func(buf []byte, i uint64, rng *benchkit.Rand) int {
		el := knockSeq[rng.Intn(len(knockSeq))]
		return writeKnock(buf, l, randomSrc(rng), el, rng)
	}
}

// patVictimNoise: SYNs from the victim's own address src to the TCP knock ports (7000 and 9000).
// The UDP knock is left out so that the noise alone can never complete the sequence and open
// the door for the victim; it can only break the victim's sequences.
func patVictimNoise(l *benchkit.Link, src netip.Addr) benchkit.Pattern {
	return func(buf []byte, i uint64, rng *benchkit.Rand) int {
		el := knockSeq[0]
		if rng.Uint64()&1 == 1 {
			el = knockSeq[2]
		}
		return writeKnock(buf, l, src, el, rng)
	}
}

func writeKnock(buf []byte, l *benchkit.Link, src netip.Addr, el netport.Port, rng *benchkit.Rand) int {
	if el.Proto == netport.TCP {
		return benchkit.WriteTCPSYN(buf, l, src, netnsbed.Server4, sport(rng), el.Num, rng.Uint32())
	}
	return benchkit.WriteUDP(buf, l, src, netnsbed.Server4, sport(rng), el.Num, junk)
}

// patSPA: a payload of pool to the SPA port from a random spoofed source.
func patSPA(l *benchkit.Link, pool [][]byte) benchkit.Pattern {
	return func(buf []byte, i uint64, rng *benchkit.Rand) int {
		return benchkit.WriteUDP(buf, l, randomSrc(rng), netnsbed.Server4, sport(rng), spaPort, pool[rng.Intn(len(pool))])
	}
}

func randomPayloads(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = randBytes(100 + i%200)
	}
	return out
}

// --- calibrate --------------------------------------------------------------------------

func (h *harness) calibrate() error {
	e, err := h.newEnv("none", 0)
	if err != nil {
		return err
	}
	defer e.close()
	d := 2 * time.Second
	if h.opts.smoke {
		d = 300 * time.Millisecond
	}
	for _, threads := range []int{1, 2} {
		r, rx, err := e.floodFor(benchkit.FloodConfig{Rate: 0, Duration: d, Threads: threads, Pattern: patRandomPorts(&e.link)})
		if err != nil {
			return err
		}
		c := Calibration{Threads: threads, Flood: r, ServerRxPPS: rx}
		h.res.Calibration = append(h.res.Calibration, c)
		h.log("  max rate, %d thread(s): sent %.0f pps, server received %.0f pps", threads, r.Achieved, rx)
	}
	return nil
}

// floodFor runs a flood from e's client side to completion and also returns the packet rate the
// server interface received.
func (e *env) floodFor(cfg benchkit.FloodConfig) (benchkit.FloodResult, float64, error) {
	cfg.NS, cfg.Ifname, cfg.DstMAC = e.bed.Client, e.bed.ClientIf, e.link.Dst
	c0, _ := benchkit.ReadIf(e.bed.Server, e.bed.ServerIf)
	r, err := benchkit.Flood(e.ctx, cfg)
	c1, _ := benchkit.ReadIf(e.bed.Server, e.bed.ServerIf)
	rx := 0.0
	if r.Elapsed > 0 {
		rx = float64(c1.RxPackets-c0.RxPackets) / r.Elapsed.Seconds()
	}
	return r, rx, err
}

// --- latency ----------------------------------------------------------------------------

func (h *harness) latency() error {
	for _, s := range h.subjects(mKnock, mSPA) {
		if h.spaMissing(s) {
			h.res.Latency = append(h.res.Latency, LatencyRow{Subject: s.String(), NotAvailable: h.spaNote})
			continue
		}
		e, err := h.newEnv(s.Daemon, h.opts.latencyTries)
		if err != nil {
			return err
		}
		if h.spaMissing(s) {
			e.close()
			h.res.Latency = append(h.res.Latency, LatencyRow{Subject: s.String(), NotAvailable: h.spaNote})
			continue
		}
		row := LatencyRow{Subject: s.String(), Tries: h.opts.latencyTries}
		var lat []time.Duration
		for range h.opts.latencyTries {
			if h.ctx.Err() != nil {
				break
			}
			a, err := e.addr()
			if err != nil {
				e.close()
				return err
			}
			l, err := e.open(s, a, 3*time.Second)
			if err != nil {
				row.Failures++
				row.note(err)
			} else {
				lat = append(lat, l)
			}
			time.Sleep(20 * time.Millisecond)
		}
		row.Latency = benchkit.Summarize(lat)
		u := e.d.usage()
		row.RSSMiB = mib(u.RSS)
		e.close()
		h.res.Latency = append(h.res.Latency, row)
		h.log("  %s: p50 %.2f ms p95 %.2f ms p99 %.2f ms, %d failures", row.Subject, row.Latency.P50, row.Latency.P95, row.Latency.P99, row.Failures)
	}
	return nil
}

// --- flood ------------------------------------------------------------------------------

// Flood targets.
const (
	tRandom   = "random ports"
	tKnock    = "knock ports"
	tSPABytes = "SPA port, random bytes"
	tSPAWrong = "SPA port, wrong key"
)

func (h *harness) flood() error {
	plan := []struct {
		target  string
		methods []string
	}{
		{tRandom, []string{mKnock, mSPA}},
		{tKnock, []string{mKnock}},
		{tSPABytes, []string{mSPA}},
		{tSPAWrong, []string{mSPA}},
	}
	for _, p := range plan {
		for _, s := range h.subjects(p.methods...) {
			for _, rate := range h.opts.rates {
				if h.ctx.Err() != nil {
					return h.ctx.Err()
				}
				row, err := h.floodCell(p.target, s, rate)
				if err != nil {
					return err
				}
				h.res.Flood = append(h.res.Flood, row)
				if row.NotAvailable == "" {
					h.log("  %s / %s @ %s: achieved %.0f pps (server rx %.0f), %d/%d opens, p50 %.2f ms, cpu %.1f%%, peak rss %.1f MiB",
						p.target, row.Subject, rate, row.Flood.Achieved, row.ServerRxPPS, row.Opens, row.Tries, row.Latency.P50, row.CPUPercent, row.PeakRSSMiB)
				}
			}
		}
	}
	return nil
}

func (h *harness) floodCell(target string, s subject, rate string) (FloodRow, error) {
	row := FloodRow{Target: target, Subject: s.String(), Rate: rate, Tries: h.opts.floodTries}
	if h.spaMissing(s) {
		row.NotAvailable = h.spaNote
		return row, nil
	}
	e, err := h.newEnv(s.Daemon, h.opts.floodTries+5)
	if err != nil {
		return row, err
	}
	defer e.close()
	if h.spaMissing(s) {
		row.NotAvailable = h.spaNote
		return row, nil
	}
	cfg := benchkit.FloodConfig{Threads: 1}
	if rate == "max" {
		cfg.Threads = h.opts.genThreads
	} else {
		cfg.Rate, _ = strconv.ParseFloat(rate, 64)
		if cfg.Rate > 100_000 {
			// One thread tops out near 130k pps on the reference bed; share the bucket.
			cfg.Threads = h.opts.genThreads
		}
	}
	switch target {
	case tRandom:
		cfg.Pattern = patRandomPorts(&e.link)
	case tKnock:
		cfg.Pattern = patKnockPorts(&e.link)
	case tSPABytes:
		cfg.Pattern = patSPA(&e.link, randomPayloads(256))
	case tSPAWrong:
		pool, err := h.wrongKeyPackets(s.Daemon, 64)
		if err != nil {
			return row, err
		}
		cfg.Pattern = patSPA(&e.link, pool)
	}
	// The flood lasts the scenario's duration, longer only while slow tries finish, and
	// never more than 30 s beyond it.
	cfg.Duration = h.opts.duration + 30*time.Second
	pid := e.d.pid()
	_ = benchkit.ResetPeak(pid)
	u0, _ := benchkit.ReadProc(pid)
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	type result struct {
		r   benchkit.FloodResult
		rx  float64
		err error
	}
	done := make(chan result, 1)
	go func() {
		fe := *e
		fe.ctx = ctx
		r, rx, err := fe.floodFor(cfg)
		done <- result{r, rx, err}
	}()
	start := time.Now()
	warm := min(time.Second, h.opts.duration/5)
	var lat []time.Duration
	for k := range h.opts.floodTries {
		at := start.Add(warm + time.Duration(k)*(h.opts.duration-warm)/time.Duration(h.opts.floodTries))
		time.Sleep(time.Until(at))
		if h.ctx.Err() != nil {
			break
		}
		a, err := e.addr()
		if err != nil {
			return row, err
		}
		l, err := e.open(s, a, 2*time.Second)
		if err != nil {
			row.note(err)
			continue
		}
		lat = append(lat, l)
	}
	time.Sleep(time.Until(start.Add(h.opts.duration)))
	cancel()
	fr := <-done
	if fr.err != nil {
		return row, fr.err
	}
	u1, _ := benchkit.ReadProc(pid)
	row.Flood, row.ServerRxPPS = fr.r, fr.rx
	row.Opens = len(lat)
	row.Latency = benchkit.Summarize(lat)
	if wall := u1.Taken.Sub(u0.Taken); wall > 0 {
		row.CPUPercent = 100 * float64(u1.CPU-u0.CPU) / float64(wall)
	}
	row.PeakRSSMiB = mib(u1.HWM)
	row.DaemonAlive = e.d.alive()
	return row, nil
}

// --- spoofed noise ----------------------------------------------------------------------

func (h *harness) noise() error {
	for _, s := range h.subjects(mKnock) {
		for _, rate := range h.opts.noiseRates {
			e, err := h.newEnv(s.Daemon, h.opts.floodTries+5)
			if err != nil {
				return err
			}
			row := NoiseRow{Subject: s.String(), RatePPS: rate, Tries: h.opts.floodTries}
			var lat []time.Duration
			for range h.opts.floodTries {
				if h.ctx.Err() != nil {
					break
				}
				a, err := e.addr()
				if err != nil {
					e.close()
					return err
				}
				ctx, cancel := context.WithCancel(e.ctx)
				done := make(chan struct{})
				go func() {
					defer close(done)
					fe := *e
					fe.ctx = ctx
					fe.floodFor(benchkit.FloodConfig{Rate: rate, Duration: 5 * time.Second, Pattern: patVictimNoise(&e.link, a)})
				}()
				time.Sleep(100 * time.Millisecond)
				l, err := e.open(s, a, 2*time.Second)
				cancel()
				<-done
				if err != nil {
					row.note(err)
				} else {
					lat = append(lat, l)
				}
				time.Sleep(20 * time.Millisecond)
			}
			row.Opens = len(lat)
			row.Latency = benchkit.Summarize(lat)
			e.close()
			h.res.Noise = append(h.res.Noise, row)
			h.log("  %s, noise %.0f pps from its own address: %d/%d opens, p50 %.2f ms", row.Subject, rate, row.Opens, row.Tries, row.Latency.P50)
		}
	}
	return nil
}

// --- concurrency ------------------------------------------------------------------------

func (h *harness) concurrency() error {
	n := h.opts.concurrent
	for _, s := range h.subjects(mKnock, mSPA) {
		row := ConcurrencyRow{Subject: s.String(), Sources: n}
		if h.spaMissing(s) {
			row.NotAvailable = h.spaNote
			h.res.Concurrency = append(h.res.Concurrency, row)
			continue
		}
		e, err := h.newEnv(s.Daemon, n)
		if err != nil {
			return err
		}
		if h.spaMissing(s) {
			e.close()
			row.NotAvailable = h.spaNote
			h.res.Concurrency = append(h.res.Concurrency, row)
			continue
		}
		srcs := append([]netip.Addr(nil), e.pool[:n]...)
		e.pool = e.pool[n:]
		// Interleaved: every source's first packet, then every source's second, and so on.
		rng := benchkit.NewRand(uint64(time.Now().UnixNano()))
		var frames [][]byte
		if s.Method == mKnock {
			for _, el := range knockSeq {
				for _, a := range srcs {
					buf := make([]byte, 2048)
					frames = append(frames, buf[:writeKnock(buf, &e.link, a, el, rng)])
				}
			}
		} else {
			for _, a := range srcs {
				p, err := h.spaPacket(s.Daemon, a)
				if err != nil {
					e.close()
					return err
				}
				buf := make([]byte, 2048)
				frames = append(frames, buf[:benchkit.WriteUDP(buf, &e.link, a, netnsbed.Server4, sport(rng), spaPort, p)])
			}
		}
		start := time.Now()
		r, err := benchkit.InjectOnce(e.bed.Client, e.bed.ClientIf, e.link.Dst, frames)
		if err != nil {
			e.close()
			return err
		}
		row.SendMS = float64(r.Elapsed.Microseconds()) / 1000
		opened := make([]bool, n)
		count, stale := 0, 0
		limit := 90 * time.Second
		if h.opts.smoke {
			limit = 10 * time.Second
		}
		for count < n && stale < 3 && time.Since(start) < limit && h.ctx.Err() == nil {
			var todo []netip.Addr
			var idx []int
			for i, ok := range opened {
				if !ok {
					todo = append(todo, srcs[i])
					idx = append(idx, i)
				}
			}
			var ok []bool
			err := netnsbed.Do(e.bed.Client, func() error {
				var err error
				ok, err = benchkit.MassConnect(todo, service, time.Second)
				return err
			})
			if err != nil {
				e.close()
				return err
			}
			before := count
			for j, v := range ok {
				if v {
					opened[idx[j]] = true
					count++
				}
			}
			if count > before {
				stale = 0
				row.AllOpenSeconds = time.Since(start).Seconds()
			} else {
				stale++
			}
		}
		row.Opened = count
		e.close()
		h.res.Concurrency = append(h.res.Concurrency, row)
		h.log("  %s: %d/%d opened (last after %.1f s)", row.Subject, row.Opened, n, row.AllOpenSeconds)
	}
	return nil
}

// --- blind sweep ------------------------------------------------------------------------

func (h *harness) sweep() error {
	const pairs = 65535 * 2
	// Random order: eight shuffled permutations of every (port, protocol), one per round in turn.
	perms := make([][]uint32, 8)
	for i := range perms {
		p := make([]uint32, pairs)
		for j := range p {
			p[j] = uint32(j)
		}
		rand.Shuffle(len(p), func(a, b int) { p[a], p[b] = p[b], p[a] })
		perms[i] = p
	}
	for _, s := range h.subjects(mKnock) {
		for _, order := range []string{"ascending", "random"} {
			if h.ctx.Err() != nil {
				return h.ctx.Err()
			}
			e, err := h.newEnv(s.Daemon, 2)
			if err != nil {
				return err
			}
			src, _ := e.addr()
			l := &e.link
			pat := func(buf []byte, i uint64, rng *benchkit.Rand) int {
				j := uint32(i % pairs)
				if order == "random" {
					j = perms[(i/pairs)%8][j]
				}
				port := uint16(j/2 + 1)
				if j%2 == 0 {
					return benchkit.WriteTCPSYN(buf, l, src, netnsbed.Server4, 40000, port, uint32(i))
				}
				return benchkit.WriteUDP(buf, l, src, netnsbed.Server4, 40000, port, junk)
			}
			r, rx, err := e.floodFor(benchkit.FloodConfig{Count: h.opts.sweepPackets, Duration: 5 * time.Minute, Threads: 1, Pattern: pat})
			if err != nil {
				e.close()
				return err
			}
			time.Sleep(300 * time.Millisecond) // knockd runs its command asynchronously
			var ok []bool
			err = netnsbed.Do(e.bed.Client, func() error {
				var err error
				ok, err = benchkit.MassConnect([]netip.Addr{src}, service, time.Second)
				return err
			})
			if err != nil {
				e.close()
				return err
			}
			row := SweepRow{Subject: s.String(), Order: order, Packets: r.Sent, Flood: r, ServerRxPPS: rx, Opened: ok[0], DaemonAlive: e.d.alive()}
			e.close()
			h.res.Sweep = append(h.res.Sweep, row)
			h.log("  %s, %s sweep: %d packets at %.0f pps: door opened: %v", row.Subject, order, r.Sent, r.Achieved, row.Opened)
		}
	}
	return nil
}

// --- scale ------------------------------------------------------------------------------

func (h *harness) scale() error {
	var subs []subject
	for _, d := range h.opts.daemons {
		switch d {
		case dSesame:
			subs = append(subs, subject{dSesame, mKnock})
		case dFwknopd:
			subs = append(subs, subject{dFwknopd, mSPA})
		}
	}
	for _, s := range subs {
		for _, n := range h.opts.scaleLevels {
			if h.ctx.Err() != nil {
				return h.ctx.Err()
			}
			row, err := h.scaleCell(s, n)
			if err != nil {
				return err
			}
			h.res.Scale = append(h.res.Scale, row)
			h.log("  %s with %d grants: fill %.1f s, add one p50 %.2f ms (%d/%d), %.0f conn/s, connect+echo p50 %.3f ms",
				row.Subject, n, row.FillSeconds, row.Add.P50, row.Add.N, row.AddTries, row.ConnPerSec, row.Connect.P50)
		}
	}
	return nil
}

func (h *harness) scaleCell(s subject, n int) (ScaleRow, error) {
	row := ScaleRow{Subject: s.String(), Grants: n}
	tries := 20
	if s.Daemon == dFwknopd {
		tries = 5
	}
	if h.opts.smoke {
		tries = 2
	}
	row.AddTries = tries
	e, err := h.newEnv(s.Daemon, tries+2)
	if err != nil {
		return row, err
	}
	defer e.close()
	t0 := time.Now()
	if n > 0 {
		var b strings.Builder
		const chunk = 5000
		switch s.Daemon {
		case dSesame:
			for i := 0; i < n; i += chunk {
				b.WriteString("add element inet sesame grants4 { ")
				for j := i; j < min(n, i+chunk); j++ {
					if j > i {
						b.WriteString(", ")
					}
					fmt.Fprintf(&b, "%s . tcp . %d timeout 1h", benchkit.Distinct10(uint32(j)), svcPort)
				}
				b.WriteString(" }\n")
			}
			if err := e.runInput(e.bed.Server, b.String(), "nft", "-f", "-"); err != nil {
				return row, err
			}
		case dFwknopd:
			exp := time.Now().Add(time.Hour).Unix()
			b.WriteString("*filter\n")
			for j := range n {
				fmt.Fprintf(&b, "-A FWKNOP_INPUT -s %s/32 -p tcp -m tcp --dport %d -m comment --comment _exp_%d -j ACCEPT\n", benchkit.Distinct10(uint32(j)), svcPort, exp)
			}
			b.WriteString("COMMIT\n")
			if err := e.runInput(e.bed.Server, b.String(), "iptables-restore", "--noflush"); err != nil {
				return row, err
			}
		}
	}
	row.FillSeconds = time.Since(t0).Seconds()
	// Adding one more grant: the daemon's own open path, measured end to end.
	var lat []time.Duration
	var granted netip.Addr
	budget := time.Now().Add(120 * time.Second)
	for range tries {
		if h.ctx.Err() != nil || time.Now().After(budget) {
			break
		}
		a, err := e.addr()
		if err != nil {
			return row, err
		}
		l, err := e.open(s, a, 30*time.Second)
		if err != nil {
			row.note(err)
			continue
		}
		granted = a
		lat = append(lat, l)
		time.Sleep(20 * time.Millisecond)
	}
	row.Add = benchkit.Summarize(lat)
	if !granted.IsValid() {
		return row, nil
	}
	d := 2 * time.Second
	if h.opts.smoke {
		d = 300 * time.Millisecond
	}
	var conn []time.Duration
	var failed int
	err = netnsbed.Do(e.bed.Client, func() error {
		var err error
		conn, failed, err = benchkit.ConnectLoop(granted, service, d, 100000)
		return err
	})
	if err != nil {
		return row, err
	}
	row.Connect = benchkit.Summarize(conn)
	row.ConnFailed = failed
	row.ConnPerSec = float64(len(conn)) / d.Seconds()
	return row, nil
}

// --- memory -----------------------------------------------------------------------------

func (h *harness) memory() error {
	for _, s := range h.subjects(mKnock) {
		if h.ctx.Err() != nil {
			return h.ctx.Err()
		}
		e, err := h.newEnv(s.Daemon, 0)
		if err != nil {
			return err
		}
		pid := e.d.pid()
		u0, _ := benchkit.ReadProc(pid)
		l := &e.link
		first := knockSeq[0]
		pat := func(buf []byte, i uint64, rng *benchkit.Rand) int {
			return writeKnock(buf, l, benchkit.Distinct10(uint32(i)), first, rng)
		}
		r, rx, err := e.floodFor(benchkit.FloodConfig{Rate: h.opts.memRate, Count: h.opts.memSources, Duration: 2 * time.Minute, Pattern: pat})
		if err != nil {
			e.close()
			return err
		}
		time.Sleep(time.Second)
		u1, _ := benchkit.ReadProc(pid)
		row := MemoryRow{Subject: s.String(), Sources: r.Sent, Flood: r, ServerRxPPS: rx, RSSBeforeMiB: mib(u0.RSS), RSSAfterMiB: mib(u1.RSS), PeakRSSMiB: mib(u1.HWM),
			CPUSeconds: (u1.CPU - u0.CPU).Seconds(), DaemonAlive: e.d.alive()}
		e.close()
		h.res.Memory = append(h.res.Memory, row)
		h.log("  %s after %d spoofed sources: RSS %.1f MiB (peak %.1f, before %.1f)", row.Subject, r.Sent, row.RSSAfterMiB, row.PeakRSSMiB, row.RSSBeforeMiB)
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

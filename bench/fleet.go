//go:build linux

package main

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sesame-knock/sesame/internal/benchkit"
	"github.com/sesame-knock/sesame/internal/cluster/redistest"
	"github.com/sesame-knock/sesame/internal/control"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// FleetResults are the numbers of `go run ./bench fleet`.
type FleetResults struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Machine  Machine   `json:"machine"`
	Tries    int       `json:"tries"`
	// Single is SPA packet → service answering (data both ways) on one host without [cluster];
	// Fleet is the same packet to gw0 → the service answering on all three members (group
	// fan-out through Redis), and FleetEach the time per member.
	Single    benchkit.Summary    `json:"single_host"`
	Fleet     benchkit.Summary    `json:"fleet_all_three"`
	FleetEach [3]benchkit.Summary `json:"fleet_each_member"`
	// FleetOrigin is the packet to gw0 → gw0 answering, gw0 alone probed (the Redis claim on the
	// packet path, without the three probes sharing the CPUs).
	FleetOrigin benchkit.Summary `json:"fleet_origin_alone"`
	Failures    int              `json:"failures"`
	// FailureNotes are the first failures' errors; RedisDownLines counts the members' "redis is
	// down" lines during the opens and replays (a Redis call past [cluster] timeout counts as
	// down, and refuses the packet).
	FailureNotes   []string        `json:"failure_notes,omitempty"`
	RedisDownLines int             `json:"redis_down_lines"`
	Replays        []ReplayRound   `json:"replays"`
	Converge       []ConvergeRound `json:"converge"`
}

// ReplayRound is one packet sent Sent times to each member at once.
type ReplayRound struct {
	Sent     int     `json:"sent"`     // datagrams, all members together
	Decided  uint64  `json:"decided"`  // packets the members decided (accepted + refused)
	Accepted uint64  `json:"accepted"` // acceptances across the fleet (want 1)
	Refused  float64 `json:"refusal_rate"`
}

// ConvergeRound is one Redis outage: from redis-server answering again to every member
// reporting it up, and to a fresh packet to gw0 opening the service on all three.
type ConvergeRound struct {
	Down      float64 `json:"down_s"`
	MembersUp float64 `json:"members_up_ms"`
	OpenAll   float64 `json:"open_on_all_ms"`
}

// fleetBench is the bed of one fleet run.
type fleetBench struct {
	ctx     context.Context
	bin     string
	dir     string
	key     spa.SharedKey
	pool    []netip.Addr
	next    int
	redis   *redistest.Server
	ctls    []string
	clients map[string]*control.Client
	log     func(string, ...any)
}

func runFleet(args []string) error {
	fs := flag.NewFlagSet("bench fleet", flag.ContinueOnError)
	out := fs.String("out", "bench-out", "output `DIR` (fleet.json, fleet.md)")
	tries := fs.Int("tries", 200, "SPA opens measured, single host and fleet each")
	bin := fs.String("sesame", "", "sesame binary to run (default: go build ./cmd/sesame)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tries < 1 || *tries > 2000 {
		return errors.New("-tries: want 1-2000")
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: the bench creates network namespaces and starts daemons")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer cleanupAll()
	dir, err := os.MkdirTemp("", "sfb")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &fleetBench{ctx: ctx, bin: *bin, dir: dir, clients: map[string]*control.Client{}, log: func(f string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(f, a...))
	}}
	if b.bin == "" {
		b.bin = filepath.Join(dir, "sesame")
		cmd := exec.Command("go", "build", "-o", b.bin, "github.com/sesame-knock/sesame/cmd/sesame")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if o, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build sesame: %w\n%s", err, o)
		}
	}
	if b.key, err = spa.GenerateSharedKey(crand.Reader); err != nil {
		return err
	}
	text, _ := b.key.MarshalText()
	if err := os.WriteFile(filepath.Join(dir, "bench.key"), append(text, '\n'), 0o600); err != nil {
		return err
	}
	res := &FleetResults{Started: time.Now(), Machine: machine(), Tries: *tries}
	if err := b.single(res); err != nil {
		return err
	}
	if err := b.fleet(res); err != nil {
		return err
	}
	res.Finished = time.Now()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	js, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(*out, "fleet.json"), js, 0o644); err != nil {
		return err
	}
	md := res.markdown()
	fmt.Print(md)
	return os.WriteFile(filepath.Join(*out, "fleet.md"), []byte(md), 0o644)
}

// bed builds a fleet of n gateways with an echo service on tcp/2222 each and tries+10 extra
// client addresses (a fresh source per open).
func (b *fleetBench) bed(n, tries int) (*netnsbed.Fleet, error) {
	f, err := netnsbed.NewFleet(b.ctx, n)
	if err != nil {
		return nil, err
	}
	b.pool, b.next = nil, 0
	var lines []string
	for k := 1; k <= 2*tries+40; k++ {
		a := netnsbed.ExtraClient4(k)
		b.pool = append(b.pool, a)
		lines = append(lines, fmt.Sprintf("addr add %s/16 dev br0", a))
	}
	cmd := netnsbed.Command(b.ctx, f.Client, "ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if o, err := cmd.CombinedOutput(); err != nil {
		f.Close()
		return nil, fmt.Errorf("client addresses: %v: %s", err, o)
	}
	for i, ns := range f.Gateways {
		if _, err := netnsbed.Listen(b.ctx, ns, netip.AddrPortFrom(netnsbed.Gateway4(i), svcPort)); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}

func (b *fleetBench) addr() (netip.Addr, error) {
	if b.next >= len(b.pool) {
		return netip.Addr{}, errors.New("out of client addresses")
	}
	a := b.pool[b.next]
	b.next++
	return a, nil
}

// start runs sesame on gateway i with cluster (a [cluster] section, or "") and waits for its
// control socket.
func (b *fleetBench) start(f *netnsbed.Fleet, i int, cluster string) (*daemon, string, error) {
	state := filepath.Join(b.dir, fmt.Sprintf("gw%d-%d", i, time.Now().UnixNano()))
	if err := os.MkdirAll(state, 0o700); err != nil {
		return nil, "", err
	}
	conf := fmt.Sprintf(`[server]
state_dir = %q
stealth = "off"

[spa]
listen = "udp/%d"
max_age = "120s"

[[spa.client]]
name = "bench"
key_file = %q
open = ["tcp/2222"]
sources = ["198.18.0.0/16"]
default_open_for = "5m"
%s`, state, spaPort, filepath.Join(b.dir, "bench.key"), cluster)
	path := filepath.Join(state, "sesame.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return nil, "", err
	}
	ctl := filepath.Join(state, "c.sock")
	d, err := startDaemon(f.Gateways[i], b.bin, "server", "-c", path, "--log-level", "warn", "--control-socket", ctl)
	if err != nil {
		return nil, "", err
	}
	if !waitFor(10*time.Second, func() bool { _, err := b.status(ctl); return err == nil }) {
		d.stop()
		return nil, "", fmt.Errorf("sesame on gw%d did not start: %s", i, d.out.String())
	}
	return d, ctl, nil
}

func (b *fleetBench) status(ctl string) (s statusLite, err error) {
	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Second)
	defer cancel()
	cl := b.clients[ctl]
	if cl == nil {
		// One client per socket: each keeps an idle connection, and the socket serves 32 at once.
		cl = control.NewClient(ctl)
		b.clients[ctl] = cl
	}
	st, err := cl.Status(ctx)
	if err != nil {
		return s, err
	}
	if st.SPA != nil {
		for _, c := range st.SPA.Clients {
			s.accepted += c.Accepted
			s.refused += c.Refused
		}
	}
	s.up = st.Fleet != nil && st.Fleet.Up
	return s, nil
}

type statusLite struct {
	accepted, refused uint64
	up                bool
}

// packet is a fresh SPA packet for src.
func (b *fleetBench) packet(src netip.Addr) ([]byte, error) {
	req := spa.Request{Addr: src, Ports: []netport.Port{{Proto: netport.TCP, Num: svcPort}}}
	return spa.Seal(req, spa.ClientCredential{ID: "bench", Shared: &b.key}, time.Now(), crand.Reader)
}

// open sends a fresh packet from a fresh source to gateway 0 and returns, for each of the
// gateways, the time from the packet leaving to the service answering with data both ways.
func (b *fleetBench) open(f *netnsbed.Fleet, limit time.Duration) ([]time.Duration, error) {
	return b.openOn(f, len(f.Gateways), limit)
}

// openOn is open probing only the first n gateways.
func (b *fleetBench) openOn(f *netnsbed.Fleet, n int, limit time.Duration) ([]time.Duration, error) {
	src, err := b.addr()
	if err != nil {
		return nil, err
	}
	pkt, err := b.packet(src)
	if err != nil {
		return nil, err
	}
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	var start time.Time
	var wg sync.WaitGroup
	sent := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			errs[i] = netnsbed.Do(f.Client, func() error {
				<-sent
				var err error
				lat[i], err = benchkit.ProbeConnect(src, netip.AddrPortFrom(netnsbed.Gateway4(i), svcPort), start, limit)
				return err
			})
		})
	}
	err = netnsbed.Do(f.Client, func() error {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(netnsbed.Gateway4(0), spaPort)))
		if err != nil {
			return err
		}
		defer c.Close()
		start = time.Now()
		_, err = c.Write(pkt)
		return err
	})
	close(sent)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	return lat, errors.Join(errs...)
}

// single measures the single-host figure: one gateway, no [cluster].
func (b *fleetBench) single(res *FleetResults) error {
	b.log("fleet: single host, %d opens", res.Tries)
	f, err := b.bed(1, res.Tries)
	if err != nil {
		return err
	}
	defer f.Close()
	d, _, err := b.start(f, 0, "")
	if err != nil {
		return err
	}
	defer d.stop()
	var lat []time.Duration
	for range res.Tries {
		l, err := b.open(f, 3*time.Second)
		if err != nil {
			res.fail(err)
			continue
		}
		lat = append(lat, l[0])
		time.Sleep(10 * time.Millisecond)
	}
	res.Single = benchkit.Summarize(lat)
	b.log("  single host: p50 %.2f ms p95 %.2f ms", res.Single.P50, res.Single.P95)
	return nil
}

// fleet measures the three-member fleet: opens, replays, and convergence after outages.
func (b *fleetBench) fleet(res *FleetResults) error {
	f, err := b.bed(3, res.Tries)
	if err != nil {
		return err
	}
	defer f.Close()
	rdir, err := os.MkdirTemp("", "sfr")
	if err != nil {
		return err
	}
	defer os.RemoveAll(rdir)
	if b.redis, err = redistest.Start(rdir); err != nil {
		return err
	}
	defer b.redis.Stop()
	b.ctls = nil
	var ds []*daemon
	for i := range 3 {
		d, ctl, err := b.start(f, i, fmt.Sprintf("group = \"web\"\n\n[cluster]\nredis = %q\nmember = \"gw%d\"\n", b.redis.URL(), i))
		if err != nil {
			return err
		}
		defer d.stop()
		ds = append(ds, d)
		b.ctls = append(b.ctls, ctl)
	}
	b.log("fleet: three members, %d opens on gw0, probed on all three", res.Tries)
	var all []time.Duration
	each := make([][]time.Duration, 3)
	for range res.Tries {
		l, err := b.open(f, 3*time.Second)
		if err != nil {
			res.fail(err)
			continue
		}
		all = append(all, max(l[0], l[1], l[2]))
		for i := range 3 {
			each[i] = append(each[i], l[i])
		}
		time.Sleep(10 * time.Millisecond)
	}
	res.Fleet = benchkit.Summarize(all)
	for i := range 3 {
		res.FleetEach[i] = benchkit.Summarize(each[i])
	}
	b.log("  fleet, all three: p50 %.2f ms p95 %.2f ms (%d failures)", res.Fleet.P50, res.Fleet.P95, res.Failures)
	var origin []time.Duration
	for range res.Tries {
		l, err := b.openOn(f, 1, 3*time.Second)
		if err != nil {
			res.fail(err)
			continue
		}
		origin = append(origin, l[0])
		time.Sleep(10 * time.Millisecond)
	}
	res.FleetOrigin = benchkit.Summarize(origin)
	b.log("  fleet, gw0 alone probed: p50 %.2f ms p95 %.2f ms", res.FleetOrigin.P50, res.FleetOrigin.P95)
	for range 3 {
		r, err := b.replays(f, 334)
		if err != nil {
			return err
		}
		res.Replays = append(res.Replays, r)
		b.log("  replays: %d sent, %d decided, %d accepted, refusal rate %.4f", r.Sent, r.Decided, r.Accepted, r.Refused)
	}
	for _, d := range ds {
		res.RedisDownLines += strings.Count(d.out.String(), "fleet: redis is down")
	}
	for range 3 { // the outages below are on purpose
		c, err := b.converge(f)
		if err != nil {
			return err
		}
		res.Converge = append(res.Converge, c)
		b.log("  redis back after %.1fs down: members up in %.0f ms, open on all three in %.0f ms", c.Down, c.MembersUp, c.OpenAll)
	}
	return nil
}

func (b *fleetBench) totals() (statusLite, error) {
	var t statusLite
	for _, ctl := range b.ctls {
		s, err := b.status(ctl)
		if err != nil {
			return t, err
		}
		t.accepted += s.accepted
		t.refused += s.refused
	}
	return t, nil
}

// replays sends one fresh packet n times to each member at once.
func (b *fleetBench) replays(f *netnsbed.Fleet, n int) (ReplayRound, error) {
	src, err := b.addr()
	if err != nil {
		return ReplayRound{}, err
	}
	pkt, err := b.packet(src)
	if err != nil {
		return ReplayRound{}, err
	}
	before, err := b.totals()
	if err != nil {
		return ReplayRound{}, err
	}
	conns := make([]*net.UDPConn, 3)
	err = netnsbed.Do(f.Client, func() error {
		for i := range conns {
			c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
				net.UDPAddrFromAddrPort(netip.AddrPortFrom(netnsbed.Gateway4(i), spaPort)))
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	})
	if err != nil {
		return ReplayRound{}, err
	}
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			defer c.Close()
			for range n {
				c.Write(pkt)
			}
		})
	}
	wg.Wait()
	var after statusLite
	// Wait until the counts settle.
	prev := uint64(0)
	for range 50 {
		time.Sleep(100 * time.Millisecond)
		if after, err = b.totals(); err != nil {
			return ReplayRound{}, err
		}
		if d := after.accepted + after.refused; d == prev {
			break
		} else {
			prev = d
		}
	}
	r := ReplayRound{Sent: 3 * n, Accepted: after.accepted - before.accepted}
	refused := after.refused - before.refused
	r.Decided = r.Accepted + refused
	if r.Decided > 1 {
		r.Refused = float64(refused) / float64(r.Decided-1)
	}
	return r, nil
}

// converge kills Redis for a while, starts it again, and measures until every member reports
// it up and until a fresh packet to gw0 opens the service on all three.
func (b *fleetBench) converge(f *netnsbed.Fleet) (ConvergeRound, error) {
	const down = 2 * time.Second
	b.redis.Stop()
	time.Sleep(down)
	if err := b.redis.Start(); err != nil {
		return ConvergeRound{}, err
	}
	t0 := time.Now()
	c := ConvergeRound{Down: down.Seconds()}
	if !waitFor(10*time.Second, func() bool {
		for _, ctl := range b.ctls {
			if s, err := b.status(ctl); err != nil || !s.up {
				return false
			}
		}
		return true
	}) {
		return c, errors.New("members not up 10s after redis came back")
	}
	c.MembersUp = float64(time.Since(t0).Microseconds()) / 1000
	return c, b.openAfter(f, t0, &c)
}

// openAfter measures from t0 until a packet to gw0 opens the service on all three members.
func (b *fleetBench) openAfter(f *netnsbed.Fleet, t0 time.Time, c *ConvergeRound) error {
	deadline := t0.Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := b.open(f, 300*time.Millisecond); err == nil {
			c.OpenAll = float64(time.Since(t0).Microseconds()) / 1000
			return nil
		}
	}
	return errors.New("no open on all three members 10s after redis came back")
}

func (r *FleetResults) fail(err error) {
	r.Failures++
	if len(r.FailureNotes) < 5 {
		r.FailureNotes = append(r.FailureNotes, err.Error())
	}
}

func (r *FleetResults) markdown() string {
	var s strings.Builder
	fmt.Fprintf(&s, "Fleet run %s, %s, %d CPUs (%s)\n\n", r.Started.UTC().Format("2006-01-02 15:04 MST"), r.Machine.CPU, r.Machine.CPUs, r.Machine.Kernel)
	s.WriteString("| SPA packet → service answers (data both ways) | n | p50 ms | p95 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n")
	row := func(name string, x benchkit.Summary) {
		fmt.Fprintf(&s, "| %s | %d | %.2f | %.2f | %.2f | %.2f |\n", name, x.N, x.P50, x.P95, x.P99, x.Max)
	}
	row("single host, no [cluster]", r.Single)
	row("fleet: on all three members (packet to gw0, group fan-out)", r.Fleet)
	for i, x := range r.FleetEach {
		row(fmt.Sprintf("fleet: gw%d (same opens)", i), x)
	}
	row("fleet: gw0, gw0 alone probed (Redis claim on the packet path)", r.FleetOrigin)
	fmt.Fprintf(&s, "\nFailures (no answer within 3 s): %d; members' \"redis is down\" lines during the opens and replays: %d\n", r.Failures, r.RedisDownLines)
	for _, n := range r.FailureNotes {
		fmt.Fprintf(&s, "- %s\n", n)
	}
	s.WriteString("\n")
	s.WriteString("| replay round | datagrams sent (3 members at once) | decided | accepted | replay refusal rate |\n|---|---|---|---|---|\n")
	for i, x := range r.Replays {
		fmt.Fprintf(&s, "| %d | %d | %d | %d | %.2f %% |\n", i+1, x.Sent, x.Decided, x.Accepted, 100*x.Refused)
	}
	s.WriteString("\n| outage | Redis down | back → all members report it up | back → packet to gw0 opens on all three |\n|---|---|---|---|\n")
	for i, x := range r.Converge {
		fmt.Fprintf(&s, "| %d | %.0f s | %.0f ms | %.0f ms |\n", i+1, x.Down, x.MembersUp, x.OpenAll)
	}
	return s.String()
}

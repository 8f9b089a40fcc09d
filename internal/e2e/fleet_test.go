//go:build linux

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/cluster/redistest"
	"github.com/sesame-knock/sesame/internal/control"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/server"
	"github.com/sesame-knock/sesame/internal/spa"
)

// fleetBed is three gateways running sesame on one Redis of the test's own, and a client that
// reaches each at its own address (netnsbed.Fleet).
type fleetBed struct {
	f     *netnsbed.Fleet
	redis *redistest.Server
	keys  *spaKeys
	gws   []*fleetGW
}

type fleetGW struct {
	i       int
	ns      string
	cfgPath string
	ctl     string
	cl      *control.Client // one client: each keeps an idle connection, and the socket serves 32 at once
	d       *daemon
}

// newFleetBed builds the fleet, starts Redis on a unix socket (the namespaces share the file
// system, not the network) and one echo service per gateway on tcp/2222 and tcp/2223, then
// starts sesame on each gateway: alice may open both ports; with group set, her grants fan out.
func newFleetBed(t *testing.T, mode, group string, extra ...string) *fleetBed {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	f, err := netnsbed.NewFleet(context.Background(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Close(); err != nil {
			t.Errorf("fleet: close: %v", err)
		}
	})
	rs, err := redistest.Start(shortTempDir(t))
	if err != nil {
		t.Fatalf("%v (redis-server is installed by .ci/deps.sh)", err)
	}
	t.Cleanup(rs.Stop)
	b := &fleetBed{f: f, redis: rs, keys: newSPAKeys(t)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i, ns := range f.Gateways {
		for _, port := range []uint16{2222, 2223} {
			if _, err := netnsbed.Listen(ctx, ns, netip.AddrPortFrom(netnsbed.Gateway4(i), port)); err != nil {
				t.Fatal(err)
			}
		}
		gw := &fleetGW{i: i, ns: ns, ctl: filepath.Join(shortTempDir(t), "control.sock")}
		gw.cl = control.NewClient(gw.ctl)
		dir := t.TempDir()
		groupLine := ""
		if group != "" {
			groupLine = fmt.Sprintf("group = %q\n", group)
		}
		cfg := spaStealth(false, `[server]
state_dir = %q

[spa]
listen = "udp/%d"
max_age = "120s"

[[spa.client]]
name = "alice"
key_file = %q
open = ["tcp/2222", "tcp/2223"]
sources = ["198.18.0.0/24"]
max_open_for = "1h"
%s
[cluster]
redis = %q
member = "gw%d"
on_redis_down = %q
`, dir, spaPort, filepath.Join(b.keys.dir, "alice.key"), groupLine, rs.URL(), i, mode) + strings.Join(extra, "")
		gw.cfgPath = filepath.Join(dir, "sesame.toml")
		if err := os.WriteFile(gw.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		gw.start(t)
		b.gws = append(b.gws, gw)
	}
	return b
}

func (g *fleetGW) start(t *testing.T) {
	t.Helper()
	g.d = startDaemon(t, g.ns, "sesame server running", sesameBin, "server", "-c", g.cfgPath, "--log-level", "debug", "--control-socket", g.ctl)
}

func (g *fleetGW) svc(port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netnsbed.Gateway4(g.i), port)
}

// open reports whether the gateway's service on port answers the client with data both ways.
func (b *fleetBed) open(t *testing.T, g *fleetGW, port uint16) bool {
	t.Helper()
	ok, err := netnsbed.CanConnect(b.f.Client, netnsbed.Client4, g.svc(port), 400*time.Millisecond)
	if err != nil {
		t.Fatalf("connect to gw%d: %v", g.i, err)
	}
	return ok
}

// status is the gateway's status through its control socket.
func (g *fleetGW) status(t *testing.T) server.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := g.cl.Status(ctx)
	if err != nil {
		t.Fatalf("gw%d status: %v", g.i, err)
	}
	return st
}

// accepted is how many of alice's packets the gateway accepted.
func (g *fleetGW) accepted(t *testing.T) uint64 {
	t.Helper()
	st := g.status(t)
	if st.SPA == nil {
		t.Fatalf("gw%d: no SPA in status", g.i)
	}
	for _, c := range st.SPA.Clients {
		if c.Name == "alice" {
			return c.Accepted
		}
	}
	return 0
}

// packet is a fresh packet of alice's asking for ports (tcp/2222 when none) for d.
func (b *fleetBed) packet(t *testing.T, d time.Duration, ports ...uint16) []byte {
	t.Helper()
	req := spa.Request{Duration: d}
	for _, p := range ports {
		req.Ports = append(req.Ports, netport.Port{Proto: netport.TCP, Num: p})
	}
	return seal(t, b.keys.shared(), req, time.Now())
}

// send sends pkt to gateway g once.
func (b *fleetBed) send(t *testing.T, g *fleetGW, pkt []byte) {
	t.Helper()
	b.spray(t, pkt, 1, g)
}

// spray sends pkt n times to each of gws, all gateways at once (one goroutine and socket each).
func (b *fleetBed) spray(t *testing.T, pkt []byte, n int, gws ...*fleetGW) {
	t.Helper()
	conns := make([]*net.UDPConn, len(gws))
	err := netnsbed.Do(b.f.Client, func() error {
		for i, g := range gws {
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(netnsbed.Gateway4(g.i), spaPort)))
			if err != nil {
				return err
			}
			conns[i] = c
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, c := range conns {
		wg.Go(func() {
			defer c.Close()
			<-start
			for range n {
				c.Write(pkt)
			}
		})
	}
	close(start)
	wg.Wait()
}

// waitOpen waits up to d for the gateway's port to answer as want says.
func (b *fleetBed) waitOpen(t *testing.T, g *fleetGW, port uint16, want bool, d time.Duration) bool {
	t.Helper()
	return waitFor(d, func() bool { return b.open(t, g, port) == want })
}

// TestIntegrationFleetReplay (issue 14 items 1, 3): without a group, one packet sent 1000 times
// to the three members at once opens on exactly one of them: the replay key is claimed once in
// Redis, the other members refuse it as a replay, and the port answers only there.
func TestIntegrationFleetReplay(t *testing.T) {
	b := newFleetBed(t, "refuse", "")
	for _, g := range b.gws {
		if b.open(t, g, 2222) {
			t.Fatalf("gw%d open before any packet", g.i)
		}
	}
	pkt := b.packet(t, 30*time.Second)
	b.spray(t, pkt, 334, b.gws...)
	var total uint64
	opened := -1
	if !waitFor(3*time.Second, func() bool {
		total = 0
		for _, g := range b.gws {
			total += g.accepted(t)
		}
		return total > 0
	}) {
		t.Fatal("no member accepted the packet")
	}
	time.Sleep(300 * time.Millisecond) // let the replays still queued be decided
	total = 0
	for _, g := range b.gws {
		n := g.accepted(t)
		total += n
		if n == 1 {
			opened = g.i
		}
	}
	if total != 1 {
		t.Fatalf("%d acceptances across the fleet for one packet, want 1", total)
	}
	for _, g := range b.gws {
		if got := b.open(t, g, 2222); got != (g.i == opened) {
			t.Errorf("gw%d: open = %v; the packet was accepted by gw%d only", g.i, got, opened)
		}
	}
	other := b.gws[(opened+1)%3]
	if !waitDecision(other.d, netnsbed.Client4, "alice", "replay", time.Second) {
		t.Errorf("gw%d logged no replay refusal", other.i)
	}
}

// TestIntegrationFleetGroup (item 2): with group = "web", the packet accepted by one member
// opens the service on all three (fan-out with the time left), 1000 parallel replays add no
// acceptance, status lists the members and which hold the grant, and a revoke fans out.
func TestIntegrationFleetGroup(t *testing.T) {
	b := newFleetBed(t, "refuse", "web")
	pkt := b.packet(t, time.Minute)
	b.send(t, b.gws[0], pkt)
	var sessions []*netnsbed.Session
	for _, g := range b.gws {
		if !b.waitOpen(t, g, 2222, true, 3*time.Second) {
			t.Fatalf("gw%d: not open 3s after the packet to gw0", g.i)
		}
		s, err := netnsbed.Open(b.f.Client, netnsbed.Client4, g.svc(2222), time.Second)
		if err != nil {
			t.Fatalf("gw%d: %v", g.i, err)
		}
		t.Cleanup(func() { s.Close() })
		sessions = append(sessions, s)
	}
	b.spray(t, pkt, 334, b.gws...)
	time.Sleep(500 * time.Millisecond)
	for _, g := range b.gws {
		want := uint64(0)
		if g.i == 0 {
			want = 1
		}
		if n := g.accepted(t); n != want {
			t.Errorf("gw%d accepted %d packets, want %d", g.i, n, want)
		}
	}
	for i, s := range sessions {
		if err := s.Echo(time.Now().Add(time.Second)); err != nil {
			t.Errorf("gw%d: session: %v", i, err)
		}
	}
	// Status: the members, the grant's origin and its holders.
	var st server.Status
	if !waitFor(3*time.Second, func() bool {
		st = b.gws[1].status(t)
		return st.Fleet != nil && len(st.Fleet.Members) == 3 && len(st.Fleet.Grants) == 1 && len(st.Fleet.Grants[0].HeldBy) == 3
	}) {
		t.Fatalf("fleet status: %+v", st.Fleet)
	}
	if g := st.Fleet.Grants[0]; g.Origin != "gw0" || g.By != "alice" || strings.Join(g.HeldBy, ",") != "gw0,gw1,gw2" {
		t.Errorf("fleet grant: %+v", g)
	}
	var kinds []string
	for _, g := range st.Grants {
		kinds = append(kinds, string(g.Kind)+":"+g.By)
	}
	if strings.Join(kinds, ",") != "fleet:alice@gw0" {
		t.Errorf("gw1's grants: %v", kinds)
	}
	// sesame revoke on gw2 removes the grant on every member.
	out, err := runSesame(t, "revoke", "--socket", b.gws[2].ctl, netnsbed.Client4.String())
	if err != nil {
		t.Fatalf("revoke: %v\n%s", err, out)
	}
	for _, g := range b.gws {
		if !b.waitOpen(t, g, 2222, false, 3*time.Second) {
			t.Errorf("gw%d: still open 3s after the revoke on gw2", g.i)
		}
	}
}

// runSesame runs the sesame binary (in this namespace) with args.
func runSesame(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, sesameBin, args...).CombinedOutput()
	return string(out), err
}

// TestIntegrationFleetRedisOutage (items 1, 3): Redis killed in the middle. refuse: packets are
// refused while it is down, with a clear reason, and accepted again once it is back. local:
// packets are accepted on the local cache while it is down (and a replay to another member
// with it: the documented cost), and after it is back the double acceptance is detected and
// the packet is refused by the third member.
func TestIntegrationFleetRedisOutage(t *testing.T) {
	t.Run("refuse", func(t *testing.T) {
		b := newFleetBed(t, "refuse", "")
		g := b.gws[0]
		b.send(t, g, b.packet(t, time.Minute))
		if !b.waitOpen(t, g, 2222, true, 3*time.Second) {
			t.Fatal("not open with Redis up")
		}
		b.redis.Stop()
		b.send(t, g, b.packet(t, time.Minute, 2223))
		if !waitDecision(g.d, netnsbed.Client4, "alice", "internal error", 3*time.Second) || !strings.Contains(g.d.Output(), "redis is down") {
			t.Fatalf("no refusal naming redis while it is down:\n%s", g.d.Output())
		}
		if b.open(t, g, 2223) {
			t.Fatal("a packet was accepted while Redis was down (refuse mode)")
		}
		if err := b.redis.Start(); err != nil {
			t.Fatal(err)
		}
		// Back within the backoff: a fresh packet opens again.
		ok := waitFor(5*time.Second, func() bool {
			b.send(t, g, b.packet(t, time.Minute, 2223))
			return b.waitOpen(t, g, 2223, true, 300*time.Millisecond)
		})
		if !ok {
			t.Fatalf("not open 5s after Redis came back:\n%s", g.d.Output())
		}
	})
	t.Run("local", func(t *testing.T) {
		b := newFleetBed(t, "local", "")
		b.redis.Stop()
		pkt := b.packet(t, time.Minute)
		b.send(t, b.gws[0], pkt)
		if !b.waitOpen(t, b.gws[0], 2222, true, 3*time.Second) {
			t.Fatal("gw0: not open in local mode while Redis is down")
		}
		if !strings.Contains(b.gws[0].d.Output(), "local replay cache alone") {
			t.Error("no warning about local decisions")
		}
		b.send(t, b.gws[1], pkt) // the replay while Redis is down: gw1 cannot know
		if !b.waitOpen(t, b.gws[1], 2222, true, 3*time.Second) {
			t.Fatal("gw1: the replay was not accepted locally (the test expects the documented cost)")
		}
		if err := b.redis.Start(); err != nil {
			t.Fatal(err)
		}
		if !waitFor(5*time.Second, func() bool {
			return strings.Contains(b.gws[0].d.Output()+b.gws[1].d.Output(), "also accepted by another member")
		}) {
			t.Fatal("the double acceptance during the outage was not detected on reconnect")
		}
		// The metrics say it too: each of gw0 and gw1 decided one packet locally, Redis is up
		// again, and one of the two counts the conflict; promtool accepts the scrapes.
		conflicts := 0
		for _, g := range b.gws[:2] {
			var text string
			if !waitFor(3*time.Second, func() bool {
				text = scrape(t, unixDialer(g.ctl))
				return metricLine(text, `sesame_fleet_redis_up 1`) && metricLine(text, `sesame_fleet_replay_claims_total{result="local"} 1`)
			}) {
				t.Errorf("gw%d metrics: want redis up and one local claim:\n%s", g.i, text)
			}
			if metricLine(text, `sesame_fleet_conflicts_total 1`) {
				conflicts++
			}
			promtoolCheck(t, fmt.Sprintf("gw%d", g.i), text)
		}
		if conflicts != 1 {
			t.Errorf("%d of gw0, gw1 count a conflict in sesame_fleet_conflicts_total, want 1", conflicts)
		}
		if !waitFor(5*time.Second, func() bool {
			return strings.Contains(b.gws[2].d.Output(), "redis is back") || b.gws[2].status(t).Fleet.Up
		}) {
			t.Fatal("gw2 not up")
		}
		b.send(t, b.gws[2], pkt)
		if !waitDecision(b.gws[2].d, netnsbed.Client4, "alice", "replay", 3*time.Second) || b.open(t, b.gws[2], 2222) {
			t.Fatal("gw2 accepted the packet after the reconciliation")
		}
	})
}

// TestIntegrationFleetCatchUp (items 2, 3): a member stopped while grants were issued applies,
// when it starts again, the grants still valid (from its saved stream id), and not the one
// that expired meanwhile.
func TestIntegrationFleetCatchUp(t *testing.T) {
	b := newFleetBed(t, "refuse", "web")
	away := b.gws[2]
	// A first grant, so that gw2 has a saved position.
	b.send(t, b.gws[0], b.packet(t, 2*time.Second))
	if !b.waitOpen(t, away, 2222, true, 3*time.Second) {
		t.Fatal("gw2: first grant not applied")
	}
	away.d.Stop(syscall.SIGTERM)
	b.send(t, b.gws[0], b.packet(t, 2*time.Second, 2223)) // expires while gw2 is away
	time.Sleep(100 * time.Millisecond)
	b.send(t, b.gws[1], b.packet(t, time.Minute, 2222))
	if !b.waitOpen(t, b.gws[0], 2222, true, 3*time.Second) {
		t.Fatal("gw0: the grant made on gw1 was not applied")
	}
	time.Sleep(2500 * time.Millisecond) // the tcp/2223 grant expires; so does the first
	if b.open(t, away, 2222) {
		t.Fatal("gw2 open while it is stopped (its grant expired)")
	}
	away.start(t)
	if !b.waitOpen(t, away, 2222, true, 3*time.Second) {
		t.Fatalf("gw2 did not catch up with the live grant:\n%s", away.d.Output())
	}
	if b.open(t, away, 2223) {
		t.Error("gw2 applied a grant that had expired while it was away")
	}
	if n := strings.Count(away.d.Output(), "fleet grant applied"); n != 1 {
		t.Errorf("gw2 applied %d grants after its restart, want 1:\n%s", n, away.d.Output())
	}
}

// fleetBanOf is the reason of src's ban in st, "" when it is not banned.
func fleetBanOf(st server.Status, src netip.Addr) string {
	for _, b := range st.Bans {
		if b.Src == src {
			return b.Reason
		}
	}
	return "none"
}

// TestIntegrationFleetBan (item 2): a decoy ban on one member is applied by the members of its
// group, and sesame revoke --ban on another lifts it on all three.
func TestIntegrationFleetBan(t *testing.T) {
	b := newFleetBed(t, "refuse", "web", "\n[[decoy]]\nports = [\"tcp/2323\"]\nalert = false\n")
	c, err := netnsbed.Dial(b.f.Client, netnsbed.Client4, netip.AddrPortFrom(netnsbed.Gateway4(0), 2323), 2*time.Second)
	if err != nil {
		t.Fatalf("decoy on gw0: %v", err)
	}
	c.Write([]byte("USER root\r\n"))
	c.Close()
	for _, g := range b.gws {
		var reason string
		if !waitFor(3*time.Second, func() bool { reason = fleetBanOf(g.status(t), netnsbed.Client4); return reason != "none" }) {
			t.Fatalf("gw%d: %s not banned 3s after the decoy visit on gw0:\n%s", g.i, netnsbed.Client4, g.d.Output())
		}
		if g.i > 0 && !strings.HasPrefix(reason, "fleet: gw0: ") {
			t.Errorf("gw%d: ban reason %q", g.i, reason)
		}
	}
	out, err := runSesame(t, "revoke", "--socket", b.gws[1].ctl, "--ban", netnsbed.Client4.String())
	if err != nil {
		t.Fatalf("revoke --ban: %v\n%s", err, out)
	}
	for _, g := range b.gws {
		if !waitFor(3*time.Second, func() bool { return fleetBanOf(g.status(t), netnsbed.Client4) == "none" }) {
			t.Errorf("gw%d: ban not lifted 3s after revoke --ban on gw1", g.i)
		}
	}
}

package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

const doorConfig = `[server]
firewall = "%s"
state_dir = "STATE_DIR"

[[door]]
name = "ssh"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
sequence_timeout = "%s"
sources = ["198.18.0.0/16", "fd5e:5a3e::/64"]
open = ["tcp/2222"]
open_for = "%s"
`

var seq = []string{"7000/tcp", "8000/udp", "9000/tcp"}

func listen(t *testing.T, bed *netnsbed.Bed, fam family) netip.AddrPort {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	addr := netip.AddrPortFrom(fam.server, 2222)
	if _, err := netnsbed.Listen(ctx, bed.Server, addr); err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestIntegrationKnockOpensForSourceOnly covers door items 1 and 2 and grant expiry, for both
// firewall backends and both address families.
func TestIntegrationKnockOpensForSourceOnly(t *testing.T) {
	t.Parallel() // mostly waiting for timeouts: paired with another at the end of the run (doc.go)
	for _, fw := range []string{"nftables", "iptables"} {
		for _, fam := range families {
			t.Run(fw+"/"+fam.name, func(t *testing.T) {
				bed := skipUnlessRoot(t)
				svc := listen(t, bed, fam)
				extra, err := bed.AddClientAddrs(context.Background(), 1, true)
				if err != nil {
					t.Fatal(err)
				}
				other := extra[0]
				if fam.name == "ipv6" {
					other = extra[1]
				}
				startSesame(t, bed, fmt.Sprintf(doorConfig, fw, "5s", "2s"))
				if canConnect(t, bed, fam.client, svc) {
					t.Fatal("protected port open before any knock")
				}
				knockFrom(t, bed, fam.client, fam.server, seq...)
				if !eventually(t, bed, fam.client, svc, true) {
					t.Fatal("port not open after a correct knock")
				}
				if canConnect(t, bed, other, svc) {
					t.Errorf("port open for %s, which did not knock", other)
				}
				time.Sleep(2 * time.Second)
				if !eventually(t, bed, fam.client, svc, false) {
					t.Error("port still open after open_for")
				}
			})
		}
	}
}

func TestIntegrationWrongKnocksOpenNothing(t *testing.T) {
	bed := skipUnlessRoot(t)
	for _, fam := range families {
		listen(t, bed, fam)
	}
	d, _ := startSesame(t, bed, strings.Replace(fmt.Sprintf(doorConfig, "nftables", "1s", "30s"),
		`sources = ["198.18.0.0/16", "fd5e:5a3e::/64"]`, `sources = ["198.18.1.0/24", "fd5e:5a3e::1:0/112"]`, 1))
	extra, err := bed.AddClientAddrs(context.Background(), 8, true)
	if err != nil {
		t.Fatal(err)
	}
	// extra[0..1] is the pair k=1 (v4, v6), and so on; all are inside sources. Client4/6 are not.
	cases := []struct {
		name string
		src  func(fam family) netip.Addr
		run  func(src, dst netip.Addr)
	}{
		{"wrong order", func(f family) netip.Addr { return pick(extra, 0, f) }, func(src, dst netip.Addr) {
			knockFrom(t, bed, src, dst, "7000/tcp", "9000/tcp", "8000/udp")
		}},
		{"reverse order", func(f family) netip.Addr { return pick(extra, 1, f) }, func(src, dst netip.Addr) {
			knockFrom(t, bed, src, dst, "9000/tcp", "8000/udp", "7000/tcp")
		}},
		{"too slow", func(f family) netip.Addr { return pick(extra, 2, f) }, func(src, dst netip.Addr) {
			knockFrom(t, bed, src, dst, "7000/tcp", "8000/udp")
			time.Sleep(1200 * time.Millisecond)
			knockFrom(t, bed, src, dst, "9000/tcp")
		}},
		{"source not allowed", func(f family) netip.Addr { return f.client }, func(src, dst netip.Addr) {
			knockFrom(t, bed, src, dst, seq...)
		}},
	}
	for _, fam := range families {
		for _, tc := range cases {
			t.Run(fam.name+"/"+tc.name, func(t *testing.T) {
				src := tc.src(fam)
				tc.run(src, fam.server)
				time.Sleep(100 * time.Millisecond)
				if canConnect(t, bed, src, netip.AddrPortFrom(fam.server, 2222)) {
					t.Errorf("%s opened the port for %s", tc.name, src)
				}
			})
		}
	}
	// Every refusal is logged with its source and reason.
	for _, want := range []string{"source not allowed", "sequence timeout", "wrong knock"} {
		if !d.WaitOutput(want, time.Second) {
			t.Errorf("log lacks a %q line", want)
		}
	}
	// A correct knock from an allowed source still works afterwards.
	src := pick(extra, 3, families[0])
	knockFrom(t, bed, src, netnsbed.Server4, seq...)
	if !eventually(t, bed, src, netip.AddrPortFrom(netnsbed.Server4, 2222), true) {
		t.Error("a correct knock after the refusals did not open")
	}
}

// pick returns the v4 or v6 address of the i-th extra pair.
func pick(extra []netip.Addr, i int, f family) netip.Addr {
	if f.name == "ipv6" {
		return extra[2*i+1]
	}
	return extra[2*i]
}

// TestIntegrationConcurrentKnockers covers items 3, 4 and 5: 200 sources per family knock at
// once, interleaved packet by packet, every packet sent twice, with noise from other sources in
// between; all open.
func TestIntegrationConcurrentKnockers(t *testing.T) {
	bed := skipUnlessRoot(t)
	for _, fam := range families {
		listen(t, bed, fam)
	}
	const n = 200
	extra, err := bed.AddClientAddrs(context.Background(), n+20, true)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := startSesame(t, bed, fmt.Sprintf(doorConfig, "nftables", "20s", "60s"))
	noise := extra[2*n:]
	knockers := extra[:2*n]
	r := rand.New(rand.NewPCG(7, 8))
	for stage, el := range seq {
		for i, src := range knockers {
			dst := netnsbed.Server4
			if src.Is6() {
				dst = netnsbed.Server6
			}
			sendOne(t, bed, src, dst, el)
			sendOne(t, bed, src, dst, el) // a duplicate never breaks a sequence
			if i%10 == 0 {
				// Other sources knock wrong ports, first ports and last ports in between.
				nsrc := noise[r.IntN(len(noise))]
				ndst := netnsbed.Server4
				if nsrc.Is6() {
					ndst = netnsbed.Server6
				}
				sendOne(t, bed, nsrc, ndst, seq[(stage+1)%3])
				sendOne(t, bed, nsrc, ndst, "9000/tcp")
			}
		}
	}
	var mu sync.Mutex
	var closed []netip.Addr
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for _, src := range knockers {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dst := netip.AddrPortFrom(netnsbed.Server4, 2222)
			if src.Is6() {
				dst = netip.AddrPortFrom(netnsbed.Server6, 2222)
			}
			ok, err := netnsbed.CanConnect(bed.Client, src, dst, 2*time.Second)
			if err != nil || !ok {
				mu.Lock()
				closed = append(closed, src)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(closed) > 0 {
		t.Errorf("%d of %d interleaved knockers could not connect, e.g. %v", len(closed), len(knockers), closed[:min(5, len(closed))])
	}
	out := nft(t, bed.Server, "list", "set", "inet", "sesame", "grants4")
	if got := strings.Count(out, "tcp . 2222"); got != n {
		t.Errorf("grants4 holds %d grants, want %d", got, n)
	}
	_ = d
}

// TestIntegrationSweepOpensNothing covers item 6: ascending, descending and random sweeps from
// one source over a range that contains the sequence never open the door.
func TestIntegrationSweepOpensNothing(t *testing.T) {
	bed := skipUnlessRoot(t)
	svc := listen(t, bed, families[0])
	extra, err := bed.AddClientAddrs(context.Background(), 3, false)
	if err != nil {
		t.Fatal(err)
	}
	// Adjacent ports: the hardest case for a sweep (an ascending sweep walks the exact sequence).
	cfg := strings.Replace(fmt.Sprintf(doorConfig, "nftables", "10s", "30s"),
		`sequence = ["7000/tcp", "8000/udp", "9000/tcp"]`, `sequence = ["7000/tcp", "7001/tcp", "7002/tcp"]`, 1)
	d, _ := startSesame(t, bed, cfg)
	var ports []uint16
	for p := uint16(6800); p <= 7200; p++ {
		ports = append(ports, p)
	}
	desc := make([]uint16, len(ports))
	for i, p := range ports {
		desc[len(ports)-1-i] = p
	}
	rnd := append([]uint16(nil), ports...)
	rand.New(rand.NewPCG(9, 10)).Shuffle(len(rnd), func(i, j int) { rnd[i], rnd[j] = rnd[j], rnd[i] })
	sweeps := map[string][]uint16{"ascending": ports, "descending": desc, "random": rnd}
	i := 0
	for name, order := range sweeps {
		src := extra[i]
		i++
		t.Run(name, func(t *testing.T) {
			for _, p := range order {
				sendOne(t, bed, src, netnsbed.Server4, fmt.Sprintf("%d/tcp", p))
			}
			time.Sleep(100 * time.Millisecond)
			if canConnect(t, bed, src, svc) {
				t.Errorf("a %s sweep from %s opened the door", name, src)
			}
		})
	}
	if !d.WaitOutput("sweep guard", time.Second) {
		t.Error("no sweep guard log line")
	}
	// The guard is per source: the legitimate client still gets in at once.
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, "7000/tcp", "7001/tcp", "7002/tcp")
	if !eventually(t, bed, netnsbed.Client4, svc, true) {
		t.Error("the legitimate knock after the sweeps did not open")
	}
}

// TestIntegrationEstablishedSurvivesExpiry: a connection opened during the grant keeps working
// after the grant expires, while new connections are refused.
func TestIntegrationEstablishedSurvivesExpiry(t *testing.T) {
	bed := skipUnlessRoot(t)
	addr := listen(t, bed, families[0])
	startSesame(t, bed, fmt.Sprintf(doorConfig, "nftables", "5s", "2s"))
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, seq...)
	var held *netnsbed.Session
	if !waitFor(2*time.Second, func() bool {
		s, err := netnsbed.Open(bed.Client, netip.Addr{}, addr, 300*time.Millisecond)
		held = s
		return err == nil
	}) {
		t.Fatal("no greeting and echo after knocking")
	}
	defer held.Close()
	time.Sleep(3 * time.Second)
	if canConnect(t, bed, netip.Addr{}, addr) {
		t.Fatal("new connection accepted after the grant expired")
	}
	if err := held.Echo(time.Now().Add(2 * time.Second)); err != nil {
		t.Fatalf("established connection after expiry: %v", err)
	}
}

// TestIntegrationKill9 kills the server with a live grant: the grant still expires on time, the
// port stays closed to others while the daemon is down, and a restart neither duplicates nor
// loses the grant.
func TestIntegrationKill9(t *testing.T) {
	bed := skipUnlessRoot(t)
	svc := listen(t, bed, families[0])
	extra, err := bed.AddClientAddrs(context.Background(), 1, false)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(doorConfig, "nftables", "5s", "4s")
	d, _ := startSesame(t, bed, cfg)
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, seq...)
	if !eventually(t, bed, netnsbed.Client4, svc, true) {
		t.Fatal("not open after knock")
	}
	granted := time.Now()
	d.Stop(syscall.SIGKILL)
	if canConnect(t, bed, extra[0], svc) {
		t.Error("daemon dead: port open to a source without a grant")
	}
	if !canConnect(t, bed, netnsbed.Client4, svc) {
		t.Error("daemon dead: live grant lost")
	}
	// Restart: the grant is carried over once, with its remaining time.
	startSesame(t, bed, cfg)
	out := nft(t, bed.Server, "list", "set", "inet", "sesame", "grants4")
	if n := strings.Count(out, "198.18.0.2 . tcp . 2222"); n != 1 {
		t.Fatalf("after restart the grant appears %d times, want 1:\n%s", n, out)
	}
	if !canConnect(t, bed, netnsbed.Client4, svc) {
		t.Error("after restart: live grant lost")
	}
	// Kill again and let the grant expire with the daemon down.
	time.Sleep(time.Until(granted.Add(4500 * time.Millisecond)))
	if !eventually(t, bed, netnsbed.Client4, svc, false) {
		t.Error("grant did not expire on time after restart")
	}
	if left := time.Since(granted); left > 7*time.Second {
		t.Errorf("grant lived %s, open_for is 4s (restart reset its timeout?)", left)
	}
}

// TestIntegrationDaemonDownFailsClosed: with the daemon killed and the grant expired, the port is
// closed.
func TestIntegrationDaemonDownFailsClosed(t *testing.T) {
	bed := skipUnlessRoot(t)
	svc := listen(t, bed, families[1])
	d, _ := startSesame(t, bed, fmt.Sprintf(doorConfig, "nftables", "5s", "1s"))
	knockFrom(t, bed, netnsbed.Client6, netnsbed.Server6, seq...)
	if !eventually(t, bed, netnsbed.Client6, svc, true) {
		t.Fatal("not open after knock")
	}
	d.Stop(syscall.SIGKILL)
	time.Sleep(1500 * time.Millisecond)
	if canConnect(t, bed, netnsbed.Client6, svc) {
		t.Error("daemon dead and grant expired, but the port is open")
	}
	// A clean stop also keeps the gate (on_stop = "close" by default).
	d2, _ := startSesame(t, bed, fmt.Sprintf(doorConfig, "nftables", "5s", "1s"))
	d2.Stop(syscall.SIGTERM)
	if d2.Err() != nil {
		t.Errorf("SIGTERM: server exited with %v", d2.Err())
	}
	if canConnect(t, bed, netnsbed.Client6, svc) {
		t.Error("after a clean stop the port is open")
	}
}

// TestIntegrationReload: SIGHUP reloads the config without dropping live grants.
func TestIntegrationReload(t *testing.T) {
	bed := skipUnlessRoot(t)
	svc := listen(t, bed, families[0])
	svc2 := netip.AddrPortFrom(netnsbed.Server4, 2223)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := netnsbed.Listen(ctx, bed.Server, svc2); err != nil {
		t.Fatal(err)
	}
	d, path := startSesame(t, bed, fmt.Sprintf(doorConfig, "nftables", "5s", "30s"))
	if !canConnect(t, bed, netnsbed.Client4, svc2) {
		t.Fatal("unprotected port 2223 closed")
	}
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, seq...)
	if !eventually(t, bed, netnsbed.Client4, svc, true) {
		t.Fatal("not open after knock")
	}
	// New config: the door also opens 2223, and a second door exists.
	cfg := fmt.Sprintf(doorConfig, "nftables", "5s", "30s")
	cfg = strings.Replace(cfg, `open = ["tcp/2222"]`, `open = ["tcp/2222", "tcp/2223"]`, 1)
	cfg = strings.ReplaceAll(cfg, "STATE_DIR", t.TempDir())
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d.Cmd.Process.Signal(syscall.SIGHUP)
	if !d.WaitOutput("configuration reloaded", 5*time.Second) {
		t.Fatal("no reload log line")
	}
	if !canConnect(t, bed, netnsbed.Client4, svc) {
		t.Error("live grant dropped by the reload")
	}
	if canConnect(t, bed, netnsbed.Client4, svc2) {
		t.Error("2223 not protected after the reload")
	}
	// A broken config on SIGHUP keeps the running one.
	if err := os.WriteFile(path, []byte("[server]\nbogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.Cmd.Process.Signal(syscall.SIGHUP)
	if !d.WaitOutput("reload failed", 5*time.Second) {
		t.Fatal("no reload failure log line")
	}
	if !canConnect(t, bed, netnsbed.Client4, svc) {
		t.Error("grant dropped by a failed reload")
	}
}

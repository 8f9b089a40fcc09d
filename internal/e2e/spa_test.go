//go:build linux

package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// The keys of the fwknop reference run (LIVE.md), as `sesame keygen --fwknop` would write them.
const (
	fwknopKey  = "iydGYI5G+2uHWjfW+IeiSY2bkRJEJ8xorcw5mENTqJY="
	fwknopHMAC = "kRzlTYr0K1R4pc+Vy2hRIOY3ggfgSjsrylbO/9g/VZA9FfhU8R+Xg2cTnNTw+PAyHyeCQL1G64J++Gr4cPhpmg=="
	spaPort    = 62201
)

// spaKeys are the native credentials of a test, written to files in dir.
type spaKeys struct {
	dir       string
	alice     spa.SharedKey
	bob       *spa.KeyPair
	serverPub spa.PublicKey
}

func writeSecret(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func newSPAKeys(t *testing.T) *spaKeys {
	t.Helper()
	k := &spaKeys{dir: t.TempDir()}
	var err error
	if k.alice, err = spa.GenerateSharedKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	if k.bob, err = spa.GeneratePair(rand.Reader); err != nil {
		t.Fatal(err)
	}
	server, err := spa.GeneratePair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k.serverPub = server.Public()
	text, _ := k.alice.MarshalText()
	writeSecret(t, filepath.Join(k.dir, "alice.key"), text)
	text, _ = server.MarshalText()
	writeSecret(t, filepath.Join(k.dir, "server"), text)
	writeSecret(t, filepath.Join(k.dir, "fwknop.key"), []byte("KEY_BASE64 "+fwknopKey+"\nHMAC_KEY_BASE64 "+fwknopHMAC+"\n"))
	return k
}

// config returns a native configuration: alice (shared key) and bob (key pair) may open
// tcp/2222 from the bed's own client addresses (198.18.0.0/24, fd5e:5a3e::/112), legacy (fwknop)
// from anywhere in the bed.
func (k *spaKeys) config(sniff bool, stateDir string) string {
	pub, _ := k.bob.Public().MarshalText()
	return spaStealth(sniff, `[server]
state_dir = %q

[spa]
listen = "udp/%d"
sniff = %v
max_age = "120s"
server_key_file = %q

[[spa.client]]
name = "alice"
key_file = %q
open = ["tcp/2222"]
sources = ["198.18.0.0/24", "fd5e:5a3e::/112"]
max_open_for = "1h"

[[spa.client]]
name = "bob"
public_key = %q
open = ["tcp/2222"]
sources = ["198.18.0.0/24", "fd5e:5a3e::/112"]

[[spa.client]]
name = "legacy"
format = "fwknop"
key_file = %q
open = ["tcp/2222"]
sources = ["198.18.0.0/16"]
default_open_for = "10s"
max_open_for = "60s"
`, stateDir, spaPort, sniff, filepath.Join(k.dir, "server"), filepath.Join(k.dir, "alice.key"), string(pub), filepath.Join(k.dir, "fwknop.key"))
}

func (k *spaKeys) shared() spa.ClientCredential {
	return spa.ClientCredential{ID: "alice", Shared: &k.alice}
}
func (k *spaKeys) pair() spa.ClientCredential {
	return spa.ClientCredential{ID: "bob", Pair: k.bob, Server: &k.serverPub}
}

func seal(t *testing.T, cred spa.ClientCredential, req spa.Request, at time.Time) []byte {
	t.Helper()
	if req.Ports == nil {
		req.Ports = []netport.Port{{Proto: netport.TCP, Num: 2222}}
	}
	pkt, err := spa.Seal(req, cred, at, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

// sendUDP sends payload from src in the client namespace to dst.
func sendUDP(t *testing.T, bed *netnsbed.Bed, src netip.Addr, dst netip.AddrPort, payload []byte) {
	t.Helper()
	err := netnsbed.Do(bed.Client, func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(dst))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(payload)
		return err
	})
	if err != nil {
		t.Fatalf("send SPA from %s to %s: %v", src, dst, err)
	}
}

// reasonAttr is the reason attribute as the text log handler writes it.
func reasonAttr(reason string) string {
	if strings.ContainsAny(reason, " =\"") {
		return fmt.Sprintf("reason=%q", reason)
	}
	return "reason=" + reason
}

// waitDecision waits for a log line about src with reason (and client when not empty).
func waitDecision(d *daemon, src netip.Addr, client, reason string, timeout time.Duration) bool {
	return waitFor(timeout, func() bool { return countDecisions(d, src, client, reason) > 0 })
}

func countDecisions(d *daemon, src netip.Addr, client, reason string) int {
	n := 0
	for l := range strings.SplitSeq(d.Output(), "\n") {
		if strings.Contains(l, " src="+src.String()+" ") && strings.Contains(l, reasonAttr(reason)) &&
			(client == "" || strings.Contains(l, " client="+client+" ")) {
			n++
		}
	}
	return n
}

// fwknopClient runs the real fwknop client in the client namespace.
func fwknopClient(t *testing.T, bed *netnsbed.Bed, args ...string) {
	t.Helper()
	base := []string{"--no-rc-file", "--no-save-args", "-D", netnsbed.Server4.String(), "-p", fmt.Sprint(spaPort),
		"--key-base64-rijndael", fwknopKey, "--use-hmac", "--key-base64-hmac", fwknopHMAC}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := netnsbed.Command(ctx, bed.Client, "fwknop", append(base, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fwknop %v: %v\n%s", args, err, out)
	}
}

func skipWithoutFwknop(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("fwknop"); err != nil {
		t.Skip("skipping: the fwknop client is not installed")
	}
}

var spaModes = []struct {
	name  string
	sniff bool
}{{"udp", false}, {"sniff", true}}

// TestIntegrationSPAFwknopClient: the real fwknop client opens the port through sesame, in UDP
// and sniff mode, with an explicit allow address and with -s (0.0.0.0: the packet's source), and
// a saved packet sent again is refused as a replay.
func TestIntegrationSPAFwknopClient(t *testing.T) {
	skipWithoutFwknop(t)
	for _, mode := range spaModes {
		t.Run(mode.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			svc := listen(t, bed, families[0])
			k := newSPAKeys(t)
			d, _ := startSesame(t, bed, k.config(mode.sniff, t.TempDir()))
			if canConnect(t, bed, netnsbed.Client4, svc) {
				t.Fatal("protected port open before any SPA packet")
			}
			saved := filepath.Join(t.TempDir(), "packet")
			fwknopClient(t, bed, "-A", "tcp/2222", "-a", netnsbed.Client4.String(), "-B", saved)
			if !waitDecision(d, netnsbed.Client4, "legacy", "accepted", 2*time.Second) {
				t.Fatal("no accepted line for the fwknop packet")
			}
			if !eventually(t, bed, netnsbed.Client4, svc, true) {
				t.Fatal("port not open after a valid fwknop packet")
			}
			// -s: allow IP 0.0.0.0, the packet's source; -f: client timeout, capped at 60 s.
			fwknopClient(t, bed, "-A", "tcp/2222", "-s", "-f", "100")
			if !waitFor(2*time.Second, func() bool { return countDecisions(d, netnsbed.Client4, "legacy", "accepted") == 2 }) {
				t.Fatal("no second accepted line for fwknop -s")
			}
			if !strings.Contains(d.Output(), "open_for=1m0s") {
				t.Error("client timeout 100 s was not capped at max_open_for 60 s")
			}
			// The saved packet again (without -B's trailing newline): a replay.
			pkt, err := os.ReadFile(saved)
			if err != nil {
				t.Fatal(err)
			}
			sendUDP(t, bed, netnsbed.Client4, netip.AddrPortFrom(netnsbed.Server4, spaPort), []byte(strings.TrimSpace(string(pkt))))
			if !waitDecision(d, netnsbed.Client4, "legacy", "replay", 2*time.Second) {
				t.Error("a replayed fwknop packet was not refused as a replay")
			}
			// Wrongly keyed, and a source outside the client's sources.
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			out, err := netnsbed.Command(ctx, bed.Client, "fwknop", "--no-rc-file", "--no-save-args", "-D", netnsbed.Server4.String(),
				"-A", "tcp/2222", "-s", "--key-base64-rijndael", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
				"--use-hmac", "--key-base64-hmac", "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=").CombinedOutput()
			if err != nil {
				t.Fatalf("fwknop: %v\n%s", err, out)
			}
			if !waitDecision(d, netnsbed.Client4, "", "bad MAC", 2*time.Second) {
				t.Error("a wrongly keyed fwknop packet was not refused with bad MAC")
			}
		})
	}
}

// TestIntegrationSPANative: packets sealed here with each credential kind open the port for
// their source only, over IPv4 and IPv6, in UDP and sniff mode; the same packet again is a replay.
func TestIntegrationSPANative(t *testing.T) {
	t.Parallel() // mostly waiting for timeouts: paired with another at the end of the run (doc.go)
	for _, mode := range spaModes {
		t.Run(mode.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			for _, fam := range families {
				listen(t, bed, fam)
			}
			extra, err := bed.AddClientAddrs(context.Background(), 1, true)
			if err != nil {
				t.Fatal(err)
			}
			k := newSPAKeys(t)
			d, _ := startSesame(t, bed, k.config(mode.sniff, t.TempDir()))
			for _, fam := range families {
				for _, kind := range []struct {
					name string
					cred spa.ClientCredential
				}{{"shared", k.shared()}, {"pair", k.pair()}} {
					svc := netip.AddrPortFrom(fam.server, 2222)
					if canConnect(t, bed, fam.client, svc) {
						t.Fatalf("%s/%s: port open before the packet", fam.name, kind.name)
					}
					pkt := seal(t, kind.cred, spa.Request{Duration: 2 * time.Second}, time.Now())
					sendUDP(t, bed, fam.client, netip.AddrPortFrom(fam.server, spaPort), pkt)
					if !eventually(t, bed, fam.client, svc, true) {
						t.Fatalf("%s/%s: port not open after a valid packet", fam.name, kind.name)
					}
					if !waitDecision(d, fam.client, kind.cred.ID, "accepted", time.Second) {
						t.Errorf("%s/%s: no accepted line", fam.name, kind.name)
					}
					if other := pick(extra, 0, fam); canConnect(t, bed, other, svc) {
						t.Errorf("%s/%s: port open for %s, which sent nothing", fam.name, kind.name, other)
					}
					sendUDP(t, bed, fam.client, netip.AddrPortFrom(fam.server, spaPort), pkt)
					if !waitDecision(d, fam.client, kind.cred.ID, "replay", 2*time.Second) {
						t.Errorf("%s/%s: the same packet again was not refused as a replay", fam.name, kind.name)
					}
					// The grant ends after the 2 s asked for; the replay did not renew it.
					if !waitFor(4*time.Second, func() bool { return !canConnect(t, bed, fam.client, svc) }) {
						t.Errorf("%s/%s: port still open after the requested duration", fam.name, kind.name)
					}
				}
			}
			if mode.sniff {
				// Nothing listens on the SPA port and the gate drops it: no ICMP port unreachable.
				if out := nft(t, bed.Server, "list", "ruleset"); !strings.Contains(out, fmt.Sprint(spaPort)) {
					t.Errorf("the gate does not drop the SPA port in sniff mode:\n%s", out)
				}
			}
		})
	}
}

// TestIntegrationSPAReplayAfterRestart: a packet accepted before a restart is refused after it
// (same state_dir).
func TestIntegrationSPAReplayAfterRestart(t *testing.T) {
	bed := skipUnlessRoot(t)
	svc := listen(t, bed, families[0])
	k := newSPAKeys(t)
	cfg := k.config(false, t.TempDir())
	d, _ := startSesame(t, bed, cfg)
	pkt := seal(t, k.shared(), spa.Request{Duration: 3 * time.Second}, time.Now())
	dst := netip.AddrPortFrom(netnsbed.Server4, spaPort)
	sendUDP(t, bed, netnsbed.Client4, dst, pkt)
	if !eventually(t, bed, netnsbed.Client4, svc, true) {
		t.Fatal("port not open after a valid packet")
	}
	d.Stop(syscall.SIGTERM)
	time.Sleep(3 * time.Second) // let the grant expire
	d2, _ := startSesame(t, bed, cfg)
	sendUDP(t, bed, netnsbed.Client4, dst, pkt)
	if !waitDecision(d2, netnsbed.Client4, "alice", "replay", 2*time.Second) {
		t.Fatal("the packet was not refused as a replay after a restart")
	}
	if canConnect(t, bed, netnsbed.Client4, svc) {
		t.Error("the replayed packet opened the port")
	}
	// A fresh packet still works after the restart.
	sendUDP(t, bed, netnsbed.Client4, dst, seal(t, k.shared(), spa.Request{}, time.Now()))
	if !eventually(t, bed, netnsbed.Client4, svc, true) {
		t.Error("a fresh packet after the restart did not open the port")
	}
}

// TestIntegrationSPARefusals: each bad packet is refused with its reason, from its own source,
// and opens nothing for it.
func TestIntegrationSPARefusals(t *testing.T) {
	bed := skipUnlessRoot(t)
	for _, fam := range families {
		listen(t, bed, fam)
	}
	extra, err := bed.AddClientAddrs(context.Background(), 1, true)
	if err != nil {
		t.Fatal(err)
	}
	k := newSPAKeys(t)
	d, _ := startSesame(t, bed, k.config(true, t.TempDir()))
	stranger, _ := spa.GenerateSharedKey(rand.Reader)
	tamper := func(p []byte) []byte { p[len(p)-1] ^= 1; return p }
	cases := []struct {
		name, client, reason string
		src                  func(f family) netip.Addr
		pkt                  func() []byte
	}{
		{"stale", "alice", "stale", nil, func() []byte { return seal(t, k.shared(), spa.Request{}, time.Now().Add(-5*time.Minute)) }},
		{"future", "alice", "future", nil, func() []byte { return seal(t, k.shared(), spa.Request{}, time.Now().Add(5*time.Minute)) }},
		{"tampered shared", "alice", "bad MAC", nil, func() []byte { return tamper(seal(t, k.shared(), spa.Request{}, time.Now())) }},
		{"tampered pair", "bob", "bad MAC", nil, func() []byte { return tamper(seal(t, k.pair(), spa.Request{}, time.Now())) }},
		{"truncated", "alice", "too short", nil, func() []byte { return seal(t, k.shared(), spa.Request{}, time.Now())[:60] }},
		{"wrongly keyed", "", "unknown client", nil, func() []byte {
			return seal(t, spa.ClientCredential{ID: "alice", Shared: &stranger}, spa.Request{}, time.Now())
		}},
		{"unknown client", "alice", "unknown client", nil, func() []byte {
			return seal(t, spa.ClientCredential{ID: "mallory", Shared: &k.alice}, spa.Request{}, time.Now())
		}},
		{"port not allowed", "alice", "port not allowed", nil, func() []byte {
			return seal(t, k.shared(), spa.Request{Ports: []netport.Port{{Proto: netport.TCP, Num: 2222}, {Proto: netport.TCP, Num: 22}}}, time.Now())
		}},
		{"source not allowed", "bob", "source not allowed", func(f family) netip.Addr { return pick(extra, 0, f) },
			func() []byte { return seal(t, k.pair(), spa.Request{}, time.Now()) }},
		{"garbage", "", "malformed", nil, func() []byte { return []byte(strings.Repeat("\x00garbage", 30)) }},
		{"oversized", "", "too long", nil, func() []byte { return append([]byte(spa.Magic), make([]byte, 1400)...) }},
	}
	for _, fam := range families {
		for _, tc := range cases {
			t.Run(fam.name+"/"+tc.name, func(t *testing.T) {
				src := fam.client
				if tc.src != nil {
					src = tc.src(fam)
				}
				before := countDecisions(d, src, tc.client, tc.reason)
				sendUDP(t, bed, src, netip.AddrPortFrom(fam.server, spaPort), tc.pkt())
				if !waitFor(2*time.Second, func() bool { return countDecisions(d, src, tc.client, tc.reason) > before }) {
					t.Fatalf("no %q line for %s", tc.reason, src)
				}
				if canConnect(t, bed, src, netip.AddrPortFrom(fam.server, 2222)) {
					t.Errorf("%s opened the port for %s", tc.name, src)
				}
			})
		}
	}
	if strings.Contains(d.Output(), "spa accepted") {
		t.Errorf("a bad packet was accepted:\n%s", d.Output())
	}
}

// TestIntegrationSPAFwknopConf: --fwknop-conf alone behaves as fwknopd: iptables, grants in
// sesame's chain ahead of the host's own DROP rule; in UDP-server and sniff mode.
func TestIntegrationSPAFwknopConf(t *testing.T) {
	skipWithoutFwknop(t)
	for _, mode := range spaModes {
		t.Run(mode.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			svc := listen(t, bed, families[0])
			ctx := context.Background()
			if out, err := netnsbed.Command(ctx, bed.Server, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP").CombinedOutput(); err != nil {
				t.Fatalf("iptables: %v: %s", err, out)
			}
			if canConnect(t, bed, netnsbed.Client4, svc) {
				t.Fatal("the host's DROP rule does not work")
			}
			dir := t.TempDir()
			run := filepath.Join(dir, "run")
			srv := fmt.Sprintf("FWKNOP_RUN_DIR %s;\nMAX_SPA_PACKET_AGE 120;\n", run)
			if mode.sniff {
				srv += fmt.Sprintf("PCAP_INTF %s;\nPCAP_FILTER udp port %d;\n", bed.ServerIf, spaPort)
			} else {
				srv += fmt.Sprintf("ENABLE_UDP_SERVER Y;\nUDPSERV_PORT %d;\n", spaPort)
			}
			writeSecret(t, filepath.Join(dir, "fwknopd.conf"), []byte(srv))
			writeSecret(t, filepath.Join(dir, "access.conf"), []byte("SOURCE ANY\nKEY_BASE64 "+fwknopKey+"\nHMAC_KEY_BASE64 "+fwknopHMAC+
				"\nOPEN_PORTS tcp/2222\nFW_ACCESS_TIMEOUT 10\nMAX_FW_TIMEOUT 60\n"))
			state := filepath.Join(dir, "state")
			d := startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--fwknop-conf", dir, "--state-dir", state, "--log-level", "debug")
			fwknopClient(t, bed, "-A", "tcp/2222", "-a", netnsbed.Client4.String())
			if !eventually(t, bed, netnsbed.Client4, svc, true) {
				t.Fatalf("port not open through the host's DROP rule; log:\n%s", d.Output())
			}
			if !waitDecision(d, netnsbed.Client4, "stanza#1", "accepted", time.Second) {
				t.Error("no accepted line for stanza#1")
			}
			out, err := netnsbed.Command(ctx, bed.Server, "iptables", "-S", "INPUT").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "-A INPUT -j SESAME") {
				t.Errorf("no jump to SESAME in INPUT (%v):\n%s", err, out)
			}
			// The replay cache is persistent state: not in fwknopd's run directory (a tmpfs).
			if _, err := os.Stat(filepath.Join(state, "replay.db")); err != nil {
				t.Errorf("replay cache not in --state-dir: %v", err)
			}
			if _, err := os.Stat(filepath.Join(run, "replay.db")); err == nil {
				t.Error("replay cache in FWKNOP_RUN_DIR")
			}
		})
	}
}

// TestIntegrationSPAReload: SIGHUP applies [spa] client changes (a client added, another's ports
// changed) and a listener change (the new socket accepts, the old one is closed) without a
// restart, and without dropping grants.
func TestIntegrationSPAReload(t *testing.T) {
	bed := skipUnlessRoot(t)
	svc := listen(t, bed, families[0])
	k := newSPAKeys(t)
	stateDir := t.TempDir()
	full := k.config(false, stateDir)
	bobStanza := regexp.MustCompile(`(?s)\[\[spa\.client\]\]\nname = "bob"\n.*?\n\n`)
	if !bobStanza.MatchString(full) {
		t.Fatal("test config has no bob stanza")
	}
	d, path := startSesame(t, bed, bobStanza.ReplaceAllString(full, ""))
	dst := netip.AddrPortFrom(netnsbed.Server4, spaPort)
	rewrite := func(cfg string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		d.Cmd.Process.Signal(syscall.SIGHUP)
	}

	// bob is not configured yet: refused.
	sendUDP(t, bed, netnsbed.Client4, dst, seal(t, k.pair(), spa.Request{}, time.Now()))
	if !waitDecision(d, netnsbed.Client4, "", "unknown client", 2*time.Second) {
		t.Fatal("bob's packet was not refused as from an unknown client before the reload")
	}
	if canConnect(t, bed, netnsbed.Client4, svc) {
		t.Fatal("bob's packet opened the port before bob was configured")
	}

	// Add bob; alice may now open tcp/2223 only.
	rewrite(strings.Replace(full, "name = \"alice\"\nkey_file = "+fmt.Sprintf("%q", filepath.Join(k.dir, "alice.key"))+"\nopen = [\"tcp/2222\"]",
		"name = \"alice\"\nkey_file = "+fmt.Sprintf("%q", filepath.Join(k.dir, "alice.key"))+"\nopen = [\"tcp/2223\"]", 1))
	if !d.WaitOutput("spa configuration reloaded", 5*time.Second) {
		t.Fatalf("no spa reload line:\n%s", tail(d.Output()))
	}
	sendUDP(t, bed, netnsbed.Client4, dst, seal(t, k.shared(), spa.Request{}, time.Now()))
	if !waitDecision(d, netnsbed.Client4, "alice", "port not allowed", 2*time.Second) {
		t.Error("alice's request for tcp/2222 was not refused after her open list changed")
	}
	if canConnect(t, bed, netnsbed.Client4, svc) {
		t.Fatal("alice opened tcp/2222 after the reload took it from her")
	}
	sendUDP(t, bed, netnsbed.Client4, dst, seal(t, k.pair(), spa.Request{Duration: 30 * time.Second}, time.Now()))
	if !eventually(t, bed, netnsbed.Client4, svc, true) {
		t.Fatal("bob, added by the reload, could not open the port")
	}

	// A listener change is applied too: the new socket accepts, the old one is closed.
	rewrite(strings.Replace(full, fmt.Sprintf(`listen = "udp/%d"`, spaPort), fmt.Sprintf(`listen = "udp/%d"`, spaPort+1), 1))
	if !waitFor(5*time.Second, func() bool { return strings.Count(d.Output(), "spa configuration reloaded") >= 2 }) {
		t.Fatalf("the listener change was not applied:\n%s", tail(d.Output()))
	}
	before, accepted := countDecisions(d, netnsbed.Client4, "bob", ""), countDecisions(d, netnsbed.Client4, "bob", "accepted")
	sendUDP(t, bed, netnsbed.Client4, dst, seal(t, k.pair(), spa.Request{}, time.Now()))
	time.Sleep(300 * time.Millisecond)
	if n := countDecisions(d, netnsbed.Client4, "bob", ""); n != before {
		t.Error("the old SPA socket still answers after the listener moved")
	}
	moved := netip.AddrPortFrom(netnsbed.Server4, spaPort+1)
	sendUDP(t, bed, netnsbed.Client4, moved, seal(t, k.pair(), spa.Request{}, time.Now()))
	if !waitFor(2*time.Second, func() bool { return countDecisions(d, netnsbed.Client4, "bob", "accepted") > accepted }) {
		t.Error("the new SPA socket does not accept")
	}
	if !canConnect(t, bed, netnsbed.Client4, svc) {
		t.Error("a grant was lost across the reloads")
	}
}

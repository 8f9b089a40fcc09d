//go:build linux

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/spa"
	"github.com/sesame-knock/sesame/internal/spaclient"
)

// pingConf is an SPA section with [spa] icmp: alice (native, shared key) and legacy (fwknop
// format) may open tcp/2222; the UDP port is a socket unless the stealth gate sniffs it.
const pingConf = `[server]
state_dir = "STATE_DIR"
firewall = %q
stealth = %q

[spa]
listen = "udp/%d"
icmp = true

[[spa.client]]
name = "alice"
key_file = %q
open = ["tcp/2222"]
sources = ["198.18.0.0/24", "fd5e:5a3e::/112"]
default_open_for = "2s"
max_open_for = "2s"

[[spa.client]]
name = "legacy"
format = "fwknop"
key_file = %q
open = ["tcp/2222"]
sources = ["198.18.0.0/16"]
default_open_for = "2s"
max_open_for = "2s"
`

func (k *spaKeys) pingConfig(firewall, stealth string) string {
	return fmt.Sprintf(pingConf, firewall, stealth, spaPort, filepath.Join(k.dir, "alice.key"), filepath.Join(k.dir, "fwknop.key"))
}

// sesameOpen runs 'sesame open ARGS' in the client namespace and returns its output.
func sesameOpen(t *testing.T, bed *netnsbed.Bed, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := netnsbed.Command(ctx, bed.Client, sesameBin, append([]string{"open"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("sesame open %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// pingSPA sends pkt in one echo request from the client namespace (spaclient.SendPing).
func pingSPA(t *testing.T, bed *netnsbed.Bed, dst netip.Addr, pkt []byte) {
	t.Helper()
	if err := netnsbed.Do(bed.Client, func() error { _, err := spaclient.SendPing(dst, pkt); return err }); err != nil {
		t.Fatalf("ping %s: %v", dst, err)
	}
}

// pingAnswered runs the real ping from the client namespace: one echo request to dst, and
// whether a reply came within a second.
func pingAnswered(t *testing.T, bed *netnsbed.Bed, dst netip.Addr) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := netnsbed.Command(ctx, bed.Client, "ping", "-n", "-c", "1", "-W", "1", dst.String()).CombinedOutput()
	switch {
	case err == nil:
		return true
	case strings.Contains(string(out), "1 packets transmitted, 0 received"):
		return false
	}
	t.Fatalf("ping %s: %v\n%s", dst, err, out)
	return false
}

// TestIntegrationSPAPing: with [spa] icmp, 'sesame open --icmp' from an unprivileged ping
// socket opens tcp/2222 over IPv4 and IPv6 (data both ways), for the sender only; the same
// ping sent again opens nothing (a replay); 'sesame open --fwknop --icmp' opens; the real
// 'fwknop -P icmp' (an echo reply by default) and with --icmp-type 8 (an echo request) opens
// too, and its packet again is a replay.
func TestIntegrationSPAPing(t *testing.T) {
	t.Parallel() // mostly waiting for timeouts: paired with another at the end of the run (doc.go)
	skipWithoutFwknop(t)
	bed := skipUnlessRoot(t)
	for _, fam := range families {
		listen(t, bed, fam)
	}
	// An IPv4 address that sends nothing (an IPv6 one would become the source the kernel
	// picks for the pings).
	extra, err := bed.AddClientAddrs(context.Background(), 1, false)
	if err != nil {
		t.Fatal(err)
	}
	// Root's group may open ping sockets in the client namespace: sesame open uses one.
	if out, err := netnsbed.Command(context.Background(), bed.Client, "sysctl", "-qw", "net.ipv4.ping_group_range=0 0").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v: %s", err, out)
	}
	k := newSPAKeys(t)
	d, _ := startSesame(t, bed, k.pingConfig("nftables", "closed"))
	for _, fam := range families {
		svc := netip.AddrPortFrom(fam.server, 2222)
		if canConnect(t, bed, fam.client, svc) {
			t.Fatalf("%s: port open before any packet", fam.name)
		}
		out := sesameOpen(t, bed, fam.server.String(), "-A", "tcp/2222", "--id", "alice", "--key-file", filepath.Join(k.dir, "alice.key"), "-a", fam.client.String(), "--icmp", "-v")
		if !strings.Contains(out, "in an ICMP echo request to "+fam.server.String()) || !strings.Contains(out, "sent from a ping socket") {
			t.Errorf("%s: sesame open -v said:\n%s", fam.name, out)
		}
		if !eventually(t, bed, fam.client, svc, true) {
			t.Fatalf("%s: no greeting and echo on tcp/2222 after sesame open --icmp; log:\n%s", fam.name, tail(d.Output()))
		}
		if !waitDecision(d, fam.client, "alice", "accepted", time.Second) {
			t.Errorf("%s: no accepted line", fam.name)
		}
		if fam.name == "ipv4" && canConnect(t, bed, extra[0], svc) {
			t.Errorf("%s: port open for %s, which sent nothing", fam.name, extra[0])
		}

		// One packet, pinged twice: the second opens nothing once the first grant is over.
		pkt := seal(t, k.shared(), spa.Request{Addr: fam.client, Duration: 2 * time.Second}, time.Now())
		if !waitFor(4*time.Second, func() bool { return !canConnect(t, bed, fam.client, svc) }) {
			t.Fatalf("%s: the grant did not end", fam.name)
		}
		pingSPA(t, bed, fam.server, pkt)
		if !eventually(t, bed, fam.client, svc, true) {
			t.Fatalf("%s: the sealed packet in a ping did not open", fam.name)
		}
		if !waitFor(4*time.Second, func() bool { return !canConnect(t, bed, fam.client, svc) }) {
			t.Fatalf("%s: the grant did not end", fam.name)
		}
		pingSPA(t, bed, fam.server, pkt)
		if !waitDecision(d, fam.client, "alice", "replay", 2*time.Second) {
			t.Errorf("%s: the same ping again was not refused as a replay", fam.name)
		}
		if canConnect(t, bed, fam.client, svc) {
			t.Errorf("%s: the replayed ping opened the port", fam.name)
		}
	}

	// sesame open --fwknop --icmp: fwknop's format in an echo request.
	svc := netip.AddrPortFrom(netnsbed.Server4, 2222)
	if !waitFor(4*time.Second, func() bool { return !canConnect(t, bed, netnsbed.Client4, svc) }) {
		t.Fatal("the previous grant did not end")
	}
	sesameOpen(t, bed, netnsbed.Server4.String(), "-A", "tcp/2222", "--fwknop", "--key-file", filepath.Join(k.dir, "fwknop.key"), "-a", netnsbed.Client4.String(), "--icmp")
	if !waitDecision(d, netnsbed.Client4, "legacy", "accepted", 2*time.Second) || !eventually(t, bed, netnsbed.Client4, svc, true) {
		t.Fatalf("sesame open --fwknop --icmp did not open; log:\n%s", tail(d.Output()))
	}

	// The real fwknop client, -P icmp: an echo reply by default, an echo request with --icmp-type 8.
	for i, typ := range [][]string{nil, {"--icmp-type", "8"}} {
		if !waitFor(4*time.Second, func() bool { return !canConnect(t, bed, netnsbed.Client4, svc) }) {
			t.Fatal("the previous grant did not end")
		}
		saved := filepath.Join(t.TempDir(), "packet")
		fwknopClient(t, bed, append([]string{"-A", "tcp/2222", "-a", netnsbed.Client4.String(), "-P", "icmp", "-B", saved}, typ...)...)
		if !waitFor(2*time.Second, func() bool { return countDecisions(d, netnsbed.Client4, "legacy", "accepted") == i+2 }) {
			t.Fatalf("fwknop -P icmp %v: no accepted line; log:\n%s", typ, tail(d.Output()))
		}
		if !eventually(t, bed, netnsbed.Client4, svc, true) {
			t.Fatalf("fwknop -P icmp %v: port not open", typ)
		}
		wire, err := os.ReadFile(saved)
		if err != nil {
			t.Fatal(err)
		}
		if !waitFor(4*time.Second, func() bool { return !canConnect(t, bed, netnsbed.Client4, svc) }) {
			t.Fatal("the fwknop grant did not end")
		}
		pingSPA(t, bed, netnsbed.Server4, []byte(strings.TrimSpace(string(wire))))
		if !waitFor(2*time.Second, func() bool { return countDecisions(d, netnsbed.Client4, "legacy", "replay") == i+1 }) {
			t.Errorf("fwknop -P icmp %v: its packet pinged again was not refused as a replay", typ)
		}
		if canConnect(t, bed, netnsbed.Client4, svc) {
			t.Errorf("fwknop -P icmp %v: the replayed packet opened the port", typ)
		}
	}
}

// spaPingAnswered sends pkt in one echo request from a ping socket in the client namespace and
// reports whether an echo reply carrying pkt back came within a second.
func spaPingAnswered(t *testing.T, bed *netnsbed.Bed, dst netip.Addr, pkt []byte) bool {
	t.Helper()
	if out, err := netnsbed.Command(context.Background(), bed.Client, "sysctl", "-qw", "net.ipv4.ping_group_range=0 0").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v: %s", err, out)
	}
	network, laddr, proto := "udp4", "0.0.0.0", 1
	var typ icmp.Type = ipv4.ICMPTypeEcho
	if dst.Is6() {
		network, laddr, proto, typ = "udp6", "::", 58, ipv6.ICMPTypeEchoRequest
	}
	var c *icmp.PacketConn
	if err := netnsbed.Do(bed.Client, func() (err error) { c, err = icmp.ListenPacket(network, laddr); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg, err := (&icmp.Message{Type: typ, Body: &icmp.Echo{Seq: 1, Data: pkt}}).Marshal(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteTo(msg, &net.UDPAddr{IP: dst.AsSlice()}); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	for range 10 {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return false
		}
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && (m.Type == ipv4.ICMPTypeEchoReply || m.Type == ipv6.ICMPTypeEchoReply) && bytes.Equal(e.Data, pkt) {
			return true
		}
	}
	return false
}

// TestIntegrationSPAPingStealth: what the real ping sees from the client, per [server] stealth,
// IPv4 and IPv6, nftables and iptables: "closed" and "off" leave pings to the host (answered, as without sesame, the SPA
// ping too: its bytes come back), "dark" drops them (no reply, also to the SPA ping); an SPA
// ping opens in every mode, and 'sesame open --icmp' is accepted in every mode.
func TestIntegrationSPAPingStealth(t *testing.T) {
	t.Parallel() // mostly waiting for timeouts: paired with another at the end of the run (doc.go)
	for _, tc := range []struct {
		firewall, stealth string
		answered          bool
	}{
		{"nftables", "closed", true}, {"nftables", "dark", false}, {"nftables", "off", true},
		{"iptables", "closed", true}, {"iptables", "dark", false},
	} {
		t.Run(tc.firewall+"/"+tc.stealth, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			for _, fam := range families {
				listen(t, bed, fam)
				if !pingAnswered(t, bed, fam.server) {
					t.Fatalf("%s: no echo reply without sesame", fam.name)
				}
			}
			k := newSPAKeys(t)
			d, _ := startSesame(t, bed, k.pingConfig(tc.firewall, tc.stealth))
			for _, fam := range families {
				if got := pingAnswered(t, bed, fam.server); got != tc.answered {
					t.Errorf("%s: ping answered %v, want %v", fam.name, got, tc.answered)
				}
				// The SPA ping itself: answered as any ping (its bytes echoed back), or not.
				svc := netip.AddrPortFrom(fam.server, 2222)
				pkt := seal(t, k.shared(), spa.Request{Addr: fam.client, Duration: 2 * time.Second}, time.Now())
				if got := spaPingAnswered(t, bed, fam.server, pkt); got != tc.answered {
					t.Errorf("%s: SPA ping answered %v, want %v", fam.name, got, tc.answered)
				}
				if !eventually(t, bed, fam.client, svc, true) {
					t.Fatalf("%s: the SPA ping did not open tcp/2222; log:\n%s", fam.name, tail(d.Output()))
				}
				sesameOpen(t, bed, fam.server.String(), "-A", "tcp/2222", "--id", "alice", "--key-file", filepath.Join(k.dir, "alice.key"), "-a", fam.client.String(), "--icmp")
				if !waitFor(2*time.Second, func() bool { return countDecisions(d, fam.client, "alice", "accepted") == 2 }) {
					t.Errorf("%s: sesame open --icmp was not accepted; log:\n%s", fam.name, tail(d.Output()))
				}
				if got := pingAnswered(t, bed, fam.server); got != tc.answered {
					t.Errorf("%s: after the SPA ping, ping answered %v, want %v", fam.name, got, tc.answered)
				}
			}
		})
	}
}

// TestIntegrationSPAPingFwknopConf: 'sesame server --fwknop-conf' takes 'fwknop -P icmp' exactly
// when fwknopd's PCAP_FILTER would: with "udp port N or icmp" the real client's ping opens
// tcp/2222 (data both ways) through the host's DROP rule; with fwknopd's default filter (udp
// port 62201 only) the same client's ping opens nothing while its UDP packet still does.
func TestIntegrationSPAPingFwknopConf(t *testing.T) {
	skipWithoutFwknop(t)
	for _, tc := range []struct {
		name, filter string
		icmp         bool
	}{{"udp or icmp", fmt.Sprintf("udp port %d or icmp", spaPort), true}, {"udp only", fmt.Sprintf("udp port %d", spaPort), false}} {
		t.Run(tc.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			svc := listen(t, bed, families[0])
			if out, err := netnsbed.Command(context.Background(), bed.Server, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP").CombinedOutput(); err != nil {
				t.Fatalf("iptables: %v: %s", err, out)
			}
			dir := t.TempDir()
			writeSecret(t, filepath.Join(dir, "fwknopd.conf"), []byte(fmt.Sprintf("PCAP_INTF %s;\nPCAP_FILTER %s;\n", bed.ServerIf, tc.filter)))
			writeSecret(t, filepath.Join(dir, "access.conf"), []byte("SOURCE ANY\nKEY_BASE64 "+fwknopKey+"\nHMAC_KEY_BASE64 "+fwknopHMAC+
				"\nOPEN_PORTS tcp/2222\nFW_ACCESS_TIMEOUT 2\n"))
			d := startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--fwknop-conf", dir, "--state-dir", filepath.Join(dir, "state"), "--log-level", "debug")
			if canConnect(t, bed, netnsbed.Client4, svc) {
				t.Fatal("port open before any packet")
			}
			fwknopClient(t, bed, "-A", "tcp/2222", "-a", netnsbed.Client4.String(), "-P", "icmp")
			if got := eventually(t, bed, netnsbed.Client4, svc, true); got != tc.icmp {
				t.Fatalf("fwknop -P icmp opened %v, want %v; log:\n%s", got, tc.icmp, tail(d.Output()))
			}
			if got := waitDecision(d, netnsbed.Client4, "stanza#1", "accepted", time.Second); got != tc.icmp {
				t.Errorf("accepted line %v, want %v", got, tc.icmp)
			}
			if tc.icmp {
				return
			}
			fwknopClient(t, bed, "-A", "tcp/2222", "-a", netnsbed.Client4.String())
			if !eventually(t, bed, netnsbed.Client4, svc, true) {
				t.Fatalf("fwknop over UDP did not open; log:\n%s", tail(d.Output()))
			}
		})
	}
}

// TestIntegrationSPAPingUnprivileged: 'sesame open --icmp' run as an ordinary user (nobody)
// fails with a message naming ping_group_range when the system gives it no ICMP socket, and
// opens from a ping socket once net.ipv4.ping_group_range holds its group (data both ways).
func TestIntegrationSPAPingUnprivileged(t *testing.T) {
	bed := skipUnlessRoot(t)
	listen(t, bed, families[0])
	k := newSPAKeys(t)
	d, _ := startSesame(t, bed, k.pingConfig("nftables", "closed"))
	// A copy of the binary and of alice's key that nobody may run and read.
	dir, err := os.MkdirTemp("", "sesame-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin, key := filepath.Join(dir, "sesame"), filepath.Join(dir, "alice.key")
	data, err := os.ReadFile(sesameBin)
	if err != nil {
		t.Fatal(err)
	}
	keyData, err := os.ReadFile(filepath.Join(k.dir, "alice.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	writeSecret(t, key, keyData)
	for _, p := range []string{dir, key} {
		if err := os.Chown(p, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	open := func(groups string) (string, error) {
		t.Helper()
		if out, err := netnsbed.Command(context.Background(), bed.Client, "sysctl", "-qw", "net.ipv4.ping_group_range="+groups).CombinedOutput(); err != nil {
			t.Fatalf("sysctl: %v: %s", err, out)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := netnsbed.Command(ctx, bed.Client, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
			bin, "open", netnsbed.Server4.String(), "-A", "tcp/2222", "--id", "alice", "--key-file", key, "-a", netnsbed.Client4.String(), "--icmp", "-v")
		cmd.Env = []string{"HOME=" + dir}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	svc := netip.AddrPortFrom(netnsbed.Server4, 2222)
	out, err := open("1 0")
	t.Logf("without ICMP sockets: %s", out)
	if err == nil || !strings.Contains(out, "no ICMP socket") || !strings.Contains(out, "ping_group_range") {
		t.Errorf("without ping sockets or raw sockets: err %v, output:\n%s", err, out)
	}
	if canConnect(t, bed, netnsbed.Client4, svc) {
		t.Fatal("the port opened without a packet")
	}
	out, err = open("65534 65534")
	if err != nil || !strings.Contains(out, "sent from a ping socket") {
		t.Fatalf("with ping sockets for nobody's group: %v\n%s", err, out)
	}
	if !eventually(t, bed, netnsbed.Client4, svc, true) {
		t.Fatalf("nobody's ping did not open tcp/2222; log:\n%s", tail(d.Output()))
	}
}

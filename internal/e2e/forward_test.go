//go:build linux

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// The inner host's link to the gateway (the bed's server namespace). Its addresses, like the
// bed's, exist only in namespaces the test creates: 198.19.0.0/24 is the other half of the
// RFC 2544 benchmarking range the bed uses, fd5e:5a3f::/64 a unique local prefix.
var (
	gwInner4 = netip.MustParseAddr("198.19.0.1")
	gwInner6 = netip.MustParseAddr("fd5e:5a3f::1")
	inner4   = netip.MustParseAddr("198.19.0.2")
	inner6   = netip.MustParseAddr("fd5e:5a3f::2")
)

// addInner adds a third namespace, the inner host, behind the bed's server namespace (the
// gateway): a veth pair, addresses, the inner host's default routes through the gateway, and
// forwarding on in the gateway. Everything goes with the namespaces; the inner one is deleted
// when the test ends.
func addInner(t *testing.T, bed *netnsbed.Bed) string {
	t.Helper()
	var id [4]byte
	rand.Read(id[:])
	tag := hex.EncodeToString(id[:])
	ns := "sesame-" + tag + "-inr"
	run := func(args ...string) {
		t.Helper()
		if out, err := execIP(args...); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { execIP("netns", "del", ns) })
	vg, vi := "vg"+tag, "vi"+tag
	run("link", "add", vg, "type", "veth", "peer", "name", vi)
	run("link", "set", vg, "netns", bed.Server)
	run("link", "set", vi, "netns", ns)
	run("-n", bed.Server, "addr", "add", gwInner4.String()+"/24", "dev", vg)
	run("-n", bed.Server, "addr", "add", gwInner6.String()+"/64", "dev", vg, "nodad")
	run("-n", bed.Server, "link", "set", vg, "up")
	run("-n", ns, "link", "set", vi, "name", "eth0")
	run("-n", ns, "addr", "add", inner4.String()+"/24", "dev", "eth0")
	run("-n", ns, "addr", "add", inner6.String()+"/64", "dev", "eth0", "nodad")
	run("-n", ns, "link", "set", "lo", "up")
	run("-n", ns, "link", "set", "eth0", "up")
	run("-n", ns, "route", "add", "default", "via", gwInner4.String())
	run("-n", ns, "-6", "route", "add", "default", "via", gwInner6.String())
	for _, s := range []string{"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"} {
		if out, err := netnsbed.Command(context.Background(), bed.Server, "sysctl", "-qw", s).CombinedOutput(); err != nil {
			t.Fatalf("sysctl %s: %v %s", s, err, out)
		}
	}
	return ns
}

func execIP(args ...string) ([]byte, error) {
	return exec.Command("ip", args...).CombinedOutput()
}

// listenIn runs an echo service (netnsbed.Listen) at addr in ns until the test ends.
func listenIn(t *testing.T, ns string, addr netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if _, err := netnsbed.Listen(ctx, ns, addr); err != nil {
		t.Fatal(err)
	}
}

// connects reports whether the client namespace reaches dst with data both ways.
func connects(t *testing.T, bed *netnsbed.Bed, dst netip.AddrPort) bool {
	t.Helper()
	ok, err := netnsbed.CanConnect(bed.Client, netip.Addr{}, dst, 500*time.Millisecond)
	if err != nil {
		t.Fatalf("connect %s: %v", dst, err)
	}
	return ok
}

// TestIntegrationForwardFwknop: three namespaces (client, gateway, inner host); sesame runs
// fwknopd's own configuration (access.conf FORCE_NAT, fwknopd.conf ENABLE_IPT_FORWARDING) on the
// gateway with the nftables backend, and the real fwknop client asks with -N. The forward
// carries data both ways to the inner host's service through the gateway's port; a -N for
// another destination is refused ("forward not allowed") and opens nothing; the inner service
// is not reachable through the gateway without a forward, also by routing to it directly;
// after FW_ACCESS_TIMEOUT new connections fail while the one opened during the grant still
// carries data. IPv4 (fwknop's format carries IPv4 only).
func TestIntegrationForwardFwknop(t *testing.T) {
	skipWithoutFwknop(t)
	bed := skipUnlessRoot(t)
	inner := addInner(t, bed)
	svc := netip.AddrPortFrom(inner4, 2222)
	listenIn(t, inner, svc)
	listenIn(t, inner, netip.AddrPortFrom(inner4, 7777)) // not a forward destination
	dir := t.TempDir()
	srv := fmt.Sprintf("PCAP_INTF %s;\nPCAP_FILTER udp port %d;\nENABLE_IPT_FORWARDING Y;\n", bed.ServerIf, spaPort)
	writeSecret(t, filepath.Join(dir, "fwknopd.conf"), []byte(srv))
	writeSecret(t, filepath.Join(dir, "access.conf"), []byte("SOURCE ANY\nKEY_BASE64 "+fwknopKey+"\nHMAC_KEY_BASE64 "+fwknopHMAC+
		"\nOPEN_PORTS tcp/8022\nFORCE_NAT "+inner4.String()+" 2222\nFW_ACCESS_TIMEOUT 3\nMAX_FW_TIMEOUT 60\n"))
	d := startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--fwknop-conf", dir,
		"--firewall", "nftables", "--state-dir", filepath.Join(dir, "state"), "--log-level", "debug")
	gw := netip.AddrPortFrom(netnsbed.Server4, 8022)
	if connects(t, bed, gw) {
		t.Fatal("the gateway port forwards before any SPA packet")
	}
	// Routing to the inner host directly: the unforwarded port answers (so the path works),
	// the forward destination does not.
	if out, err := execIP("-n", bed.Client, "route", "add", "198.19.0.0/24", "via", netnsbed.Server4.String()); err != nil {
		t.Fatalf("route: %v %s", err, out)
	}
	if !connects(t, bed, netip.AddrPortFrom(inner4, 7777)) {
		t.Fatal("the inner host is not reachable through the gateway at all")
	}
	if connects(t, bed, svc) {
		t.Fatal("the forward destination is reachable through the gateway without a forward")
	}
	// A -N for another destination: refused, with the reason, and nothing opens.
	fwknopClient(t, bed, "-A", "tcp/8022", "-N", "198.19.0.9:2222", "-a", netnsbed.Client4.String())
	if !waitDecision(d, netnsbed.Client4, "", "forward not allowed", 5*time.Second) {
		t.Fatalf("no 'forward not allowed' decision:\n%s", d.Output())
	}
	if !strings.Contains(d.Output(), "NAT tcp/8022 -> 198.19.0.9:2222: the client's forward is tcp/8022 -> 198.19.0.2:2222") {
		t.Errorf("the refusal does not name the destination:\n%s", d.Output())
	}
	if connects(t, bed, gw) {
		t.Fatal("a refused NAT request opened the forward")
	}
	// The allowed destination: data both ways to the inner host through the gateway.
	fwknopClient(t, bed, "-A", "tcp/8022", "-N", inner4.String()+":2222", "-a", netnsbed.Client4.String())
	if !eventuallyConnects(t, bed, gw, true) {
		t.Fatalf("the forward did not open:\n%s", d.Output())
	}
	held, err := netnsbed.Open(bed.Client, netip.Addr{}, gw, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	// Expiry in the kernel: new connections fail after FW_ACCESS_TIMEOUT (3 s).
	start := time.Now()
	if !eventuallyConnectsWithin(t, bed, gw, false, 6*time.Second) {
		t.Fatal("the forward did not expire")
	}
	t.Logf("forward closed %v after the check that it was open (FW_ACCESS_TIMEOUT 3)", time.Since(start).Round(100*time.Millisecond))
	if err := held.Echo(time.Now().Add(time.Second)); err != nil {
		t.Errorf("the connection opened during the forward broke at expiry: %v", err)
	}
}

func eventuallyConnects(t *testing.T, bed *netnsbed.Bed, dst netip.AddrPort, want bool) bool {
	return eventuallyConnectsWithin(t, bed, dst, want, 3*time.Second)
}

func eventuallyConnectsWithin(t *testing.T, bed *netnsbed.Bed, dst netip.AddrPort, want bool, d time.Duration) bool {
	t.Helper()
	return waitFor(d, func() bool { return connects(t, bed, dst) == want })
}

// TestIntegrationForwardNative: the native forward list, with sesame open: IPv4 and IPv6 to
// the inner host through the gateway, data both ways, expiring in the kernel; and fwknop's
// local NAT (the real client's --nat-local --nat-port) redirecting a port of the gateway to
// its own service.
func TestIntegrationForwardNative(t *testing.T) {
	skipWithoutFwknop(t)
	bed := skipUnlessRoot(t)
	inner := addInner(t, bed)
	listenIn(t, inner, netip.AddrPortFrom(inner4, 2222))
	listenIn(t, inner, netip.AddrPortFrom(inner6, 2222))
	listenIn(t, bed.Server, netip.AddrPortFrom(netnsbed.Server4, 2222)) // the gateway's own service
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := netnsbed.Command(context.Background(), bed.Client, sesameBin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sesame %v: %v\n%s", args, err, out)
		}
	}
	run("keygen", "-o", "alice.key")
	writeSecret(t, filepath.Join(dir, "fwknop.key"), []byte("KEY_BASE64 "+fwknopKey+"\nHMAC_KEY_BASE64 "+fwknopHMAC+"\n"))
	cfg := fmt.Sprintf(`[server]
state_dir = %q
firewall = "nftables"

[spa]
listen = "udp/%d"
sniff = true

[[spa.client]]
name = "alice"
key_file = %q
forward = ["tcp/8022 -> 198.19.0.2:2222", "tcp/8022 -> [fd5e:5a3f::2]:2222"]
default_open_for = "3s"
max_open_for = "1m"

[[spa.client]]
name = "legacy"
format = "fwknop"
key_file = %q
forward = ["tcp/55000 -> local:2222"]
default_open_for = "3s"
`, dir, spaPort, filepath.Join(dir, "alice.key"), filepath.Join(dir, "fwknop.key"))
	path := filepath.Join(dir, "sesame.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(shortTempDir(t), "control.sock")
	d := startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "-c", path, "--log-level", "debug", "--control-socket", sock)
	// The operator's view: a forward is in sesame status with its destination and client, and
	// sesame revoke ends it before its time (new connections through it fail at once).
	t.Run("status and revoke", func(t *testing.T) {
		gw := netip.AddrPortFrom(netnsbed.Server4, 8022)
		run("open", netnsbed.Server4.String(), "-A", "tcp/8022", "--id", "alice", "--key-file", "alice.key", "--open-for", "60")
		if !eventuallyConnects(t, bed, gw, true) {
			t.Fatalf("the forward did not open:\n%s", d.Output())
		}
		out, err := sesameCtl(sock, nil, "status", "--json")
		if err != nil {
			t.Fatalf("sesame status: %v\n%s", err, out)
		}
		var st struct {
			Grants []struct {
				Src, Port, By, Kind, To string
				RemainingMS             int64 `json:"remaining_ms"`
			} `json:"grants"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status JSON: %v\n%s", err, out)
		}
		found := false
		for _, g := range st.Grants {
			found = found || (g.Src == netnsbed.Client4.String() && g.Port == "tcp/8022" && g.To == "198.19.0.2:2222" && g.By == "alice" && g.Kind == "spa" && g.RemainingMS > 30000)
		}
		if !found {
			t.Fatalf("sesame status does not show alice's forward tcp/8022 -> 198.19.0.2:2222:\n%s", out)
		}
		if text, err := sesameCtl(sock, nil, "status"); err != nil || !strings.Contains(text, "tcp/8022 -> 198.19.0.2:2222") {
			t.Errorf("sesame status (text) lacks the forward: %v\n%s", err, text)
		}
		if out, err := sesameCtl(sock, nil, "revoke", netnsbed.Client4.String(), "tcp/8022"); err != nil {
			t.Fatalf("sesame revoke: %v\n%s", err, out)
		}
		if connects(t, bed, gw) {
			t.Fatal("the forward still carries new connections after sesame revoke")
		}
	})
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			gw := netip.AddrPortFrom(fam.server, 8022)
			if connects(t, bed, gw) {
				t.Fatal("forwards before any SPA packet")
			}
			run("open", fam.server.String(), "-A", "tcp/8022", "--id", "alice", "--key-file", "alice.key")
			if !eventuallyConnects(t, bed, gw, true) {
				t.Fatalf("the forward did not open:\n%s", d.Output())
			}
			if !eventuallyConnectsWithin(t, bed, gw, false, 6*time.Second) {
				t.Fatal("the forward did not expire")
			}
		})
	}
	t.Run("fwknop local NAT", func(t *testing.T) {
		local := netip.AddrPortFrom(netnsbed.Server4, 55000)
		if connects(t, bed, local) || connects(t, bed, netip.AddrPortFrom(netnsbed.Server4, 2222)) {
			t.Fatal("open before any SPA packet")
		}
		fwknopClient(t, bed, "-A", "tcp/2222", "--nat-local", "--nat-port", "55000", "-a", netnsbed.Client4.String())
		if !eventuallyConnects(t, bed, local, true) {
			t.Fatalf("the local forward did not open:\n%s", d.Output())
		}
		if !eventuallyConnectsWithin(t, bed, local, false, 6*time.Second) {
			t.Fatal("the local forward did not expire")
		}
	})
}

// TestIntegrationForwardFwknopConfLocalNAT: sesame runs fwknopd's own configuration with
// ENABLE_IPT_LOCAL_NAT Y (nftables backend), and the real fwknop client's --nat-local
// --nat-port redirects the gateway's port 55000, for the client only, to the stanza's
// OPEN_PORTS service (its greeting and echo come back through 55000); a plain -A for the same
// port still opens the port itself and redirects nothing; a local NAT request to a port
// outside OPEN_PORTS is refused ("forward not allowed") and opens nothing.
func TestIntegrationForwardFwknopConfLocalNAT(t *testing.T) {
	skipWithoutFwknop(t)
	bed := skipUnlessRoot(t)
	svc := netip.AddrPortFrom(netnsbed.Server4, 2222)
	listenIn(t, bed.Server, svc)
	dir := t.TempDir()
	srv := fmt.Sprintf("PCAP_INTF %s;\nPCAP_FILTER udp port %d;\nENABLE_IPT_LOCAL_NAT Y;\n", bed.ServerIf, spaPort)
	writeSecret(t, filepath.Join(dir, "fwknopd.conf"), []byte(srv))
	writeSecret(t, filepath.Join(dir, "access.conf"), []byte("SOURCE ANY\nKEY_BASE64 "+fwknopKey+"\nHMAC_KEY_BASE64 "+fwknopHMAC+
		"\nOPEN_PORTS tcp/2222\nFW_ACCESS_TIMEOUT 3\nMAX_FW_TIMEOUT 60\n"))
	d := startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--fwknop-conf", dir,
		"--firewall", "nftables", "--state-dir", filepath.Join(dir, "state"), "--log-level", "debug")
	local := netip.AddrPortFrom(netnsbed.Server4, 55000)
	if connects(t, bed, local) || connects(t, bed, svc) {
		t.Fatal("open before any SPA packet")
	}
	fwknopClient(t, bed, "-A", "tcp/2222", "--nat-local", "--nat-port", "55000", "-a", netnsbed.Client4.String())
	if !eventuallyConnects(t, bed, local, true) {
		t.Fatalf("--nat-local did not redirect tcp/55000 to the service:\n%s", d.Output())
	}
	if !eventuallyConnectsWithin(t, bed, local, false, 6*time.Second) {
		t.Fatal("the local forward did not expire")
	}
	// A plain request: the port itself opens, and 55000 redirects nothing.
	fwknopClient(t, bed, "-A", "tcp/2222", "-a", netnsbed.Client4.String())
	if !eventuallyConnects(t, bed, svc, true) {
		t.Fatalf("a plain -A tcp/2222 did not open the port:\n%s", d.Output())
	}
	if connects(t, bed, local) {
		t.Fatal("a plain request redirected tcp/55000")
	}
	// Local NAT to a port the stanza does not open: refused.
	fwknopClient(t, bed, "-A", "tcp/2223", "--nat-local", "--nat-port", "55001", "-a", netnsbed.Client4.String())
	if !waitDecision(d, netnsbed.Client4, "", "forward not allowed", 5*time.Second) {
		t.Fatalf("no 'forward not allowed' decision:\n%s", d.Output())
	}
	if connects(t, bed, netip.AddrPortFrom(netnsbed.Server4, 55001)) {
		t.Fatal("a refused local NAT request opened tcp/55001")
	}
}

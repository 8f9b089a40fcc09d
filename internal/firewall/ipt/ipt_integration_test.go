//go:build linux

package ipt

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/firewall/fwtest"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
)

func skipUnlessIptables(t testing.TB) {
	t.Helper()
	netnstest.SkipUnlessRoot(t)
	for _, c := range []string{"iptables", "ip6tables"} {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("skipping: %s is not installed", c)
		}
	}
}

// newInBed returns a backend working in the bed's server namespace: ipset over a netlink socket
// opened there, iptables exec'd from a thread switched into it.
func newInBed(t testing.TB, bed *netnsbed.Bed) *Backend {
	t.Helper()
	h, err := netnsbed.NSFd(bed.Server)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	b, err := New(Options{NetNS: int(h)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background(), true) })
	return b
}

func TestIntegrationIpt(t *testing.T) {
	skipUnlessIptables(t)
	fwtest.Run(t, func(t *testing.T, bed *netnsbed.Bed) firewall.Backend { return newInBed(t, bed) })
}

func iptS(t *testing.T, ns, cmd, chain string) string {
	t.Helper()
	out, err := netnsbed.Command(context.Background(), ns, cmd, "-w", "-S", chain).CombinedOutput()
	if err != nil {
		t.Fatalf("%s -S %s: %v: %s", cmd, chain, err, out)
	}
	return string(out)
}

// TestIntegrationIptLayout checks the rules an admin sees, that the jump stays first and single
// across Apply calls, that a host DROP further down INPUT (and no ESTABLISHED rule) does not stop
// a connection a grant admitted, during the grant or after it, and
// that Close(true) removes everything.
func TestIntegrationIptLayout(t *testing.T) {
	skipUnlessIptables(t)
	ctx := context.Background()
	bed := netnstest.NewT(t)
	// A host firewall that drops the service port (and something unrelated first).
	for _, cmd := range []string{"iptables", "ip6tables"} {
		for _, args := range [][]string{
			{"-A", "INPUT", "-p", "udp", "--dport", "9", "-j", "DROP"},
			{"-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP"},
		} {
			if out, err := netnsbed.Command(ctx, bed.Server, cmd, append([]string{"-w"}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("%s %v: %v: %s", cmd, args, err, out)
			}
		}
	}
	b := newInBed(t, bed)
	port := netport.Port{Proto: netport.TCP, Num: 2222}
	gate := firewall.Gate{Protected: []netport.Port{port, {Proto: netport.UDP, Num: 53}}}
	for i := 0; i < 3; i++ {
		if err := b.Apply(ctx, gate); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ cmd, set string }{{"iptables", "sesame4"}, {"ip6tables", "sesame6"}} {
		in := iptS(t, bed.Server, c.cmd, "INPUT")
		lines := strings.Split(strings.TrimSpace(in), "\n")
		if len(lines) < 2 || lines[1] != "-A INPUT -j SESAME" || strings.Count(in, "-j SESAME") != 1 {
			t.Errorf("%s INPUT: want exactly one jump, first:\n%s", c.cmd, in)
		}
		want := "-N SESAME\n" +
			"-A SESAME -p tcp -m tcp --dport 2222 -m set --match-set " + c.set + "_ban src -j DROP\n" +
			"-A SESAME -p udp -m udp --dport 53 -m set --match-set " + c.set + "_ban src -j DROP\n" +
			"-A SESAME -p tcp -m tcp --dport 2222 -m conntrack --ctdir REPLY -j DROP\n" +
			"-A SESAME -m connmark --mark 0x20000000/0x20000000 -j ACCEPT\n" +
			"-A SESAME -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n" +
			"-A SESAME -m set --match-set " + c.set + " src,dst -j CONNMARK --set-xmark 0x20000000/0x20000000\n" +
			"-A SESAME -m set --match-set " + c.set + " src,dst -j ACCEPT\n" +
			"-A SESAME -p tcp -m tcp --dport 2222 -j DROP\n" +
			"-A SESAME -p udp -m udp --dport 53 -j DROP\n" +
			"-A SESAME -j RETURN\n"
		if got := iptS(t, bed.Server, c.cmd, "SESAME"); got != want {
			t.Errorf("%s SESAME:\n%s\nwant:\n%s", c.cmd, got, want)
		}
	}

	// The host drops tcp/2222 further down INPUT and has no ESTABLISHED rule: a connection a grant
	// admitted still carries data both ways, during the grant and after it expired.
	for _, fam := range []struct {
		name           string
		server, client netip.Addr
	}{{"IPv4", netnsbed.Server4, netnsbed.Client4}, {"IPv6", netnsbed.Server6, netnsbed.Client6}} {
		dst := netip.AddrPortFrom(fam.server, 2222)
		if _, err := netnsbed.Listen(t.Context(), bed.Server, dst); err != nil {
			t.Fatal(err)
		}
		if ok, err := netnsbed.CanConnect(bed.Client, fam.client, dst, 300*time.Millisecond); ok || err != nil {
			t.Fatalf("%s: before the grant: open=%v, %v; want closed", fam.name, ok, err)
		}
		if err := b.Grant(ctx, firewall.Grant{Src: fam.client, Port: port, Timeout: 2 * time.Second}); err != nil {
			t.Fatal(err)
		}
		c, err := netnsbed.Open(bed.Client, fam.client, dst, 3*time.Second)
		if err != nil {
			t.Fatalf("%s: open during the grant: %v", fam.name, err)
		}
		defer c.Close()
		fwtest.Echo(t, c, fam.name+" during the grant, past the host's DROP")
		if !netnsbed.WaitFor(10*time.Second, func() bool {
			l, err := b.List(ctx)
			return err == nil && len(l) == 0
		}) {
			t.Fatalf("%s: grant did not expire", fam.name)
		}
		fwtest.Echo(t, c, fam.name+" after the grant expired, past the host's DROP")
		if ok, err := netnsbed.CanConnect(bed.Client, fam.client, dst, 300*time.Millisecond); ok || err != nil {
			t.Fatalf("%s: new connection after the grant expired: open=%v, %v; want closed", fam.name, ok, err)
		}
		c.Close()
	}

	if err := b.Close(ctx, true); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"iptables", "ip6tables"} {
		if in := iptS(t, bed.Server, cmd, "INPUT"); strings.Contains(in, "SESAME") {
			t.Errorf("%s INPUT after Close(true):\n%s", cmd, in)
		}
		if out, err := netnsbed.Command(ctx, bed.Server, cmd, "-w", "-S", "SESAME").CombinedOutput(); err == nil {
			t.Errorf("%s chain SESAME still exists after Close(true):\n%s", cmd, out)
		}
	}
	b2 := newInBed(t, bed)
	for _, set := range []string{DefaultSet4, DefaultSet4 + "_ban", DefaultSet6 + "_ban"} {
		if _, err := b2.h.IpsetList(set); err == nil {
			t.Errorf("ipset %s still exists after Close(true)", set)
		}
	}
}

func TestIntegrationIptBans(t *testing.T) {
	skipUnlessIptables(t)
	fwtest.RunBans(t, func(t *testing.T, bed *netnsbed.Bed) fwtest.BanBackend { return newInBed(t, bed) })
}

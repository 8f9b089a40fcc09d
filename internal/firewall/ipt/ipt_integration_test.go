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
	"github.com/sesame-knock/sesame/internal/netport"
)

func skipUnlessIptables(t testing.TB) {
	t.Helper()
	netnsbed.SkipUnlessRoot(t)
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
// across Apply calls, that a host DROP further down INPUT does not stop a granted client, and
// that Close(true) removes everything.
func TestIntegrationIptLayout(t *testing.T) {
	skipUnlessIptables(t)
	ctx := context.Background()
	bed := netnsbed.NewT(t)
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
			"-A SESAME -m set --match-set " + c.set + " src,dst -j ACCEPT\n" +
			"-A SESAME -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN\n" +
			"-A SESAME -p tcp -m tcp --dport 2222 -j DROP\n" +
			"-A SESAME -p udp -m udp --dport 53 -j DROP\n" +
			"-A SESAME -j RETURN\n"
		if got := iptS(t, bed.Server, c.cmd, "SESAME"); got != want {
			t.Errorf("%s SESAME:\n%s\nwant:\n%s", c.cmd, got, want)
		}
	}

	// The grant's ACCEPT ends INPUT, so the host's DROP for 2222 does not apply to the client.
	ln, err := netnsbed.Listen(t.Context(), bed.Server, netip4(2222))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if ok, _ := netnsbed.CanConnect(bed.Client, netnsbed.Client4, netip4(2222), 300*time.Millisecond); ok {
		t.Fatal("connected before grant")
	}
	if err := b.Grant(ctx, firewall.Grant{Src: netnsbed.Client4, Port: port, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if ok, err := netnsbed.CanConnect(bed.Client, netnsbed.Client4, netip4(2222), 3*time.Second); !ok || err != nil {
		t.Fatalf("granted client blocked by the host's later DROP: %v", err)
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
	if _, err := b2.h.IpsetList(DefaultSet4); err == nil {
		t.Error("ipset sesame4 still exists after Close(true)")
	}
}

func netip4(port uint16) netip.AddrPort { return netip.AddrPortFrom(netnsbed.Server4, port) }

package conntrack

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// gate is a copy of sesame's gate (docs/FIREWALL.md): established traffic passes, new
// connections to the protected ports need a grant. grants are nft set elements.
func gate(grants4, grants6 string) string {
	el := func(s string) string {
		if s == "" {
			return ""
		}
		return "elements = { " + s + " }"
	}
	return `table inet ctkill
delete table inet ctkill
table inet ctkill {
	set grants4 { type ipv4_addr . inet_proto . inet_service; ` + el(grants4) + ` }
	set grants6 { type ipv6_addr . inet_proto . inet_service; ` + el(grants6) + ` }
	chain gate {
		type filter hook input priority filter - 10; policy accept;
		ct state established,related accept
		ip saddr . meta l4proto . th dport @grants4 accept
		ip6 saddr . meta l4proto . th dport @grants6 accept
		meta l4proto . th dport { tcp . 2222, tcp . 2223 } drop
	}
}
`
}

func applyGate(t *testing.T, bed *netnsbed.Bed, script string) {
	t.Helper()
	cmd := netnsbed.Command(context.Background(), bed.Server, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
}

// conn is one connection through the gate to a netnsbed Listen service.
type conn struct {
	c  net.Conn
	rd *bufio.Reader
}

func dial(t *testing.T, bed *netnsbed.Bed, src netip.Addr, dst netip.AddrPort) *conn {
	t.Helper()
	c, err := netnsbed.Dial(bed.Client, src, dst, 3*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", dst, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := netnsbed.Exchange(c, time.Now().Add(3*time.Second)); err != nil {
		t.Fatalf("%s: no data both ways while granted: %v", dst, err)
	}
	return &conn{c: c, rd: bufio.NewReader(c)}
}

// echoes reports whether a fresh line sent on c comes back within wait.
func (c *conn) echoes(t *testing.T, wait time.Duration) bool {
	t.Helper()
	nonce, err := netnsbed.Nonce()
	if err != nil {
		t.Fatal(err)
	}
	c.c.SetDeadline(time.Now().Add(wait))
	defer c.c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c.c, nonce); err != nil {
		return false
	}
	line, err := c.rd.ReadString('\n')
	if err != nil {
		return false
	}
	if line != nonce {
		t.Fatalf("echo %q, want %q", line, nonce)
	}
	return true
}

// tracked reports whether the server namespace's conntrack table has an entry for c.
func tracked(t *testing.T, ns netns.NsHandle, c *conn) bool {
	t.Helper()
	local := netip.MustParseAddrPort(c.c.LocalAddr().String())
	remote := netip.MustParseAddrPort(c.c.RemoteAddr().String())
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	family := netlink.InetFamily(unix.AF_INET)
	if local.Addr().Is6() {
		family = unix.AF_INET6
	}
	flows, err := h.ConntrackTableList(netlink.ConntrackTable, family)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		src, _ := netip.AddrFromSlice(f.Forward.SrcIP)
		if src.Unmap() == local.Addr() && f.Forward.SrcPort == local.Port() && f.Forward.DstPort == remote.Port() && f.Forward.Protocol == unix.IPPROTO_TCP {
			return true
		}
	}
	return false
}

// TestIntegrationKill proves that Kill ends a live connection: after the grant is revoked the
// connection still carries data (conntrack established), and after Kill the kernel has no
// entry for it and its data no longer gets through the gate. Connections Kill was not asked
// about keep working.
func TestIntegrationKill(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	bed := netnstest.NewT(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ssh4 := netip.AddrPortFrom(netnsbed.Server4, 2222)
	other4 := netip.AddrPortFrom(netnsbed.Server4, 2223)
	ssh6 := netip.AddrPortFrom(netnsbed.Server6, 2222)
	for _, a := range []netip.AddrPort{ssh4, other4, ssh6} {
		if _, err := netnsbed.Listen(ctx, bed.Server, a); err != nil {
			t.Fatal(err)
		}
	}
	applyGate(t, bed, gate("198.18.0.2 . tcp . 2222, 198.18.0.2 . tcp . 2223", "fd5e:5a3e::2 . tcp . 2222"))
	c4 := dial(t, bed, netnsbed.Client4, ssh4)
	keep4 := dial(t, bed, netnsbed.Client4, other4)
	c6 := dial(t, bed, netnsbed.Client6, ssh6)

	applyGate(t, bed, gate("", "")) // revoke every grant
	ok, err := netnsbed.CanConnect(bed.Client, netnsbed.Client4, ssh4, time.Second)
	if err != nil || ok {
		t.Fatalf("a new connection after the revoke: %v, %v; want it dropped", ok, err)
	}
	for _, c := range []*conn{c4, keep4, c6} {
		if !c.echoes(t, 3*time.Second) {
			t.Fatalf("%s: the established connection stopped at the revoke alone", c.c.RemoteAddr())
		}
	}

	ns, err := netnsbed.NSFd(bed.Server)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if !tracked(t, ns, c4) {
		t.Fatal("no conntrack entry for the live connection before Kill")
	}
	tcp22 := []netport.Port{{Proto: netport.TCP, Num: 2222}}
	n, err := KillAt(ctx, int(ns), netnsbed.Client4, tcp22)
	if err != nil || n != 1 {
		t.Fatalf("KillAt = %d, %v; want 1 entry deleted", n, err)
	}
	if tracked(t, ns, c4) {
		t.Error("the kernel still tracks the killed connection")
	}
	if !tracked(t, ns, keep4) {
		t.Error("Kill deleted the entry of a port it was not given")
	}
	// Kill, in the current namespace, for the IPv6 connection.
	err = netnsbed.Do(bed.Server, func() error {
		n, err = Kill(ctx, netnsbed.Client6, tcp22)
		return err
	})
	if err != nil || n != 1 {
		t.Fatalf("Kill (IPv6) = %d, %v; want 1", n, err)
	}
	for _, c := range []*conn{c4, c6} {
		if c.echoes(t, 2*time.Second) {
			t.Errorf("%s: the killed connection still carries data", c.c.RemoteAddr())
		}
	}
	if !keep4.echoes(t, 3*time.Second) {
		t.Error("a connection Kill was not asked about stopped")
	}
	if n, err := KillAt(ctx, int(ns), netnsbed.Client4, nil); err != nil || n != 0 {
		t.Errorf("KillAt with no ports = %d, %v; want 0, nil", n, err)
	}
}

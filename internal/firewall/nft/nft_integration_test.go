//go:build linux

package nft

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

// newInBed returns a backend working in the bed's server namespace.
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

func TestIntegrationNft(t *testing.T) {
	fwtest.Run(t, func(t *testing.T, bed *netnsbed.Bed) firewall.Backend { return newInBed(t, bed) })
}

// TestIntegrationNftListing checks what an admin sees with nft(8).
func TestIntegrationNftListing(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("skipping: nft(8) is not installed")
	}
	bed := netnstest.NewT(t)
	b := newInBed(t, bed)
	ctx := context.Background()
	if err := b.Apply(ctx, firewall.Gate{Protected: []netport.Port{{Proto: netport.TCP, Num: 2222}, {Proto: netport.UDP, Num: 53}}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Grant(ctx,
		firewall.Grant{Src: netnsbed.Client4, Port: netport.Port{Proto: netport.TCP, Num: 2222}, Timeout: time.Minute},
		firewall.Grant{Src: netnsbed.Client6, Port: netport.Port{Proto: netport.TCP, Num: 2222}, Timeout: time.Minute},
	); err != nil {
		t.Fatal(err)
	}
	out, err := netnsbed.Command(ctx, bed.Server, "nft", "list", "table", "inet", "sesame").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v: %s", err, out)
	}
	t.Logf("nft list table inet sesame:\n%s", out)
	for _, want := range []string{
		"type ipv4_addr . inet_proto . inet_service",
		"type ipv6_addr . inet_proto . inet_service",
		"198.18.0.2 . tcp . 2222 timeout 1m",
		"fd5e:5a3e::2 . tcp . 2222 timeout 1m",
		"type filter hook input priority filter - 10; policy accept;",
		"ct state established,related accept",
		"ip saddr . meta l4proto . th dport @grants4 ct mark set ct mark | 0x20000000 accept",
		"ip6 saddr . meta l4proto . th dport @grants6 ct mark set ct mark | 0x20000000 accept",
		"meta l4proto . th dport @protected drop",
		"tcp . 2222",
		"udp . 53",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("nft listing lacks %q", want)
		}
	}
}

func BenchmarkGrant(b *testing.B) {
	netnstest.SkipUnlessRoot(b)
	bed := netnstest.NewT(b)
	be := newInBed(b, bed)
	ctx := context.Background()
	port := netport.Port{Proto: netport.TCP, Num: 2222}
	if err := be.Apply(ctx, firewall.Gate{Protected: []netport.Port{port}}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if err := be.Grant(ctx, firewall.Grant{Src: src, Port: port, Timeout: time.Minute}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestIntegrationNftBans(t *testing.T) {
	fwtest.RunBans(t, func(t *testing.T, bed *netnsbed.Bed) fwtest.BanBackend { return newInBed(t, bed) })
}

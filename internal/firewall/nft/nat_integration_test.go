//go:build linux

package nft

import (
	"context"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
)

// TestIntegrationNftForwardListing: the forwarding table as nft(8) shows it, forwards listed
// back, carried over by a second ApplyForwarding, expiring in the kernel, and removed with
// the gate by Close. (Data through a forward: internal/e2e TestIntegrationForward*.)
func TestIntegrationNftForwardListing(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatal("nft(8) is not installed")
	}
	bed := netnstest.NewT(t)
	b := newInBed(t, bed)
	ctx := context.Background()
	ssh := netport.Port{Proto: netport.TCP, Num: 22}
	if err := b.Apply(ctx, firewall.Gate{Protected: []netport.Port{ssh}}); err != nil {
		t.Fatal(err)
	}
	inner4, inner6 := netip.MustParseAddr("198.19.0.2"), netip.MustParseAddr("fd5e:5a3f::2")
	dests := []firewall.Destination{{Addr: inner4, Port: ssh}, {Addr: inner6, Port: ssh}}
	if err := b.ApplyForwarding(ctx, dests); err != nil {
		t.Fatal(err)
	}
	gw := netport.Port{Proto: netport.TCP, Num: 8022}
	fwds := []firewall.Grant{
		{Src: netnsbed.Client4, Port: gw, To: netip.AddrPortFrom(inner4, 22), Timeout: time.Minute},
		{Src: netnsbed.Client6, Port: gw, To: netip.AddrPortFrom(inner6, 22), Timeout: time.Minute},
		{Src: netnsbed.Client4, Port: netport.Port{Proto: netport.TCP, Num: 55000}, To: netip.AddrPortFrom(netip.IPv4Unspecified(), 22), Timeout: 1500 * time.Millisecond},
	}
	if err := b.Forward(ctx, fwds...); err != nil {
		t.Fatal(err)
	}
	// A grant refused for a forward, by the gate's Grant.
	if err := b.Grant(ctx, fwds[0]); err == nil {
		t.Error("Grant took a forward")
	}
	list := func() string {
		out, err := netnsbed.Command(ctx, bed.Server, "nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list: %v: %s", err, out)
		}
		return string(out)
	}
	out := list()
	t.Logf("nft list ruleset:\n%s", out)
	for _, want := range []string{
		"table inet sesame_nat",
		"type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
		"198.18.0.2 . tcp . 8022 timeout 1m expires",
		": 198.19.0.2 . 22",
		"fd5e:5a3e::2 . tcp . 8022 timeout 1m expires",
		": fd5e:5a3f::2 . 22",
		"198.18.0.2 . tcp . 55000 timeout 1s500ms expires",
		"type nat hook prerouting priority dstnat; policy accept;",
		"dnat ip to ip saddr . meta l4proto . th dport map @fwd4",
		"dnat ip6 to ip6 saddr . meta l4proto . th dport map @fwd6",
		"redirect to :ip saddr . meta l4proto . th dport map @local4",
		"type filter hook forward priority filter - 10; policy accept;",
		"ip saddr . meta l4proto . ip daddr . th dport @flows4 ct mark set ct mark | 0x20000000 accept",
		"ip6 saddr . meta l4proto . ip6 daddr . th dport @flows6 ct mark set ct mark | 0x20000000 accept",
		"198.18.0.2 . tcp . 198.19.0.2 . 22 timeout 1m",
		"ip daddr . meta l4proto . th dport @dests4 drop",
		"198.19.0.2 . tcp . 22",
		"198.18.0.2 . tcp . 22 timeout 1s500ms", // the local forward's gate grant
	} {
		if !strings.Contains(out, want) {
			t.Errorf("listing lacks %q", want)
		}
	}
	got, err := b.ListForwards(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("ListForwards: %v", got)
	}
	// Carried over by a second ApplyForwarding, with the time left (not a fresh minute).
	if err := b.ApplyForwarding(ctx, dests); err != nil {
		t.Fatal(err)
	}
	got, _ = b.ListForwards(ctx)
	if len(got) != 3 || !slices.ContainsFunc(got, func(g firewall.Grant) bool {
		return g.Src == netnsbed.Client6 && g.To == fwds[1].To && g.Timeout > 50*time.Second && g.Timeout <= time.Minute
	}) {
		t.Fatalf("after ApplyForwarding: %v", got)
	}
	// The local forward expires in the kernel.
	if !netnsbed.WaitFor(5*time.Second, func() bool { got, _ = b.ListForwards(ctx); return len(got) == 2 }) {
		t.Fatalf("the 1.5s forward did not expire: %v", got)
	}
	if err := b.Unforward(ctx, fwds[0]); err != nil {
		t.Fatal(err)
	}
	if got, _ = b.ListForwards(ctx); len(got) != 1 || got[0].Src != netnsbed.Client6 {
		t.Fatalf("after Unforward: %v", got)
	}
	if err := b.Close(ctx, true); err != nil {
		t.Fatal(err)
	}
	if out := list(); strings.Contains(out, "sesame") {
		t.Errorf("Close left:\n%s", out)
	}
}

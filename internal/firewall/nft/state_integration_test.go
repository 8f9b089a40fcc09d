//go:build linux

package nft

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/firewall/fwtest"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
)

// TestIntegrationNftState runs fwtest.RunState, the sequence the aws-sg backend runs against
// its EC2 double, on the kernel gate with real connections (data both ways) as Admits.
func TestIntegrationNftState(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	bed := netnstest.NewT(t)
	if _, err := bed.AddClientAddrs(ctx, 1, true); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{netnsbed.Server4, netnsbed.Server6} {
		for _, p := range []uint16{2222, 2223} {
			if _, err := netnsbed.Listen(ctx, bed.Server, netip.AddrPortFrom(a, p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	fwtest.RunState(t, fwtest.StateTarget{
		New: func(t *testing.T) firewall.Backend { return newInBed(t, bed) },
		Admits: func(src netip.Addr, port netport.Port) bool {
			dst := netnsbed.Server4
			if src.Is6() {
				dst = netnsbed.Server6
			}
			ok, err := netnsbed.CanConnect(bed.Client, src, netip.AddrPortFrom(dst, port.Num), 300*time.Millisecond)
			if err != nil {
				t.Fatalf("connect %s -> %s %s: %v", src, dst, port, err)
			}
			return ok
		},
		Settle:        3 * time.Second,
		RemovedAdmits: true,
	})
}

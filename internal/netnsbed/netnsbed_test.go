package netnsbed

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

func TestIntegrationBedConnects(t *testing.T) {
	SkipUnlessRoot(t)
	b := NewT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, srv := range []netip.Addr{Server4, Server6} {
		dst := netip.AddrPortFrom(srv, 2222)
		if ok, err := CanConnect(b.Client, netip.Addr{}, dst, time.Second); err != nil || ok {
			t.Fatalf("before listening: connect %s = %v, %v; want refused", dst, ok, err)
		}
		if _, err := Listen(ctx, b.Server, dst); err != nil {
			t.Fatal(err)
		}
		if ok, err := CanConnect(b.Client, netip.Addr{}, dst, time.Second); err != nil || !ok {
			t.Fatalf("connect %s = %v, %v; want success", dst, ok, err)
		}
	}
	extra, err := b.AddClientAddrs(ctx, 3, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(extra) != 6 {
		t.Fatalf("got %d extra addresses, want 6", len(extra))
	}
	for _, src := range extra {
		dst := netip.AddrPortFrom(Server4, 2222)
		if src.Is6() {
			dst = netip.AddrPortFrom(Server6, 2222)
		}
		if ok, err := CanConnect(b.Client, src, dst, time.Second); err != nil || !ok {
			t.Fatalf("connect from %s = %v, %v", src, ok, err)
		}
	}
}

package lograte

import (
	"net/netip"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := New(3, time.Second, 2, func() time.Time { return now })
	a := netip.MustParseAddr("198.18.0.2")
	allowed := 0
	for i := 0; i < 100; i++ {
		if ok, _ := l.Allow(a); ok {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("burst: %d allowed, want 3", allowed)
	}
	now = now.Add(time.Second)
	ok, n := l.Allow(a)
	if !ok || n != 97 {
		t.Fatalf("after 1s: ok=%v suppressed=%d, want true, 97", ok, n)
	}
	// Many other sources: memory stays bounded, they share the overflow budget.
	for i := 0; i < 1000; i++ {
		l.Allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}))
	}
	if len(l.sources) > 2 {
		t.Fatalf("%d sources tracked, cap 2", len(l.sources))
	}
}

func BenchmarkAllowSpoofedFlood(b *testing.B) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := New(10, time.Second, 4096, func() time.Time { return now })
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		now = now.Add(10 * time.Microsecond)
		l.Allow(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
}

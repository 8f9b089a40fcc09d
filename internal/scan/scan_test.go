package scan

import (
	"net/netip"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

func tcp(n uint16) netport.Port { return netport.Port{Proto: netport.TCP, Num: n} }

func TestDetector(t *testing.T) {
	cfg := Config{Window: 10 * time.Second, Threshold: 5, BanFor: []time.Duration{time.Minute, time.Hour}, Forget: 24 * time.Hour, MaxSources: 3}
	a := netip.MustParseAddr("198.18.0.2")
	t0 := time.Unix(1000, 0)
	type step struct {
		src  netip.Addr
		port uint16
		at   time.Duration
		want time.Duration // ban duration, 0: none
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"repeats of one port are one", []step{{a, 1, 0, 0}, {a, 1, 1, 0}, {a, 1, 2, 0}, {a, 1, 3, 0}, {a, 1, 4, 0}, {a, 1, 5, 0}}},
		{"threshold bans", []step{{a, 1, 0, 0}, {a, 2, 0, 0}, {a, 3, 0, 0}, {a, 4, 0, 0}, {a, 5, 0, time.Minute}}},
		{"window resets", []step{{a, 1, 0, 0}, {a, 2, 0, 0}, {a, 3, 0, 0}, {a, 4, 0, 0}, {a, 5, 10 * time.Second, 0}}},
		{"escalates then repeats the last", []step{
			{a, 1, 0, 0}, {a, 2, 0, 0}, {a, 3, 0, 0}, {a, 4, 0, 0}, {a, 5, 0, time.Minute},
			{a, 1, time.Hour, 0}, {a, 2, time.Hour, 0}, {a, 3, time.Hour, 0}, {a, 4, time.Hour, 0}, {a, 5, time.Hour, time.Hour},
			{a, 1, 3 * time.Hour, 0}, {a, 2, 3 * time.Hour, 0}, {a, 3, 3 * time.Hour, 0}, {a, 4, 3 * time.Hour, 0}, {a, 5, 3 * time.Hour, time.Hour}}},
		{"forgotten after forget", []step{
			{a, 1, 0, 0}, {a, 2, 0, 0}, {a, 3, 0, 0}, {a, 4, 0, 0}, {a, 5, 0, time.Minute},
			{a, 1, 26 * time.Hour, 0}, {a, 2, 26 * time.Hour, 0}, {a, 3, 26 * time.Hour, 0}, {a, 4, 26 * time.Hour, 0}, {a, 5, 26 * time.Hour, time.Minute}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := New(cfg)
			for i, s := range tc.steps {
				v := d.Observe(s.src, tcp(s.port), t0.Add(s.at))
				if v.Ban != (s.want != 0) || v.For != s.want {
					t.Fatalf("step %d: %+v, want ban for %v", i, v, s.want)
				}
			}
		})
	}
}

func TestBounded(t *testing.T) {
	d := New(Config{Window: time.Minute, Threshold: 5, BanFor: []time.Duration{time.Minute}, Forget: time.Hour, MaxSources: 3})
	t0 := time.Unix(1000, 0)
	for i := range 100 {
		d.Observe(netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), tcp(1), t0.Add(time.Duration(i)*time.Millisecond))
		if d.Len() > 3 {
			t.Fatalf("%d sources tracked, bound 3", d.Len())
		}
	}
	d.Expire(t0.Add(2 * time.Minute))
	if d.Len() != 0 {
		t.Fatalf("%d sources after expiry", d.Len())
	}
}

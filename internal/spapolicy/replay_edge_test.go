package spapolicy

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/replay"
	"github.com/sesame-knock/sesame/internal/spa"
)

// clock is a settable test clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// edgeHandler is a handler on clk whose replay store reads its own clock, storeAhead ahead:
// the handler must judge the replay at the clock reading it judged the age with.
func edgeHandler(t *testing.T, c *creds, clk *clock, storeAhead time.Duration) *Policy {
	t.Helper()
	store := replay.NewMemory(1 << 10)
	store.SetClock(func() time.Time { return clk.t.Add(storeAhead) })
	h, err := New(testConfig(c), store, nil, clk.now)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestSPAReplayAtWindowEdge: a packet is accepted once, however its deliveries fall around the
// edges of its age window (issue 9 item 2). The window is open (a packet exactly max_age old or
// ahead is refused), the replay entry outlives it, and age and replay are judged at one clock
// reading.
func TestSPAReplayAtWindowEdge(t *testing.T) {
	const maxAge = 120 * time.Second
	c := newCreds(t)
	pkts := []struct {
		name  string
		build builder
	}{
		{"native shared", native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)},
		{"native pair", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0)},
		{"fwknop hmac", fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0)},
	}
	// Deliveries, as offsets from the packet's timestamp, and what each must give.
	tests := []struct {
		name string
		at   []time.Duration
		want []Reason
	}{
		{"first at the old edge", []time.Duration{maxAge}, []Reason{ReasonStale}},
		{"first at the new edge", []time.Duration{-maxAge}, []Reason{ReasonFuture}},
		{"replay at the old edge", []time.Duration{0, maxAge - time.Nanosecond, maxAge, maxAge + time.Second},
			[]Reason{ReasonAccepted, ReasonReplay, ReasonStale, ReasonStale}},
		{"early, replayed at the end", []time.Duration{-maxAge + time.Nanosecond, maxAge - time.Nanosecond},
			[]Reason{ReasonAccepted, ReasonReplay}},
		{"late, replayed just after", []time.Duration{maxAge - time.Millisecond, maxAge - time.Nanosecond},
			[]Reason{ReasonAccepted, ReasonReplay}},
	}
	for i, p := range pkts {
		for _, tc := range tests {
			for _, ahead := range []time.Duration{0, time.Hour} {
				t.Run(p.name+"/"+tc.name+"/store clock +"+ahead.String(), func(t *testing.T) {
					clk := &clock{}
					h := edgeHandler(t, c, clk, ahead)
					pkt := p.build(t, c, t0, rand.NewChaCha8([32]byte{byte(i)}))
					for j, off := range tc.at {
						clk.t = t0.Add(off)
						before := h.Counts()[tc.want[j]]
						g := hg(h.Handle(context.Background(), client4, pkt, nil))
						if h.Counts()[tc.want[j]] != before+1 {
							t.Fatalf("delivery %d at %v: counts %v, want one more %q", j, off, h.Counts(), tc.want[j])
						}
						if (len(g) > 0) != (tc.want[j] == ReasonAccepted) {
							t.Fatalf("delivery %d at %v: grants %v", j, off, g)
						}
					}
				})
			}
		}
	}
}

// TestSPAReloadRaisingMaxAge: after a reload that raises max_age, a packet accepted before it is
// still refused (its entry was written for the old window), and fresh packets get the new one.
func TestSPAReloadRaisingMaxAge(t *testing.T) {
	c := newCreds(t)
	type step struct {
		at     time.Duration // clock, from t0
		maxAge time.Duration // when set: reload to this max_age at this step, before the delivery
		pkt    int           // index of the packet delivered (sent at sentAt[pkt])
		want   Reason
	}
	sentAt := []time.Duration{0, 200 * time.Second, 20 * time.Second}
	tests := []struct {
		name  string
		steps []step
	}{
		{"raise once", []step{
			{at: 0, pkt: 0, want: ReasonAccepted},
			{at: 10 * time.Second, maxAge: 600 * time.Second, pkt: 0, want: ReasonReplay},
			{at: 125 * time.Second, pkt: 0, want: ReasonStale}, // its entry expired at 125 s
			{at: 300 * time.Second, pkt: 0, want: ReasonStale},
			{at: 700 * time.Second, pkt: 1, want: ReasonAccepted}, // 500 s old: the new window
			{at: 750 * time.Second, pkt: 1, want: ReasonReplay},
		}},
		{"raise twice", []step{
			{at: 0, pkt: 0, want: ReasonAccepted},
			{at: 10 * time.Second, maxAge: 300 * time.Second, pkt: 2, want: ReasonAccepted},
			{at: 20 * time.Second, maxAge: 900 * time.Second, pkt: 0, want: ReasonReplay},
			{at: 126 * time.Second, pkt: 0, want: ReasonStale},
			{at: 330 * time.Second, pkt: 2, want: ReasonStale},
		}},
		{"lower then raise back", []step{
			{at: 0, pkt: 0, want: ReasonAccepted},
			{at: 10 * time.Second, maxAge: 30 * time.Second, pkt: 0, want: ReasonReplay},
			{at: 20 * time.Second, maxAge: 120 * time.Second, pkt: 2, want: ReasonAccepted},
			{at: 110 * time.Second, pkt: 0, want: ReasonReplay},
			{at: 130 * time.Second, pkt: 2, want: ReasonReplay},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &clock{t: t0}
			h := edgeHandler(t, c, clk, 0)
			rng := rand.NewChaCha8([32]byte{21})
			var pkts [][]byte
			for _, s := range sentAt {
				pkts = append(pkts, native(shared, spa.Request{Ports: []netport.Port{ssh}}, s)(t, c, t0, rng))
			}
			for i, st := range tc.steps {
				clk.t = t0.Add(st.at)
				if st.maxAge > 0 {
					cfg := testConfig(c)
					cfg.MaxAge = st.maxAge
					if err := h.Reload(cfg); err != nil {
						t.Fatal(err)
					}
				}
				before := h.Counts()[st.want]
				hg(h.Handle(context.Background(), client4, pkts[st.pkt], nil))
				if h.Counts()[st.want] != before+1 {
					t.Fatalf("step %d (packet %d at %v): counts %v, want one more %q", i, st.pkt, st.at, h.Counts(), st.want)
				}
			}
		})
	}
}

// TestSPARefusedKeyPersisted: a packet that authenticates but is refused by policy has its key
// written to the file too (issue 9 item 6), so after a crash the same packet sent from an
// allowed source is still a replay.
func TestSPARefusedKeyPersisted(t *testing.T) {
	c := newCreds(t)
	path := filepath.Join(t.TempDir(), "replay.db")
	now := func() time.Time { return t0 }
	open := func() (*replay.Bolt, *replay.WriteBehind, *Policy) {
		file, err := replay.OpenBolt(path, replay.WithClock(now))
		if err != nil {
			t.Fatal(err)
		}
		w, err := replay.NewWriteBehind(file, 1<<10)
		if err != nil {
			t.Fatal(err)
		}
		h, err := New(testConfig(c), w, nil, now)
		if err != nil {
			t.Fatal(err)
		}
		return file, w, h
	}
	pkt := native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, t0, rand.NewChaCha8([32]byte{31}))

	file, _, h := open()
	hg(h.Handle(context.Background(), outside, pkt, nil))
	if h.Counts()[ReasonSourceNotAllowed] != 1 {
		t.Fatalf("from outside the sources: counts %v", h.Counts())
	}
	// Give the write-behind time to write (it writes 1 ms after being told), then crash: close
	// the file under it, without the clean Close that writes what is pending.
	netWait := time.Now().Add(time.Second)
	for n, _ := file.Len(); n == 0 && time.Now().Before(netWait); n, _ = file.Len() {
		time.Sleep(5 * time.Millisecond)
	}
	if err := file.Close(); err != nil {
		t.Fatal(err)
	}

	file, w, h := open()
	defer w.Close()
	_ = file
	g := hg(h.Handle(context.Background(), client4, pkt, nil))
	if g != nil || h.Counts()[ReasonReplay] != 1 {
		t.Errorf("after the crash, from an allowed source: grants %v, counts %v; want a replay", g, h.Counts())
	}
}

// TestSPABadSources: sources no real sender has are refused before anything else, with a log
// line naming source and reason; an IPv4-mapped source is not taken for the IPv4 address (issue
// 9 item 7). Loopback passes only a loopback prefix in sources.
func TestSPABadSources(t *testing.T) {
	c := newCreds(t)
	loopCfg := testConfig(c)
	loopCfg.Clients[1].Sources = append(loopCfg.Clients[1].Sources, netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128"))
	tests := []struct {
		name   string
		src    string // "" is the zero Addr
		build  builder
		loop   bool // bob's sources name loopback
		reason Reason
	}{
		{"mapped ipv4 client, native", "::ffff:198.18.0.2", native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0), false, ReasonBadSource},
		{"mapped ipv4 client, fwknop", "::ffff:198.18.0.2", fw(fwKeys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0), false, ReasonBadSource},
		{"mapped loopback", "::ffff:127.0.0.1", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), true, ReasonBadSource},
		{"ipv4 multicast", "224.0.0.251", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), false, ReasonBadSource},
		{"ipv6 multicast", "ff02::1", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), false, ReasonBadSource},
		{"broadcast", "255.255.255.255", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), false, ReasonBadSource},
		{"unspecified ipv4", "0.0.0.0", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), false, ReasonBadSource},
		{"this network", "0.0.0.7", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), false, ReasonBadSource},
		{"unspecified ipv6", "::", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), false, ReasonBadSource},
		{"no address", "", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), false, ReasonBadSource},
		{"loopback, any source", "127.0.0.1", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), false, ReasonSourceNotAllowed},
		{"ipv6 loopback, any source", "::1", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), false, ReasonSourceNotAllowed},
		{"loopback named", "127.0.0.1", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), true, ReasonAccepted},
		{"ipv6 loopback named", "::1", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), true, ReasonAccepted},
		{"link-local", "fe80::2", native(pair, spa.Request{Ports: []netport.Port{dns}}, 0), false, ReasonAccepted},
		{"multicast address asked for", "198.18.0.2", native(pair, spa.Request{Ports: []netport.Port{dns}, Addr: netip.MustParseAddr("224.0.0.1")}, 0), false, ReasonAddrNotAllowed},
		{"loopback asked for", "198.18.0.2", native(pair, spa.Request{Ports: []netport.Port{dns}, Addr: netip.MustParseAddr("127.0.0.1")}, 0), false, ReasonAddrNotAllowed},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(c)
			if tc.loop {
				cfg = loopCfg
			}
			h, logs := newHandler(t, cfg, func() time.Time { return t0 })
			var src netip.Addr
			if tc.src != "" {
				src = netip.MustParseAddr(tc.src)
			}
			g := hg(h.Handle(context.Background(), src, tc.build(t, c, t0, rand.NewChaCha8([32]byte{byte(i), 1})), nil))
			if h.Counts()[tc.reason] != 1 {
				t.Fatalf("counts %v, want one %q", h.Counts(), tc.reason)
			}
			if (g != nil) != (tc.reason == ReasonAccepted) {
				t.Errorf("grants %v", g)
			}
			for _, gr := range g {
				if gr.Src != src {
					t.Errorf("grant for %v, want %v", gr.Src, src)
				}
			}
			line := logs.String()
			srcAttr := "src=" + src.String()
			if !src.IsValid() {
				srcAttr = `src=""`
			}
			if !strings.Contains(line, srcAttr) || !strings.Contains(line, "reason="+strconv.Quote(tc.reason.String())) && !strings.Contains(line, "reason="+tc.reason.String()) {
				t.Errorf("log line lacks src or reason:\n%s", line)
			}
		})
	}
}

// TestSPARestartRaisingMaxAge: a restart with a larger max_age does not revive a packet accepted
// before it: the replay file keeps the window its entries were written for.
func TestSPARestartRaisingMaxAge(t *testing.T) {
	c := newCreds(t)
	path := filepath.Join(t.TempDir(), "replay.db")
	clk := &clock{t: t0}
	start := func(maxAge time.Duration) (*Policy, func()) {
		store, err := replay.OpenBolt(path, replay.WithClock(clk.now))
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig(c)
		cfg.MaxAge = maxAge
		h, err := New(cfg, store, nil, clk.now)
		if err != nil {
			t.Fatal(err)
		}
		return h, func() { store.Close() }
	}
	rng := rand.NewChaCha8([32]byte{41})
	old := native(shared, spa.Request{Ports: []netport.Port{ssh}}, 0)(t, c, t0, rng)
	h, stop := start(120 * time.Second)
	if g := hg(h.Handle(context.Background(), client4, old, nil)); g == nil {
		t.Fatalf("first delivery refused: %v", h.Counts())
	}
	stop()
	steps := []struct {
		at     time.Duration
		maxAge time.Duration // restart with it first, when set
		pkt    []byte
		want   Reason
	}{
		{10 * time.Second, 600 * time.Second, old, ReasonReplay},
		{130 * time.Second, 0, old, ReasonStale}, // its entry, written for 120 s, is gone
		{300 * time.Second, 0, old, ReasonStale},
		{400 * time.Second, 900 * time.Second, old, ReasonStale}, // a second restart remembers too
		{500 * time.Second, 0, native(shared, spa.Request{Ports: []netport.Port{ssh}}, 200*time.Second)(t, c, t0, rng), ReasonAccepted},
	}
	h, stop = nil, func() {}
	defer func() { stop() }()
	for i, st := range steps {
		clk.t = t0.Add(st.at)
		if st.maxAge > 0 {
			stop()
			h, stop = start(st.maxAge)
		}
		before := h.Counts()[st.want]
		hg(h.Handle(context.Background(), client4, st.pkt, nil))
		if h.Counts()[st.want] != before+1 {
			t.Fatalf("step %d at %v: counts %v, want one more %q", i, st.at, h.Counts(), st.want)
		}
	}
}

// TestSPAStoredWindow: the window kept in the replay file survives a round trip, and a damaged
// one stops the server from starting rather than be guessed.
func TestSPAStoredWindow(t *testing.T) {
	w := firstWindow(120*time.Second).next(600*time.Second, t0).next(900*time.Second, t0.Add(time.Minute))
	b, _ := w.MarshalBinary()
	var got window
	if err := got.UnmarshalBinary(b); err != nil || got.retention != w.retention || len(got.bounds) != 2 ||
		!got.bounds[1].cutoff.Equal(w.bounds[1].cutoff) || got.bounds[1].limit != w.bounds[1].limit {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, w)
	}
	c := newCreds(t)
	for _, bad := range [][]byte{{1, 2, 3}, make([]byte, 8), append(bytes.Clone(b[:8]), make([]byte, 16)...)} {
		store, err := replay.OpenBolt(filepath.Join(t.TempDir(), "replay.db"))
		if err != nil {
			t.Fatal(err)
		}
		if err := store.PutMeta(windowMeta, bad); err != nil {
			t.Fatal(err)
		}
		if _, err := New(testConfig(c), store, nil, nil); err == nil || !strings.Contains(err.Error(), "replay window") {
			t.Errorf("stored window %x: New = %v, want an error", bad, err)
		}
		store.Close()
	}
}

// TestSPAFwknopNoHMACRespelled: a packet of a client without HMAC is accepted once; the same
// packet with padding or other bytes appended, or its last character respelled, from any other
// source, is refused (issue 9 item 1).
func TestSPAFwknopNoHMACRespelled(t *testing.T) {
	c := newCreds(t)
	cfg := testConfig(c)
	cfg.Clients[4].AccessExpire = time.Time{} // "expired": no HMAC, any source
	h, err := New(cfg, replay.NewMemory(1<<10), nil, func() time.Time { return t0 })
	if err != nil {
		t.Fatal(err)
	}
	keys := fwknop.Keys{Key: []byte("expired key")}
	var pkt, alt []byte
	for i := range 16 { // a packet whose last character has unused bits, so it can be respelled
		pkt = fw(keys, fwknop.Message{Type: fwknop.TypeAccess, Ports: []netport.Port{ssh}}, 0)(t, c, t0, rand.NewChaCha8([32]byte{51, byte(i)}))
		if (len("U2FsdGVkX1")+len(pkt))%4 != 0 {
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
			alt = bytes.Clone(pkt)
			alt[len(alt)-1] = alphabet[strings.IndexByte(alphabet, alt[len(alt)-1])^1]
			break
		}
	}
	if alt == nil {
		t.Fatal("no respellable packet in 16 tries")
	}
	if g := hg(h.Handle(context.Background(), client4, pkt, nil)); g == nil {
		t.Fatalf("the packet itself: %v", h.Counts())
	}
	tests := []struct {
		name   string
		pkt    []byte
		reason Reason
	}{
		{"same", pkt, ReasonReplay},
		{"=", append(bytes.Clone(pkt), '='), ReasonMalformed},
		{"==", append(bytes.Clone(pkt), "=="...), ReasonMalformed},
		{"=AAAA", append(bytes.Clone(pkt), "=AAAA"...), ReasonMalformed},
		{"AAAA", append(bytes.Clone(pkt), "AAAA"...), ReasonBadMAC},
		{"respelled", alt, ReasonBadMAC},
	}
	for _, tc := range tests {
		for _, src := range []netip.Addr{client6, outside} {
			before := h.Counts()[tc.reason]
			if g := hg(h.Handle(context.Background(), src, tc.pkt, nil)); g != nil || h.Counts()[tc.reason] != before+1 {
				t.Errorf("%s from %v: grants %v, counts %v; want one more %q", tc.name, src, g, h.Counts(), tc.reason)
			}
		}
	}
}

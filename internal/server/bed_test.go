package server

import (
	"context"
	crand "crypto/rand"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/capture/capturetest"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall/firewalltest"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/replay"
	"github.com/sesame-knock/sesame/internal/spa"
)

// The bed: a whole Server on test doubles (firewalltest, capturetest, a recording ListenSPA),
// running, with one manual clock for the server, the firewall and the packets. No root.

var (
	t0     = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	srcA   = netip.MustParseAddr("198.18.0.2")
	srcB   = netip.MustParseAddr("198.18.0.3")
	srcC   = netip.MustParseAddr("fd5e:5a3e::9")
	dstIP  = netip.MustParseAddr("198.18.0.1")
	aliceK = mustShared()
)

func mustShared() spa.SharedKey {
	k, err := spa.GenerateSharedKey(crand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// doorConfig is one door, ssh: tcp/7000, udp/8000, tcp/23 opens tcp/22 for 30s.
func doorConfig() *config.Config {
	return &config.Config{
		Source: "test.toml",
		Server: config.Server{Firewall: config.FirewallNftables, SweepGuard: 2, MaxSources: 1024, StateDir: "/nonexistent"},
		Doors: []config.Door{{
			Door: knock.Door{Name: "ssh", Sequence: []knock.Element{tcp(7000), udp(8000), tcp(23)},
				Flags: knock.TCPFlags{Set: knock.SYN, Clear: knock.ACK}, Timeout: 5 * time.Second},
			Open: []netport.Port{tcp(22)}, OpenFor: 30 * time.Second,
		}},
	}
}

// spaSection is alice, a native shared-key client who may open tcp/443 from anywhere.
func spaSection(port uint16, sniff bool) *config.SPA {
	return &config.SPA{Port: port, Sniff: sniff, MaxAge: 2 * time.Minute, Clients: []config.SPAClient{{
		Name: "alice", Format: config.SPAFormatNative, Shared: &aliceK, Open: []netport.Port{tcp(443)},
		Sources: config.AnySource, DefaultOpenFor: 20 * time.Second, MaxOpenFor: time.Hour,
	}}}
}

func withSPA(cfg *config.Config, s *config.SPA) *config.Config {
	c := *cfg
	c.SPA = s
	return &c
}

// listeners is the ListenSPA double: each socket is a capturetest.Source; opens and closes are
// recorded in order.
type listeners struct {
	mu     sync.Mutex
	open   map[uint16]*capturetest.Source
	events []string
	fail   error
}

type recordedListener struct {
	*capturetest.Source
	l    *listeners
	port uint16
}

func (r recordedListener) Close() error {
	r.l.mu.Lock()
	if !r.Source.Closed() {
		r.l.events = append(r.l.events, fmt.Sprintf("close %d", r.port))
	}
	if r.l.open[r.port] == r.Source {
		delete(r.l.open, r.port)
	}
	r.l.mu.Unlock()
	return r.Source.Close()
}

func (l *listeners) listen(port uint16) (Listener, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return nil, l.fail
	}
	s := capturetest.New()
	l.open[port] = s
	l.events = append(l.events, fmt.Sprintf("open %d", port))
	return recordedListener{s, l, port}, nil
}

func (l *listeners) get(port uint16) *capturetest.Source {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open[port]
}

func (l *listeners) log() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

type killCall struct {
	src   netip.Addr
	ports []netport.Port
}

type bed struct {
	t      *testing.T
	clock  *firewalltest.Clock
	fw     *firewalltest.Backend
	cap    *capturetest.Source
	ln     *listeners
	logs   *recorder
	srv    *Server
	store  *replay.Memory
	mu     sync.Mutex
	kills  []killCall
	cancel context.CancelFunc
	done   chan error
}

type bedOption func(*Deps, *bed)

func withKill() bedOption {
	return func(d *Deps, b *bed) {
		d.KillConns = func(_ context.Context, src netip.Addr, ports []netport.Port) (int, error) {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.kills = append(b.kills, killCall{src, slices.Clone(ports)})
			return 2, nil
		}
	}
}

// newBed runs a server on cfg and stops it at the end of the test.
func newBed(t *testing.T, cfg *config.Config, opts ...bedOption) *bed {
	t.Helper()
	b := &bed{t: t, clock: firewalltest.NewClock(t0), cap: capturetest.New(), ln: &listeners{open: map[uint16]*capturetest.Source{}}, logs: &recorder{}}
	b.fw = firewalltest.New(b.clock.Now)
	b.store = replay.NewMemory(1 << 12)
	b.store.SetClock(b.clock.Now)
	deps := Deps{Firewall: b.fw, Intake: b.cap, Logger: slog.New(b.logs), Now: b.clock.Now, KnockdLog: func(string) {},
		Replay: func(*config.Config) (replay.Store, error) { return b.store, nil }, ListenSPA: b.ln.listen,
		MaxOperatorGrant: time.Hour, Version: "test"}
	for _, o := range opts {
		o(&deps, b)
	}
	srv, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	b.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel, b.done = cancel, make(chan error, 1)
	go func() { b.done <- srv.Run(ctx) }()
	select {
	case <-b.cap.Running():
	case err := <-b.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not start")
	}
	t.Cleanup(func() { b.stop() })
	return b
}

func (b *bed) stop() error {
	b.cancel()
	select {
	case err := <-b.done:
		b.done <- err
		return err
	case <-time.After(10 * time.Second):
		b.t.Fatal("Run did not return")
		return nil
	}
}

// knock sends one packet per port from src through the capture, at the clock's time.
func (b *bed) knock(src netip.Addr, ports ...netport.Port) {
	b.t.Helper()
	for _, p := range ports {
		pkt := &capture.Packet{Time: b.clock.Now(), Src: src, Dst: dstIP, Proto: p.Proto, SrcPort: 40000, DstPort: p.Num, TCPFlags: 0x02}
		if err := b.cap.Send(context.Background(), pkt); err != nil {
			b.t.Fatal(err)
		}
	}
}

// alicePacket is a fresh native SPA packet of alice asking for tcp/443.
func (b *bed) alicePacket() []byte {
	b.t.Helper()
	pkt, err := spa.Seal(spa.Request{Ports: []netport.Port{tcp(443)}}, spa.ClientCredential{ID: "alice", Shared: &aliceK}, b.clock.Now(), crand.Reader)
	if err != nil {
		b.t.Fatal(err)
	}
	return pkt
}

// sendSPA delivers payload from src to the SPA socket on port (sniff false) or through the
// capture (sniff true).
func (b *bed) sendSPA(src netip.Addr, port uint16, sniff bool, payload []byte) {
	b.t.Helper()
	pkt := &capture.Packet{Time: b.clock.Now(), Src: src, Dst: dstIP, Proto: netport.UDP, SrcPort: 40001, DstPort: port, Payload: payload}
	via := b.cap
	if !sniff {
		if via = b.ln.get(port); via == nil {
			b.t.Fatalf("no SPA socket on udp/%d (%v)", port, b.ln.log())
		}
		<-via.Running()
	}
	if err := via.Send(context.Background(), pkt); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bed) killCalls() []killCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.kills)
}

var sequence = []netport.Port{tcp(7000), udp(8000), tcp(23)}

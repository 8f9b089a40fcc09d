package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/capture"
	"github.com/sesame-knock/sesame/internal/capture/capturetest"
	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/firewall/firewalltest"
	"github.com/sesame-knock/sesame/internal/netport"
)

// TestKnockPath: knocks through the capture double end in a grant in the in-memory firewall, or
// in a refusal counted under its typed reason and logged under its usual name.
func TestKnockPath(t *testing.T) {
	type step struct {
		ports []netport.Port
		wait  time.Duration // clock advance after the knocks
	}
	tests := []struct {
		name      string
		steps     []step
		grantErr  error
		granted   bool
		refused   map[string]uint64
		guarded   uint64
		logLine   string
		grantErrs uint64
	}{
		{"sequence opens", []step{{ports: sequence}}, nil, true, nil, 0, "door opened door=ssh src=198.18.0.2", 0},
		{"wrong knock", []step{{ports: []netport.Port{tcp(7000), tcp(23)}}}, nil, false, map[string]uint64{"wrong knock": 1}, 0, "reason=wrong knock", 0},
		{"sequence timeout", []step{{ports: sequence[:2], wait: 6 * time.Second}, {ports: sequence[2:]}}, nil, false,
			map[string]uint64{"sequence timeout": 1}, 0, "reason=sequence timeout", 0},
		{"sweep guard", []step{{ports: []netport.Port{tcp(7001)}}, {ports: sequence}}, nil, false, nil, 1, "sweep guard", 0},
		{"grant refused by the firewall", []step{{ports: sequence}}, errors.New("netlink: ENOBUFS"), false, nil, 0, "door opened but the grant failed", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, doorConfig())
			b.fw.Fail(firewalltest.OpGrant, tc.grantErr)
			for _, s := range tc.steps {
				b.knock(srcA, s.ports...)
				b.clock.Advance(s.wait)
			}
			if got := b.fw.Has(srcA, tcp(22)); got != tc.granted {
				t.Fatalf("granted %v, want %v; log:\n%s", got, tc.granted, strings.Join(b.logs.all(), "\n"))
			}
			st := b.srv.Stats()
			for reason, n := range tc.refused {
				if st.Knock.Refused[reason] != n {
					t.Errorf("refused[%q] = %d, want %d (%v)", reason, st.Knock.Refused[reason], n, st.Knock.Refused)
				}
			}
			if st.Knock.Guarded != tc.guarded || st.Grants["ssh"].Errors != tc.grantErrs {
				t.Errorf("guarded %d, grant errors %d; want %d, %d", st.Knock.Guarded, st.Grants["ssh"].Errors, tc.guarded, tc.grantErrs)
			}
			if st.Knock.Packets == 0 || st.Capture.Received != st.Knock.Packets {
				t.Errorf("knock packets %d, capture received %d", st.Knock.Packets, st.Capture.Received)
			}
			if tc.granted && (st.Latency.Count != 1 || st.Grants["ssh"].Added != 1 || st.Grants["ssh"].Active != 1) {
				t.Errorf("latency %+v, grants %+v", st.Latency, st.Grants)
			}
			if b.logs.count(tc.logLine) == 0 {
				t.Errorf("no log line with %q:\n%s", tc.logLine, strings.Join(b.logs.all(), "\n"))
			}
		})
	}
}

// TestReload: a reload applies doors and [spa] together, or, when any part is bad or the kernel
// refuses, changes nothing (gate, filter, doors, SPA clients, listener) and says why.
func TestReload(t *testing.T) {
	start := withSPA(doorConfig(), spaSection(62201, false))
	good := withSPA(doorConfig(), spaSection(62201, false))
	good.Doors = slices.Clone(good.Doors)
	good.Doors[0].Open = []netport.Port{tcp(22), tcp(2222)}
	badSPA := withSPA(good, spaSection(62201, false))
	badSPA.SPA.Clients[0].Shared = nil // no usable key
	newPort := withSPA(good, spaSection(62202, false))
	backend := withSPA(good, spaSection(62201, false))
	backend.Server.Firewall = config.FirewallIptables
	stateDir := withSPA(good, spaSection(62201, false))
	stateDir.Server.StateDir = "/elsewhere"
	ifaces := withSPA(good, spaSection(62201, false))
	ifaces.Server.Interfaces = []string{"eth1"}
	logFile := withSPA(good, spaSection(62201, false))
	logFile.Server.UseSyslog = true
	pidFile := withSPA(good, spaSection(62201, false))
	pidFile.Server.PidFile = "/run/sesame.pid"
	control := withSPA(good, spaSection(62201, false))
	control.Control.MaxGrant = time.Hour
	metrics := withSPA(good, spaSection(62201, false))
	metrics.Metrics.Listen = "127.0.0.1:9741"
	aws := withSPA(good, spaSection(62201, false))
	aws.AWS = &config.AWS{Region: "eu-west-1", SecurityGroups: []string{"sg-01234567"}, MaxRules: 50}
	tests := []struct {
		name    string
		next    *config.Config
		break_  func(b *bed)
		err     string
		applied bool
	}{
		{"good", good, nil, "", true},
		{"bad spa client", badSPA, nil, `client "alice": no usable key`, false},
		{"firewall backend", backend, nil, "changing the firewall backend (nftables to iptables) takes a restart", false},
		{"state_dir", stateDir, nil, "changing state_dir (the replay cache's) takes a restart", false},
		{"interfaces", ifaces, nil, "changing the interfaces takes a restart", false},
		{"syslog", logFile, nil, "changing log_file or use_syslog takes a restart", false},
		{"pid_file", pidFile, nil, "changing pid_file takes a restart", false},
		{"control", control, nil, "changing [control] takes a restart", false},
		{"metrics", metrics, nil, "changing [metrics] takes a restart", false},
		{"firewall.aws", aws, nil, "changing [firewall.aws] takes a restart", false},
		{"gate refused", good, func(b *bed) { b.fw.Fail(firewalltest.OpApply, errors.New("EPERM")) }, "apply firewall gate: EPERM", false},
		{"filter refused", good, func(b *bed) { b.cap.FailFilter(errors.New("ENOMEM")) }, "set capture filter: ENOMEM", false},
		{"socket refused", newPort, func(b *bed) { b.ln.fail = errors.New("EADDRINUSE") }, "listen on udp/62202: EADDRINUSE", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, start)
			before, _ := b.fw.Gate()
			filters := len(b.cap.Filters())
			if tc.break_ != nil {
				tc.break_(b)
			}
			err := b.srv.Reload(context.Background(), tc.next)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("Reload: %v, want %q", err, tc.err)
			}
			if strings.Contains(tc.err, "restart") && !errors.Is(err, ErrNeedsRestart) {
				t.Errorf("%v does not wrap ErrNeedsRestart", err)
			}
			b.fw.Fail(firewalltest.OpApply, nil)
			b.cap.FailFilter(nil)
			gate, _ := b.fw.Gate()
			if got := slices.Contains(gate.Protected, tcp(2222)); got != tc.applied {
				t.Errorf("gate %v: tcp/2222 protected %v, want %v (before %v)", gate.Protected, got, tc.applied, before.Protected)
			}
			if tc.applied != (len(b.cap.Filters()) > filters) {
				t.Errorf("%d filters set after %d, applied %v", len(b.cap.Filters()), filters, tc.applied)
			}
			// The doors and the SPA client are the running ones either way.
			b.knock(srcA, sequence...)
			if got := b.fw.Has(srcA, tcp(2222)); got != tc.applied {
				t.Errorf("the door opened tcp/2222: %v, want %v", got, tc.applied)
			}
			b.sendSPA(srcB, 62201, false, b.alicePacket())
			if !b.fw.Has(srcB, tcp(443)) {
				t.Errorf("alice's packet on the running socket was not granted; listeners %v", b.ln.log())
			}
			if !tc.applied && !slices.Equal(b.ln.log(), []string{"open 62201"}) {
				t.Errorf("a failed reload touched the SPA socket: %v", b.ln.log())
			}
		})
	}
}

// TestReloadSPASection: SIGHUP's reload adds and removes [spa], moves its socket (the new one
// opens before the old one closes) and switches to and from sniffing (the capture filter
// changes); replay keys survive it all.
func TestReloadSPASection(t *testing.T) {
	b := newBed(t, doorConfig())
	reload := func(cfg *config.Config) {
		t.Helper()
		if err := b.srv.Reload(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
	}
	first := b.alicePacket()
	steps := []struct {
		name      string
		spa       *config.SPA
		sockets   []string // listener events so far
		filterSPA []uint16
	}{
		{"add [spa]", spaSection(62201, false), []string{"open 62201"}, nil},
		{"move the socket", spaSection(62202, false), []string{"open 62201", "open 62202", "close 62201"}, nil},
		{"sniff", spaSection(62203, true), []string{"open 62201", "open 62202", "close 62201", "close 62202"}, []uint16{62203}},
		{"socket again", spaSection(62204, false), []string{"open 62201", "open 62202", "close 62201", "close 62202", "open 62204"}, nil},
		{"remove [spa]", nil, []string{"open 62201", "open 62202", "close 62201", "close 62202", "open 62204", "close 62204"}, nil},
	}
	for i, st := range steps {
		reload(withSPA(doorConfig(), st.spa))
		if got := b.ln.log(); !slices.Equal(got, st.sockets) {
			t.Fatalf("%s: sockets %v, want %v", st.name, got, st.sockets)
		}
		if got := b.cap.Filter().SPA; !slices.Equal(got, st.filterSPA) {
			t.Fatalf("%s: filter SPA ports %v, want %v", st.name, got, st.filterSPA)
		}
		gate, _ := b.fw.Gate()
		if got := slices.Contains(gate.Protected, tcp(443)); got != (st.spa != nil) {
			t.Fatalf("%s: gate %v", st.name, gate.Protected)
		}
		if st.spa == nil {
			// Without [spa] a datagram on the old port is only a packet: nothing opens.
			b.sendSPA(srcC, 62203, true, b.alicePacket())
			if b.fw.Has(srcC, tcp(443)) {
				t.Fatalf("%s: an SPA packet opened a port with [spa] removed", st.name)
			}
			continue
		}
		src := srcA
		if i == 0 {
			b.sendSPA(src, st.spa.Port, st.spa.Sniff, first)
		} else {
			src = srcB
			b.fw.Revoke(context.Background(), firewall.Grant{Src: src, Port: tcp(443)})
			b.sendSPA(src, st.spa.Port, st.spa.Sniff, b.alicePacket())
		}
		if !b.fw.Has(src, tcp(443)) {
			t.Fatalf("%s: alice's packet was not granted:\n%s", st.name, strings.Join(b.logs.all(), "\n"))
		}
	}
	// [spa] back: the policy and its replay keys are the ones from before.
	reload(withSPA(doorConfig(), spaSection(62205, false)))
	b.sendSPA(srcA, 62205, false, first)
	if d := b.srv.Stats().SPA.Decisions["native"]; d["replay"] != 1 || d["accepted"] != 4 {
		t.Errorf("decisions %v, want 4 accepted and the first packet a replay", d)
	}
	if b.logs.count("spa disabled") != 1 || b.logs.count("spa configuration reloaded") != 3 {
		t.Errorf("log:\n%s", strings.Join(b.logs.all(), "\n"))
	}
}

// TestOperatorGrant: a break-glass grant is bounded, for protected ports only, attributed to the
// operator with its note, and logged with the caller's uid.
func TestOperatorGrant(t *testing.T) {
	tests := []struct {
		name string
		req  GrantRequest
		err  string
	}{
		{"within the bound", GrantRequest{Src: srcA, Port: tcp(22), For: MillisOf(time.Hour), Note: "ticket 7", UID: 1000}, ""},
		{"over the bound", GrantRequest{Src: srcA, Port: tcp(22), For: MillisOf(time.Hour + time.Millisecond)}, "longer than the maximum operator grant, 1h0m0s"},
		{"no duration", GrantRequest{Src: srcA, Port: tcp(22)}, "a duration of at least 1ms"},
		{"unprotected port", GrantRequest{Src: srcA, Port: tcp(80), For: 1000}, "tcp/80 is not a protected port"},
		{"no source", GrantRequest{Port: tcp(22), For: 1000}, "no source address"},
		{"multicast source", GrantRequest{Src: netip4("224.0.0.1"), Port: tcp(22), For: 1000}, "source 224.0.0.1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newBed(t, doorConfig())
			err := b.srv.Grant(context.Background(), tc.req)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrBadRequest)) {
				t.Fatalf("Grant: %v, want %q", err, tc.err)
			}
			live := b.fw.Live()
			if tc.err != "" {
				if len(live) != 0 {
					t.Fatalf("refused grant reached the kernel: %v", live)
				}
				return
			}
			gs, err := b.srv.Grants(context.Background())
			if err != nil || len(gs) != 1 || gs[0].Kind != GrantOperator || gs[0].By != OperatorName || gs[0].Note != "ticket 7" || gs[0].Remaining != MillisOf(time.Hour) {
				t.Fatalf("grants %+v, %v", gs, err)
			}
			if b.logs.count("operator grant src=198.18.0.2 port=tcp/22 for=1h0m0s uid=1000 note=ticket 7") != 1 {
				t.Errorf("log:\n%s", strings.Join(b.logs.all(), "\n"))
			}
		})
	}
}

// TestRevoke: grants go from the kernel at once (one, a source's, all); Kill ends the sources'
// connections to the protected ports through the hook, and is refused without one.
func TestRevoke(t *testing.T) {
	tests := []struct {
		name   string
		req    RevokeRequest
		kill   bool // the bed has a KillConns hook
		err    error
		grants int
		left   int
		kills  []killCall
	}{
		{"one", RevokeRequest{Src: srcA, Port: tcp(22)}, false, nil, 1, 3, nil},
		{"a source's", RevokeRequest{Src: srcA}, false, nil, 2, 2, nil},
		{"all", RevokeRequest{All: true}, false, nil, 4, 0, nil},
		{"a source's, kill", RevokeRequest{Src: srcA, Kill: true}, true, nil, 2, 2, []killCall{{srcA, []netport.Port{tcp(22), tcp(443)}}}},
		{"one, kill", RevokeRequest{Src: srcB, Port: tcp(22), Kill: true}, true, nil, 1, 3, []killCall{{srcB, []netport.Port{tcp(22)}}}},
		{"all, kill", RevokeRequest{All: true, Kill: true}, true, nil, 4, 0,
			[]killCall{{srcA, []netport.Port{tcp(22), tcp(443)}}, {srcB, []netport.Port{tcp(22), tcp(443)}}, {srcC, []netport.Port{tcp(22), tcp(443)}}}},
		{"kill without conntrack", RevokeRequest{Src: srcA, Kill: true}, false, ErrNoKill, 0, 4, nil},
		{"nothing named", RevokeRequest{}, false, ErrBadRequest, 0, 4, nil},
		{"all and a source", RevokeRequest{All: true, Src: srcA}, false, ErrBadRequest, 0, 4, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var opts []bedOption
			if tc.kill {
				opts = append(opts, withKill())
			}
			b := newBed(t, withSPA(doorConfig(), spaSection(62201, false)), opts...)
			b.knock(srcA, sequence...)                                                                       // door: srcA tcp/22
			b.sendSPA(srcA, 62201, false, b.alicePacket())                                                   // spa: srcA tcp/443
			b.srv.Grant(context.Background(), GrantRequest{Src: srcB, Port: tcp(22), For: 60000})            // operator
			b.fw.Grant(context.Background(), firewall.Grant{Src: srcC, Port: tcp(22), Timeout: time.Minute}) // an earlier run's
			if n := len(b.fw.Live()); n != 4 {
				t.Fatalf("%d grants set up, want 4", n)
			}
			res, err := b.srv.Revoke(context.Background(), tc.req)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("Revoke: %v, want %v", err, tc.err)
			}
			if res.Grants != tc.grants || len(b.fw.Live()) != tc.left {
				t.Fatalf("removed %d, %d left; want %d, %d", res.Grants, len(b.fw.Live()), tc.grants, tc.left)
			}
			if got := b.killCalls(); fmt.Sprint(got) != fmt.Sprint(tc.kills) || res.Killed != 2*len(tc.kills) {
				t.Errorf("kill calls %v (killed %d), want %v", got, res.Killed, tc.kills)
			}
			if tc.err == nil && b.logs.count("operator revoke grants=") != 1 {
				t.Errorf("no revoke log line:\n%s", strings.Join(b.logs.all(), "\n"))
			}
		})
	}
}

// TestStatusAndStats: Status and Stats agree with what happened: one knock grant, one SPA grant
// (both in the latency histogram), an operator grant (not in it), an earlier run's grant (GrantKernel), refusals, expiry.
func TestStatusAndStats(t *testing.T) {
	spa := spaSection(62201, false)
	spa.ICMP = true
	b := newBed(t, withSPA(doorConfig(), spa))
	ctx := context.Background()
	b.fw.Grant(ctx, firewall.Grant{Src: srcC, Port: tcp(22), Timeout: time.Hour})
	b.knock(srcA, sequence...)
	b.knock(srcB, tcp(7000), tcp(23)) // wrong knock
	pkt := b.alicePacket()
	b.sendSPA(srcA, 62201, false, pkt)
	b.sendSPA(srcA, 62201, false, pkt) // replay
	b.sendSPA(srcA, 62201, false, []byte("junk"))
	if err := b.srv.Grant(ctx, GrantRequest{Src: srcB, Port: tcp(443), For: MillisOf(10 * time.Minute), Note: "n"}); err != nil {
		t.Fatal(err)
	}
	b.clock.Advance(10 * time.Second)

	st, err := b.srv.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "test" || st.Config != "test.toml" || st.Firewall != "nftables" || st.Uptime != 10000 || st.Started != t0 {
		t.Errorf("status head %+v", st)
	}
	if len(st.Doors) != 1 || st.Doors[0].Opened != 1 || fmt.Sprint(st.Doors[0].Sequence) != "[tcp/7000 udp/8000 tcp/23]" || st.Doors[0].Open[0] != "tcp/22" {
		t.Errorf("doors %+v", st.Doors)
	}
	if st.SPA == nil || st.SPA.Listen != "udp/62201" || !st.SPA.ICMP || st.SPA.Clients[0] != (SPAClientStatus{Name: "alice", Format: "native", Accepted: 1, Refused: 1}) {
		t.Errorf("spa %+v", st.SPA)
	}
	kinds := map[string]string{}
	for _, g := range st.Grants {
		kinds[g.Src.String()+" "+g.Port.String()] = string(g.Kind) + ":" + g.By
	}
	want := map[string]string{"198.18.0.2 tcp/22": "door:ssh", "198.18.0.2 tcp/443": "spa:alice", "198.18.0.3 tcp/443": "operator:operator", "fd5e:5a3e::9 tcp/22": "kernel:"}
	if fmt.Sprint(kinds) != fmt.Sprint(want) {
		t.Errorf("grants %v, want %v", kinds, want)
	}

	s := b.srv.Stats()
	if s.Knock.Opened != 1 || b.srv.Counters.Opened.Load() != 2 || s.Knock.Refused["wrong knock"] != 1 || s.Knock.Refused["sequence timeout"] != 0 {
		t.Errorf("knock %+v", s.Knock)
	}
	if d := s.SPA.Decisions["native"]; d["accepted"] != 1 || d["replay"] != 1 || s.SPA.Decisions["unknown"]["malformed"] != 1 || s.SPA.Decisions["fwknop"] != nil {
		t.Errorf("spa decisions %v", s.SPA.Decisions)
	}
	if s.Replay.Entries != 1 || s.Latency.Count != 2 || s.Latency.Counts[0] != 2 || len(s.Latency.Bounds) != len(LatencyBounds) {
		t.Errorf("replay %+v, latency %+v", s.Replay, s.Latency)
	}
	if s.Grants["ssh"] != (GrantCounts{Added: 1, Active: 1}) || s.Grants["alice"] != (GrantCounts{Added: 1, Active: 1}) || s.Grants["operator"].Active != 1 {
		t.Errorf("grants %+v", s.Grants)
	}
	b.clock.Advance(25 * time.Second) // past alice's 20s and the door's 30s
	s = b.srv.Stats()
	if s.Grants["ssh"] != (GrantCounts{Added: 1, Expired: 1}) || s.Grants["alice"] != (GrantCounts{Added: 1, Expired: 1}) || s.Grants["operator"].Active != 1 {
		t.Errorf("after expiry: grants %+v", s.Grants)
	}
	gs, _ := b.srv.Grants(ctx)
	if len(gs) != 2 {
		t.Errorf("live after expiry: %+v", gs)
	}
}

// TestRunStopsCleanly: Run closes the SPA socket and the firewall as on_stop says, the on_stop
// of the configuration in force at the end (a reload changes it).
func TestRunStopsCleanly(t *testing.T) {
	for _, onStop := range []string{config.OnStopClose, config.OnStopRemove} {
		t.Run(onStop, func(t *testing.T) {
			cfg := withSPA(doorConfig(), spaSection(62201, false))
			cfg.Server.OnStop = config.OnStopClose
			b := newBed(t, cfg)
			cfg = withSPA(doorConfig(), spaSection(62201, false))
			cfg.Server.OnStop = onStop
			if err := b.srv.Reload(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
			if err := b.stop(); err != nil {
				t.Fatal(err)
			}
			closed, removed := b.fw.Closed()
			if !closed || removed != (onStop == config.OnStopRemove) || !slices.Equal(b.ln.log(), []string{"open 62201", "close 62201"}) {
				t.Errorf("closed %v removed %v, sockets %v", closed, removed, b.ln.log())
			}
			if err := b.srv.Reload(context.Background(), cfg); err == nil {
				t.Error("Reload after Run returned nil")
			}
		})
	}
}

// TestConcurrentPacketsReloadsRevokes: knocks, SPA packets, reloads (socket moves included),
// revokes and reads all at once (run with -race); every completed sequence is granted.
func TestConcurrentPacketsReloadsRevokes(t *testing.T) {
	b := newBed(t, withSPA(doorConfig(), spaSection(62201, true)))
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reloads atomic.Int64
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			reloads.Add(1)
			sniff := i%2 == 0
			if err := b.srv.Reload(ctx, withSPA(doorConfig(), spaSection(uint16(62201+i%3), sniff))); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			b.srv.Revoke(ctx, RevokeRequest{Src: srcB})
			b.srv.Stats()
			b.srv.Status(ctx)
		}
	})
	wg.Go(func() {
		for i := 0; i < 200; i++ {
			// Sniffed, whatever the mode: an SPA packet in sniff mode, a guard-free packet otherwise.
			b.cap.Send(ctx, &capture.Packet{Time: b.clock.Now(), Src: srcB, Dst: dstIP, Proto: netport.UDP, DstPort: uint16(62201 + i%3), Payload: b.alicePacket()})
		}
	})
	const sources = 200
	for i := range sources {
		src := netip4(fmt.Sprintf("198.18.1.%d", i))
		// A reload forgets knocks in progress: knock again until a whole sequence fell between
		// two reloads (bounded).
		for try := 0; try < 100 && !b.fw.Has(src, tcp(22)); try++ {
			b.knock(src, sequence...)
		}
		if !b.fw.Has(src, tcp(22)) {
			t.Fatalf("source %d: no sequence granted in 100 tries", i)
		}
	}
	// Keep packets coming until a few reloads have raced them (bounded).
	for i := 0; i < 100000 && reloads.Load() < 20; i++ {
		b.knock(srcC, tcp(7000))
	}
	if n := reloads.Load(); n < 20 {
		t.Errorf("only %d reloads raced the packets", n)
	}
	close(stop)
	wg.Wait()
	if s := b.srv.Stats(); s.Grants["ssh"].Added != sources || s.Knock.Opened < sources {
		t.Errorf("door grants %d, want %d", s.Grants["ssh"].Added, sources)
	}
}

func netip4(s string) netip.Addr { return netip.MustParseAddr(s) }

// The operator API, as the control socket and the metrics exporter use it.
var _ interface {
	Status(context.Context) (Status, error)
	Grants(context.Context) ([]GrantStatus, error)
	Grant(context.Context, GrantRequest) error
	Revoke(context.Context, RevokeRequest) (RevokeResult, error)
	Stats() Stats
} = (*Server)(nil)

// blockingGrants is a firewall whose Grant waits until release is closed.
type blockingGrants struct {
	*firewalltest.Backend
	entered chan struct{}
	release chan struct{}
}

func (b blockingGrants) Grant(ctx context.Context, g ...firewall.Grant) error {
	close(b.entered)
	<-b.release
	return b.Backend.Grant(ctx, g...)
}

// TestGrantOutsideMachineLock: a slow grant holds up neither the knock machine nor readers of
// it: the grant runs after the machine's lock is released.
func TestGrantOutsideMachineLock(t *testing.T) {
	fw := blockingGrants{firewalltest.New(nil), make(chan struct{}), make(chan struct{})}
	in := capturetest.New()
	srv, err := New(doorConfig(), Deps{Firewall: fw, Intake: in, KnockdLog: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	sent := make(chan error, 1)
	go func() {
		for _, p := range sequence {
			if err := in.Send(ctx, &capture.Packet{Time: time.Now(), Src: srcA, Dst: dstIP, Proto: p.Proto, DstPort: p.Num, TCPFlags: 0x02}); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	select {
	case <-fw.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the grant never started")
	}
	read := make(chan []int, 1)
	go func() { read <- srv.Progress(srcB) }()
	select {
	case <-read:
	case <-time.After(2 * time.Second):
		close(fw.release)
		t.Fatal("Progress waited for a grant in flight: the grant runs under the machine lock")
	}
	close(fw.release)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if !fw.Has(srcA, tcp(22)) {
		t.Error("not granted")
	}
}

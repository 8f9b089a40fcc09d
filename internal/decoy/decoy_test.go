package decoy

import (
	"context"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/alert"
	"github.com/sesame-knock/sesame/internal/netport"
)

type recorder struct {
	mu     sync.Mutex
	bans   []netip.Addr
	alerts []alert.Event
	got    chan struct{}
}

func (r *recorder) ban(_ context.Context, src netip.Addr, _ time.Duration, _ string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bans = append(r.bans, src)
	return nil
}

func (r *recorder) alert(e alert.Event) {
	r.mu.Lock()
	r.alerts = append(r.alerts, e)
	r.mu.Unlock()
	r.got <- struct{}{}
}

func freePort(t *testing.T, network string) uint16 {
	t.Helper()
	if network == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return uint16(l.Addr().(*net.TCPAddr).Port)
	}
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

func TestDecoy(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name     string
		never    bool
		banFor   time.Duration
		wantBans int
	}{
		{"bans after a handshake", false, time.Minute, 1},
		{"never_ban", true, time.Minute, 0},
		{"alert only", false, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{got: make(chan struct{}, 4)}
			tp, up := freePort(t, "tcp"), freePort(t, "udp")
			s := New(Options{
				Decoys: []Decoy{{Ports: []netport.Port{{Proto: netport.TCP, Num: tp}, {Proto: netport.UDP, Num: up}},
					BanFor: tc.banFor, Banner: "Evidence Server ready\r\n"}},
				Host: "127.0.0.1", Ban: r.ban, Alert: r.alert, ReadFor: 500 * time.Millisecond,
				NeverBan: func(a netip.Addr) bool { return tc.never && a == lo },
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			var c net.Conn
			var err error
			for i := 0; i < 50; i++ {
				if c, err = net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(tp))); err == nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				t.Fatal(err)
			}
			banner := make([]byte, len("Evidence Server ready\r\n"))
			if _, err := io.ReadFull(c, banner); err != nil || string(banner) != "Evidence Server ready\r\n" {
				t.Fatalf("banner %q, %v", banner, err)
			}
			c.Write([]byte("USER root\r\n"))
			c.(*net.TCPConn).CloseWrite()
			<-r.got
			c.Close()
			u, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(int(up)))
			if err != nil {
				t.Fatal(err)
			}
			u.Write([]byte("public"))
			u.Close()
			select {
			case <-r.got:
			case <-ctx.Done():
				t.Fatal("no udp alert")
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if len(r.bans) != tc.wantBans {
				t.Fatalf("bans = %v, want %d (only the TCP visit may ban)", r.bans, tc.wantBans)
			}
			if len(r.alerts) != 2 || string(r.alerts[0].Data) != "USER root\r\n" || r.alerts[0].Banned != (tc.wantBans == 1) ||
				r.alerts[1].Kind != "decoy_touch" || string(r.alerts[1].Data) != "public" || r.alerts[1].Banned {
				t.Fatalf("alerts = %+v", r.alerts)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestTouch: a SYN seen by the capture alerts as a SYN-only touch after the grace and never
// bans; a SYN whose handshake completes (reported before or after the accept) gives the
// handshake's alert alone; a retransmitted SYN alerts once.
func TestTouch(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	spoofed := netip.MustParseAddr("198.18.0.9")
	r := &recorder{got: make(chan struct{}, 16)}
	tp := freePort(t, "tcp")
	port := netport.Port{Proto: netport.TCP, Num: tp}
	s := New(Options{
		Decoys: []Decoy{{Ports: []netport.Port{port}, BanFor: time.Minute}},
		Host:   "127.0.0.1", Ban: r.ban, Alert: r.alert, ReadFor: 100 * time.Millisecond, SYNGrace: time.Second,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	wait := func(n int) {
		t.Helper()
		for range n {
			select {
			case <-r.got:
			case <-ctx.Done():
				t.Fatal("alert missing")
			}
		}
	}
	// A SYN-only touch, retransmitted: one alert, no ban.
	s.Touch(spoofed, port, time.Now())
	s.Touch(spoofed, port, time.Now())
	wait(1)
	// A SYN reported before the handshake, then a handshake: the handshake's alert only.
	s.Touch(lo, port, time.Now())
	c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(tp)))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	wait(1)
	// A SYN the capture reports after the accept: no touch either.
	s.Touch(lo, port, time.Now())
	time.Sleep(1500 * time.Millisecond)
	cancel()
	s.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.alerts) != 2 {
		t.Fatalf("alerts = %+v, want a SYN touch then a connect", r.alerts)
	}
	if a := r.alerts[0]; a.Kind != "decoy_touch" || a.Src != spoofed || a.Banned || a.Port != port.String() {
		t.Errorf("SYN touch alert %+v", a)
	}
	if a := r.alerts[1]; a.Kind != "decoy_connect" || a.Src != lo || !a.Banned {
		t.Errorf("connect alert %+v", a)
	}
	if len(r.bans) != 1 || r.bans[0] != lo {
		t.Errorf("bans = %v, want the handshake's source only", r.bans)
	}
	if st := s.Stats(); st.SYN != 1 || st.Handshake != 1 || st.UDP != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestSet: Set on a started server opens new ports, closes removed ones, keeps the others with
// their new settings, and changes nothing when a new port cannot be bound.
func TestSet(t *testing.T) {
	r := &recorder{got: make(chan struct{}, 16)}
	a, b := freePort(t, "tcp"), freePort(t, "tcp")
	pa, pb := netport.Port{Proto: netport.TCP, Num: a}, netport.Port{Proto: netport.TCP, Num: b}
	s := New(Options{Decoys: []Decoy{{Ports: []netport.Port{pa}, Banner: "one\n", BanFor: time.Minute}}, Host: "127.0.0.1", Alert: r.alert,
		Ban: r.ban, ReadFor: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	banner := func(p uint16) string {
		t.Helper()
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(p)))
		if err != nil {
			return "refused"
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		got, _ := io.ReadAll(c)
		return string(got)
	}
	if got := banner(a); got != "one\n" {
		t.Fatalf("banner %q", got)
	}
	if err := s.Set([]Decoy{{Ports: []netport.Port{pa, pb}, Banner: "two\n"}}); err != nil {
		t.Fatal(err)
	}
	if got := banner(a); got != "two\n" {
		t.Errorf("kept port: banner %q, want the new one", got)
	}
	r.mu.Lock()
	if len(r.bans) != 1 {
		t.Errorf("bans %v: the first visit (ban_for 1m) bans, the one after ban_for became 0 does not", r.bans)
	}
	r.mu.Unlock()
	if got := banner(b); got != "two\n" {
		t.Errorf("new port: %q", got)
	}
	if err := s.Set([]Decoy{{Ports: []netport.Port{pb}}}); err != nil {
		t.Fatal(err)
	}
	if got := banner(a); got != "refused" {
		t.Errorf("removed port still answers: %q", got)
	}
	// A port that cannot be bound: nothing changes.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	pc := netport.Port{Proto: netport.TCP, Num: uint16(busy.Addr().(*net.TCPAddr).Port)}
	if err := s.Set([]Decoy{{Ports: []netport.Port{pa, pc}}}); err == nil {
		t.Fatal("Set bound a busy port")
	}
	if got := s.Ports(); len(got) != 1 || got[0] != pb {
		t.Errorf("ports after a failed Set: %v, want %v", got, pb)
	}
	if got := banner(a); got != "refused" {
		t.Errorf("a failed Set left %v open: %q", pa, got)
	}
	cancel()
	s.Wait()
	if got := banner(b); got != "refused" {
		t.Errorf("port open after the end: %q", got)
	}
}

package e2e

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/knockclient"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/rotate"
	"github.com/sesame-knock/sesame/internal/spa"
)

const rotateConfig = `[server]
firewall = "nftables"
state_dir = "STATE_DIR"

[[door]]
name = "rot"
secret_file = "KEY_FILE"
rotate = "3s"
rotate_ports = "20000-29999"
open = ["tcp/2222"]
open_for = "1s"
`

// rotateParams are rotateConfig's door, as the client and the test derive it.
var rotateParams = rotate.Params{Door: "rot", Period: 3 * time.Second, Lo: 20000, Hi: 29999, Length: 4, Uses: 3, Proto: netport.TCP}

// TestIntegrationRotatingKnock: `sesame knock --door --secret-file` against the real daemon, for
// IPv4 and IPv6. The first knocks of the coming sequence, sent by another address, use nothing
// up; the client's knock opens the protected port (data both ways); the complete sequence the
// client sent (its -v output), replayed from other addresses in the same window and in the
// next (where it is still the previous window's), opens nothing; and after the boundary the
// client's next knock opens again.
func TestIntegrationRotatingKnock(t *testing.T) {
	bed := skipUnlessRoot(t)
	dir := t.TempDir()
	key, err := spa.GenerateSharedKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := key.MarshalText()
	keyFile := filepath.Join(dir, "rot.key")
	if err := os.WriteFile(keyFile, append(text, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	extra, err := bed.AddClientAddrs(context.Background(), 3, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		listen(t, bed, fam)
	}
	d, _ := startSesame(t, bed, strings.ReplaceAll(rotateConfig, "KEY_FILE", keyFile))
	// The daemon refuses sequences of the window it started in (it keeps no record of use
	// across restarts): the test knocks from the next one on.
	startWindow := rotateParams.Window(time.Now())
	state := filepath.Join(dir, "state")
	used := 0
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			svc := netip.AddrPortFrom(fam.server, 2222)
			// sesame knock sends from the address the kernel picks for the route; the others
			// of the family are the observer's and the replayers'.
			owner := routeSource(t, bed, fam.server)
			var others []netip.Addr
			for _, a := range append([]netip.Addr{fam.client}, extra...) {
				if a.Is6() == fam.server.Is6() && a != owner {
					others = append(others, a)
				}
			}
			if len(others) < 3 {
				t.Fatalf("addresses %v: want 3 besides the owner's %v", others, owner)
			}
			if canConnect(t, bed, owner, svc) {
				t.Fatal("protected port open before any knock")
			}
			// Start early in a window, so that the steps up to the replay fit in it.
			w := freshWindow(t, startWindow)
			pw, pc := nextKnock(t, state)
			if pw != w {
				t.Fatalf("the client would use window %d in window %d", pw, w)
			}
			coming, err := rotate.Sequence(key[:], rotateParams, pw, uint32(pc))
			if err != nil {
				t.Fatal(err)
			}
			// An observer who saw the first three knocks sends them: nothing is used up.
			partial := others[0]
			for _, p := range coming[:3] {
				sendOne(t, bed, partial, fam.server, fmt.Sprintf("%d/tcp", p.Num))
			}
			sent := rotatingKnock(t, bed, keyFile, state, fam.server)
			// At once, the captured complete sequence from another address, in the same window.
			replayer := others[1]
			if rw := replay(t, bed, replayer, fam.server, sent); rw != w {
				t.Fatalf("the replay was sent in window %d, not %d: the machine is too slow for this test", rw, w)
			}
			if !slices.Equal(sent, coming) {
				t.Fatalf("the client sent %v, the test expected %v (window %d, counter %d)", sent, coming, pw, pc)
			}
			if !eventually(t, bed, owner, svc, true) {
				t.Fatalf("the protected port did not open after sesame knock --door; log:\n%s", d.Output())
			}
			used++
			if canConnect(t, bed, replayer, svc) {
				t.Fatal("a replay in the same window opened the port")
			}
			if canConnect(t, bed, partial, svc) {
				t.Error("the observer of the first knocks got in")
			}
			// The next window, where the sequence is still valid as the previous window's.
			sleepUntil(rotateParams.Start(w + 1).Add(100 * time.Millisecond))
			late := others[2]
			if rw := replay(t, bed, late, fam.server, sent); rw != w+1 {
				t.Fatalf("the second replay was sent in window %d, not %d", rw, w+1)
			}
			if canConnect(t, bed, late, svc) {
				t.Fatal("a replay in the next window opened the port")
			}
			// The owner's grant (open_for 1s) has ended; its next knock, in the new window, opens.
			if !eventually(t, bed, owner, svc, false) {
				t.Fatal("the first grant did not end")
			}
			rotatingKnock(t, bed, keyFile, state, fam.server)
			if !eventually(t, bed, owner, svc, true) {
				t.Fatalf("the owner's knock in the next window did not open; log:\n%s", d.Output())
			}
			used++
		})
	}
	if n := strings.Count(d.Output(), "reason=\"sequence already used\""); n != 2*len(families) {
		t.Errorf("%d refusals as already used logged, want %d:\n%s", n, 2*len(families), d.Output())
	}
	if n := strings.Count(d.Output(), "door opened"); n != used {
		t.Errorf("%d openings logged, want %d", n, used)
	}
	if strings.Contains(d.Output(), strings.TrimSpace(string(text))[len("sesame-shared-v1 "):]) {
		t.Error("the daemon logged the door's key")
	}
}

// routeSource is the source address the client namespace uses towards dst.
func routeSource(t *testing.T, bed *netnsbed.Bed, dst netip.Addr) netip.Addr {
	t.Helper()
	var src netip.Addr
	err := netnsbed.Do(bed.Client, func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, 9)))
		if err != nil {
			return err
		}
		defer c.Close()
		src = c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// freshWindow waits, if need be, until a window after window after in which at least 2 s are
// left, and returns it.
func freshWindow(t *testing.T, after int64) int64 {
	t.Helper()
	now := time.Now()
	w := rotateParams.Window(now)
	if w <= after || rotateParams.Start(w+1).Sub(now) < 2*time.Second {
		w++
		sleepUntil(rotateParams.Start(w).Add(50 * time.Millisecond))
	}
	return w
}

func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

// nextKnock is the window and counter the client's next knock will use, from its state file.
func nextKnock(t *testing.T, state string) (int64, int) {
	t.Helper()
	lw, lc := int64(-1), 0
	if data, err := os.ReadFile(state); err == nil {
		f := strings.Fields(string(data))
		if len(f) != 2 {
			t.Fatalf("state file %q", data)
		}
		lw, _ = strconv.ParseInt(f[0], 10, 64)
		lc, _ = strconv.Atoi(f[1])
	}
	w, c, _ := knockclient.Next(rotateParams, time.Now(), lw, lc)
	return w, c
}

// rotatingKnock runs `sesame knock -v --door rot` in the client namespace and returns the
// knocks it sent, from its output.
func rotatingKnock(t *testing.T, bed *netnsbed.Bed, keyFile, state string, server netip.Addr) []netport.Port {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := netnsbed.Command(ctx, bed.Client, sesameBin, "knock", "-v", server.String(), "--door", "rot",
		"--secret-file", keyFile, "--rotate", "3s", "--rotate-ports", "20000-29999", "--state-file", state).CombinedOutput()
	if err != nil {
		t.Fatalf("sesame knock --door: %v\n%s", err, out)
	}
	var sent []netport.Port
	for _, l := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(l, "hitting tcp "); ok {
			ap, err := netip.ParseAddrPort(rest)
			if err != nil || ap.Addr() != server {
				t.Fatalf("knock line %q", l)
			}
			sent = append(sent, netport.Port{Proto: netport.TCP, Num: ap.Port()})
		}
	}
	if len(sent) != rotateParams.Length {
		t.Fatalf("sesame knock sent %d knocks, want %d:\n%s", len(sent), rotateParams.Length, out)
	}
	return sent
}

// replay sends seq from src, then leaves the daemon a moment to act on it; it returns the
// window the last knock was sent in.
func replay(t *testing.T, bed *netnsbed.Bed, src, dst netip.Addr, seq []netport.Port) int64 {
	t.Helper()
	for _, p := range seq {
		sendOne(t, bed, src, dst, fmt.Sprintf("%d/tcp", p.Num))
	}
	w := rotateParams.Window(time.Now())
	time.Sleep(200 * time.Millisecond)
	return w
}

// TestIntegrationRotatingBoundary: the kernel filter follows the rotation without losing a
// knock, IPv4 and IPv6. A knock begun 150 ms before a window boundary and ended 1.2 s after it
// opens (the daemon's move to the new window, within a second of the boundary, keeps it); a knock of the new window sent 30 ms after its
// boundary opens (the filter passed the next window's ports before the boundary, whenever the
// daemon's once-a-second tick comes).
func TestIntegrationRotatingBoundary(t *testing.T) {
	bed := skipUnlessRoot(t)
	dir := t.TempDir()
	key, err := spa.GenerateSharedKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := key.MarshalText()
	keyFile := filepath.Join(dir, "rot.key")
	if err := os.WriteFile(keyFile, text, 0o600); err != nil {
		t.Fatal(err)
	}
	extra, err := bed.AddClientAddrs(context.Background(), 2, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range families {
		listen(t, bed, fam)
	}
	cfg := strings.Replace(strings.ReplaceAll(rotateConfig, "KEY_FILE", keyFile), `open_for = "1s"`, `open_for = "30s"`, 1)
	d, _ := startSesame(t, bed, cfg)
	w := rotateParams.Window(time.Now()) + 1
	// Counter 0 for IPv4, 1 for IPv6: each sequence opens once.
	seq := func(w int64, fam family) []netport.Port {
		c := uint32(0)
		if fam.server.Is6() {
			c = 1
		}
		s, err := rotate.Sequence(key[:], rotateParams, w, c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	send := func(src, dst netip.Addr, ps []netport.Port) {
		for _, p := range ps {
			sendOne(t, bed, src, dst, fmt.Sprintf("%d/tcp", p.Num))
		}
	}
	// In flight across the boundary w | w+1, with a sequence of w.
	sleepUntil(rotateParams.Start(w + 1).Add(-150 * time.Millisecond))
	for _, fam := range families {
		send(pick(extra, 0, fam), fam.server, seq(w, fam)[:2])
	}
	// The daemon moves on at its first tick after the boundary, within a second.
	sleepUntil(rotateParams.Start(w + 1).Add(1200 * time.Millisecond))
	for _, fam := range families {
		send(pick(extra, 0, fam), fam.server, seq(w, fam)[2:])
	}
	// Just after the boundary w+1 | w+2, a sequence of w+2.
	sleepUntil(rotateParams.Start(w + 2).Add(30 * time.Millisecond))
	for _, fam := range families {
		send(pick(extra, 1, fam), fam.server, seq(w+2, fam))
	}
	for _, fam := range families {
		for i, what := range []string{"the knock in flight across the boundary", "the knock right after the boundary"} {
			src := pick(extra, i, fam)
			if !eventually(t, bed, src, netip.AddrPortFrom(fam.server, 2222), true) {
				t.Errorf("%s: %s from %s did not open; log:\n%s", fam.name, what, src, d.Output())
			}
		}
	}
}

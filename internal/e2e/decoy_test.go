//go:build linux

package e2e

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/alert"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/spa"
)

const (
	decoyPort    = 2323
	udpDecoyPort = 1161
	decoyBanner  = "Evidence Server 2.1 ready\r\n"
	hookSecret   = "webhook-secret-0123456789"
)

// hook is a real HTTP server inside the server namespace that records verified webhooks.
type hook struct {
	url  string
	mu   sync.Mutex
	evs  []alert.Event
	bad  int
	errs []string
}

func startHook(t *testing.T, bed *netnsbed.Bed, at netip.Addr) *hook {
	t.Helper()
	var l net.Listener
	if err := netnsbed.Do(bed.Server, func() error {
		var err error
		l, err = net.Listen("tcp", netip.AddrPortFrom(at, 0).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	h := &hook{url: "http://" + l.Addr().String() + "/hook"}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<16))
		h.mu.Lock()
		defer h.mu.Unlock()
		if !alert.Verify([]byte(hookSecret), body, r.Header.Get(alert.SignatureHeader)) {
			h.bad++
			w.WriteHeader(http.StatusForbidden)
			return
		}
		var e alert.Event
		if err := json.Unmarshal(body, &e); err != nil {
			h.errs = append(h.errs, err.Error())
		}
		h.evs = append(h.evs, e)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return h
}

func (h *hook) find(kind string, src netip.Addr) *alert.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.evs {
		if e.Kind == kind && e.Src == src {
			return &e
		}
	}
	return nil
}

func (h *hook) count(src netip.Addr) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, e := range h.evs {
		if e.Src == src {
			n++
		}
	}
	return n
}

// decoyConfig is the SPA configuration of spaKeys plus a door, decoys, never_ban and a webhook.
func decoyConfig(t *testing.T, k *spaKeys, never netip.Addr, hookURL, extra string) string {
	t.Helper()
	secret := filepath.Join(t.TempDir(), "hook.secret")
	writeSecret(t, secret, []byte(hookSecret+"\n"))
	cfg := k.config(false, t.TempDir())
	cfg = strings.Replace(cfg, `sources = ["198.18.0.0/24", "fd5e:5a3e::/112"]`, `sources = ["198.18.0.0/16", "fd5e:5a3e::/64"]`, 1)
	cfg = strings.Replace(cfg, "[server]\n", fmt.Sprintf("[server]\nnever_ban = [%q]\n", never), 1)
	return cfg + fmt.Sprintf(`
[[door]]
name = "ssh"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
sources = ["198.18.0.0/16", "fd5e:5a3e::/64"]
open = ["tcp/2222"]
open_for = "30s"

[[decoy]]
ports = ["tcp/%d", "udp/%d"]
ban_for = "1m"
banner = %q

[alert]
url = %q
secret_file = %q
interval = "1m"
`, decoyPort, udpDecoyPort, decoyBanner, hookURL, secret) + extra
}

// visitDecoy connects from src to the decoy with a real handshake, reads the banner and sends
// data: data both ways.
func visitDecoy(t *testing.T, bed *netnsbed.Bed, src, dst netip.Addr, send string) {
	t.Helper()
	c, err := netnsbed.Dial(bed.Client, src, netip.AddrPortFrom(dst, decoyPort), 2*time.Second)
	if err != nil {
		t.Fatalf("connect to the decoy from %s: %v", src, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	got := make([]byte, len(decoyBanner))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != decoyBanner {
		t.Fatalf("decoy banner %q, %v", got, err)
	}
	if _, err := c.Write([]byte(send)); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c) // the decoy closes after its read deadline or at EOF
}

// sendSpoofedSYN sends one raw TCP SYN with source address src (which need not be the sender's)
// from the client namespace: no handshake follows (the real src answers the SYN-ACK with a RST).
func sendSpoofedSYN(t *testing.T, bed *netnsbed.Bed, src, dst netip.Addr, dport uint16) {
	t.Helper()
	if src.Is4() {
		sendRawTCP(t, bed, src, dst, dport, 0x02)
		return
	}
	err := netnsbed.Do(bed.Client, func() error {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_TCP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_CHECKSUM, 16); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: src.As16()}); err != nil {
			return err
		}
		seg := make([]byte, 20)
		binary.BigEndian.PutUint16(seg[0:], 40000+dport%20000)
		binary.BigEndian.PutUint16(seg[2:], dport)
		binary.BigEndian.PutUint32(seg[4:], 0x5e5a3e01)
		seg[12], seg[13] = 5<<4, 0x02
		binary.BigEndian.PutUint16(seg[14:], 64240)
		return unix.Sendto(fd, seg, 0, &unix.SockaddrInet6{Addr: dst.As16()})
	})
	if err != nil {
		t.Fatalf("spoofed SYN %s -> %s:%d: %v", src, dst, dport, err)
	}
}

// TestIntegrationDecoy: a completed handshake with a TCP decoy bans the visitor (it cannot reach
// the protected port even after a correct knock, and its SPA garbage changes nothing), a
// spoofed SYN (no handshake) alerts once as a SYN-only touch and bans nobody, a UDP touch alerts without banning, the webhook arrives signed with
// the visitor's bytes, never_ban holds, the ban survives kill -9 and a restart, and a valid SPA
// packet from the banned address opens the port and lifts the ban.
func TestIntegrationDecoy(t *testing.T) {
	t.Parallel() // mostly waiting for timeouts: paired with another at the end of the run (doc.go)
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			svc := listen(t, bed, fam)
			extra, err := bed.AddClientAddrs(context.Background(), 3, true)
			if err != nil {
				t.Fatal(err)
			}
			attacker, never, toucher := pick(extra, 0, fam), pick(extra, 1, fam), pick(extra, 2, fam)
			innocent := fam.client
			h := startHook(t, bed, fam.server)
			k := newSPAKeys(t)
			sock := operatorSocket(t)
			cfg := decoyConfig(t, k, never, h.url, "")
			d, path := startSesame(t, bed, cfg, "--control-socket", sock)
			ctl := func(args ...string) string {
				t.Helper()
				out, err := sesameCtl(sock, nil, args...)
				if err != nil {
					t.Fatalf("sesame %v: %v\n%s\ndaemon:\n%s", args, err, out, d.Output())
				}
				return out
			}

			// A spoofed SYN from the innocent's address: no handshake, no ban.
			for range 3 {
				sendSpoofedSYN(t, bed, innocent, fam.server, decoyPort)
			}
			// The attacker really connects: banner received, bytes sent.
			visitDecoy(t, bed, attacker, fam.server, "USER root\r\n")
			if !waitFor(5*time.Second, func() bool { return h.find("decoy_connect", attacker) != nil }) {
				t.Fatalf("no webhook for the decoy visit; daemon:\n%s", d.Output())
			}
			e := h.find("decoy_connect", attacker)
			if !e.Banned || string(e.Data) != "USER root\r\n" || e.Port != fmt.Sprintf("tcp/%d", decoyPort) {
				t.Errorf("webhook %+v", e)
			}
			if h.bad != 0 {
				t.Errorf("%d webhooks with a bad signature", h.bad)
			}
			// The spoofed SYNs, whose handshake never completed (the innocent's kernel reset the
			// SYN-ACK), alert once as a SYN-only touch and ban nobody.
			if !waitFor(8*time.Second, func() bool { return h.find("decoy_touch", innocent) != nil }) {
				t.Fatalf("no webhook for the SYN-only touch from %s; daemon:\n%s", innocent, d.Output())
			}
			if e := h.find("decoy_touch", innocent); e.Banned || e.Port != fmt.Sprintf("tcp/%d", decoyPort) || !strings.Contains(e.Reason, "syn") {
				t.Errorf("SYN touch webhook %+v", e)
			}
			if n := h.count(innocent); n != 1 {
				t.Errorf("%d webhooks for the SYN touches from %s, want 1", n, innocent)
			}
			if !strings.Contains(d.Output(), fmt.Sprintf("msg=alert src=%s kind=decoy_touch port=tcp/%d", innocent, decoyPort)) {
				t.Errorf("no alert line for the SYN touch; daemon:\n%s", d.Output())
			}
			if b := banOf(t, ctl("status", "--json"), innocent); b != 0 {
				t.Fatalf("a spoofed SYN banned %s for %v", innocent, b)
			}
			// The innocent, whose address was forged, still knocks and connects.
			knockFrom(t, bed, innocent, fam.server, seq...)
			if !eventually(t, bed, innocent, svc, true) {
				t.Fatalf("innocent %s cannot connect after a knock: a spoofed SYN banned it; daemon:\n%s", innocent, d.Output())
			}
			if h.find("decoy_connect", innocent) != nil {
				t.Error("a spoofed SYN raised a decoy_connect alert")
			}
			// The attacker knocks correctly and still gets nothing; its SPA garbage changes nothing.
			knockFrom(t, bed, attacker, fam.server, seq...)
			sendUDP(t, bed, attacker, netip.AddrPortFrom(fam.server, spaPort), []byte("garbage garbage garbage garbage"))
			if canConnect(t, bed, attacker, svc) || eventually(t, bed, attacker, svc, true) {
				t.Fatalf("banned %s reached tcp/2222 after a correct knock; daemon:\n%s", attacker, d.Output())
			}
			if out := ctl("status"); !strings.Contains(out, attacker.String()) {
				t.Errorf("status does not list the ban of %s:\n%s", attacker, out)
			}
			// A UDP touch alerts and does not ban.
			sendUDP(t, bed, toucher, netip.AddrPortFrom(fam.server, udpDecoyPort), []byte("public"))
			if !waitFor(5*time.Second, func() bool { return h.find("decoy_touch", toucher) != nil }) {
				t.Fatalf("no webhook for the UDP touch; daemon:\n%s", d.Output())
			}
			if e := h.find("decoy_touch", toucher); e.Banned || string(e.Data) != "public" {
				t.Errorf("udp webhook %+v", e)
			}
			knockFrom(t, bed, toucher, fam.server, seq...)
			if !eventually(t, bed, toucher, svc, true) {
				t.Fatalf("%s banned by a UDP touch", toucher)
			}
			// never_ban: the visit alerts but the address stays usable.
			visitDecoy(t, bed, never, fam.server, "hello")
			if !waitFor(5*time.Second, func() bool { return h.find("decoy_connect", never) != nil }) {
				t.Fatalf("no webhook for the never_ban visit")
			}
			if e := h.find("decoy_connect", never); e.Banned {
				t.Errorf("never_ban %s reported banned", never)
			}
			knockFrom(t, bed, never, fam.server, seq...)
			if !eventually(t, bed, never, svc, true) {
				t.Fatalf("never_ban %s was banned", never)
			}
			// One webhook per source per interval.
			visitDecoy(t, bed, attacker, fam.server, "again")
			time.Sleep(300 * time.Millisecond)
			if n := h.count(attacker); n != 1 {
				t.Errorf("%d webhooks for %s within the interval, want 1", n, attacker)
			}

			// The metrics count the bans, the touches by kind and the webhooks; promtool accepts them.
			wantMetrics := []string{
				`sesame_bans_added_total{reason="decoy"} 2`, // the attacker's two visits
				`sesame_bans_active 1`,
				`sesame_decoy_touches_total{kind="handshake"} 3`,
				`sesame_decoy_touches_total{kind="syn"} 1`, // the spoofed SYNs, once: retransmits
				`sesame_decoy_touches_total{kind="udp"} 1`,
				`sesame_alerts_sent_total 4`,
				`sesame_alerts_suppressed_total 1`,
				`sesame_alerts_dropped_total 0`,
				`sesame_alerts_failed_total 0`,
			}
			var text string
			if !waitFor(3*time.Second, func() bool {
				text = scrape(t, unixDialer(sock))
				return !slices.ContainsFunc(wantMetrics, func(l string) bool { return !metricLine(text, l) })
			}) {
				for _, l := range wantMetrics {
					if !metricLine(text, l) {
						t.Errorf("metrics: no line %q", l)
					}
				}
				t.Logf("scrape:\n%s", text)
			}
			promtoolCheck(t, "socket", text)

			// kill -9 and start again: still banned.
			d.Stop(syscall.SIGKILL)
			<-d.Done()
			d = startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "-c", path, "--log-level", "debug", "--control-socket", sock)
			if !strings.Contains(d.Output(), "bans kept in the kernel") {
				t.Errorf("restart did not load the bans:\n%s", d.Output())
			}
			knockFrom(t, bed, attacker, fam.server, seq...)
			if eventually(t, bed, attacker, svc, true) {
				t.Fatalf("%s reached tcp/2222 after a restart: the ban was lost", attacker)
			}
			// A valid SPA packet from the banned address opens the port and lifts the ban.
			pkt := seal(t, k.shared(), spa.Request{Duration: 30 * time.Second}, time.Now())
			sendUDP(t, bed, attacker, netip.AddrPortFrom(fam.server, spaPort), pkt)
			if !eventually(t, bed, attacker, svc, true) {
				t.Fatalf("a valid SPA packet from banned %s did not open the port; daemon:\n%s", attacker, d.Output())
			}
			if !waitFor(2*time.Second, func() bool { return banOf(t, ctl("status", "--json"), attacker) == 0 }) {
				t.Errorf("ban of %s not lifted by a valid SPA packet:\n%s", attacker, ctl("status"))
			}
			text = scrape(t, unixDialer(sock))
			for _, l := range []string{`sesame_bans_lifted_total{reason="spa"} 1`, `sesame_bans_active 0`} {
				if !metricLine(text, l) {
					t.Errorf("metrics after the SPA lift: no line %q\n%s", l, text)
				}
			}
		})
	}
}

// TestIntegrationDecoyReload: SIGHUP with a new [[decoy]] port and a new [alert] url: the new
// port listens (a handshake bans, its webhook goes to the new url only, a spoofed SYN to it
// alerts as a SYN-only touch: the capture filter followed), the removed port is closed, and a
// ban made before the reload stays.
func TestIntegrationDecoyReload(t *testing.T) {
	t.Parallel() // mostly waiting for timeouts: paired with another at the end of the run (doc.go)
	const newDecoy = 2424
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			svc := listen(t, bed, fam)
			extra, err := bed.AddClientAddrs(context.Background(), 3, true)
			if err != nil {
				t.Fatal(err)
			}
			before, after, never := pick(extra, 0, fam), pick(extra, 1, fam), pick(extra, 2, fam)
			h1, h2 := startHook(t, bed, fam.server), startHook(t, bed, fam.server)
			k := newSPAKeys(t)
			sock := operatorSocket(t)
			cfg := decoyConfig(t, k, never, h1.url, "")
			d, path := startSesame(t, bed, cfg, "--control-socket", sock)
			ctl := func(args ...string) string {
				t.Helper()
				out, err := sesameCtl(sock, nil, args...)
				if err != nil {
					t.Fatalf("sesame %v: %v\n%s\ndaemon:\n%s", args, err, out, d.Output())
				}
				return out
			}
			visitDecoy(t, bed, before, fam.server, "before")
			if !waitFor(5*time.Second, func() bool { return h1.find("decoy_connect", before) != nil }) {
				t.Fatalf("no webhook before the reload; daemon:\n%s", d.Output())
			}

			next := strings.Replace(cfg, fmt.Sprintf(`ports = ["tcp/%d", "udp/%d"]`, decoyPort, udpDecoyPort), fmt.Sprintf(`ports = ["tcp/%d"]`, newDecoy), 1)
			next = strings.Replace(next, fmt.Sprintf("url = %q", h1.url), fmt.Sprintf("url = %q", h2.url), 1)
			if next == cfg || strings.Count(next, h2.url) != 1 {
				t.Fatal("the test's config rewrite did not apply")
			}
			next = strings.ReplaceAll(next, "STATE_DIR", filepath.Dir(path))
			if err := os.WriteFile(path, []byte(next), 0o600); err != nil {
				t.Fatal(err)
			}
			d.Cmd.Process.Signal(syscall.SIGHUP)
			if !d.WaitOutput("configuration reloaded", 5*time.Second) {
				t.Fatalf("no reload; daemon:\n%s", d.Output())
			}
			if c, err := netnsbed.Dial(bed.Client, after, netip.AddrPortFrom(fam.server, decoyPort), time.Second); err == nil {
				c.Close()
				t.Errorf("the removed decoy port tcp/%d still accepts", decoyPort)
			}
			// A spoofed SYN to the new port (the real client's address, which resets the SYN-ACK).
			sendSpoofedSYN(t, bed, fam.client, fam.server, newDecoy)
			c, err := netnsbed.Dial(bed.Client, after, netip.AddrPortFrom(fam.server, newDecoy), 2*time.Second)
			if err != nil {
				t.Fatalf("the new decoy port: %v; daemon:\n%s", err, d.Output())
			}
			c.SetDeadline(time.Now().Add(3 * time.Second))
			got := make([]byte, len(decoyBanner))
			if _, err := io.ReadFull(c, got); err != nil || string(got) != decoyBanner {
				t.Fatalf("new decoy banner %q, %v", got, err)
			}
			c.Write([]byte("after"))
			c.Close()
			if !waitFor(5*time.Second, func() bool { return h2.find("decoy_connect", after) != nil }) {
				t.Fatalf("no webhook to the new url; daemon:\n%s", d.Output())
			}
			if e := h2.find("decoy_connect", after); !e.Banned || e.Port != fmt.Sprintf("tcp/%d", newDecoy) {
				t.Errorf("webhook %+v", e)
			}
			if !waitFor(8*time.Second, func() bool { return h2.find("decoy_touch", fam.client) != nil }) {
				t.Errorf("no SYN-only touch webhook for the new port; daemon:\n%s", d.Output())
			}
			if h1.count(after) != 0 || h1.count(fam.client) != 0 {
				t.Error("webhooks still go to the old url after the reload")
			}
			st := ctl("status", "--json")
			for _, src := range []netip.Addr{before, after} {
				if banOf(t, st, src) == 0 {
					t.Errorf("%s not banned after the reload:\n%s", src, st)
				}
				knockFrom(t, bed, src, fam.server, seq...)
				if eventually(t, bed, src, svc, true) {
					t.Errorf("banned %s reached the protected port", src)
				}
			}
			if banOf(t, st, fam.client) != 0 {
				t.Errorf("the spoofed SYN banned %s", fam.client)
			}
		})
	}
}

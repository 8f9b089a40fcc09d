//go:build linux

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// operatorMode is one way of running the daemon for TestIntegrationOperator.
type operatorMode struct {
	name string
	// start runs the daemon with its control socket at sock.
	start func(t *testing.T, bed *netnsbed.Bed, sock string) *daemon
	// open earns a grant for src on tcp/2222 the mode's way: a knock or an SPA packet.
	open func(t *testing.T, bed *netnsbed.Bed, src netip.Addr)
	// by and kind are what status says of that grant; opened is a metric line it adds.
	by, kind, opened string
	// native modes set [control] (a read group, max_grant 1h) and [metrics] listen.
	native bool
}

// metricsListen is the [metrics] listener of the native modes, inside the server namespace.
const metricsListen = "127.0.0.1:9741"

// operatorSections are the native modes' [control] and [metrics]: uid/gid 65534 may read,
// only root may change (gid 65533 is an admin group nobody in the test is in).
const operatorSections = `
[control]
group = "65534"
admin_group = "65533"
max_grant = "1h"

[metrics]
listen = "` + metricsListen + `"
`

func nativeMode(fw string) operatorMode {
	return operatorMode{
		name: "native/" + fw,
		start: func(t *testing.T, bed *netnsbed.Bed, sock string) *daemon {
			d, _ := startSesame(t, bed, fmt.Sprintf(doorConfig, fw, "5s", "30s")+operatorSections, "--control-socket", sock)
			return d
		},
		open: knockOpen,
		by:   "ssh", kind: "door", opened: "sesame_knock_opened_total 1", native: true,
	}
}

// knockOpen knocks the door of doorConfig from src.
func knockOpen(t *testing.T, bed *netnsbed.Bed, src netip.Addr) {
	knockFrom(t, bed, src, netnsbed.Server4, seq...)
}

var operatorModes = []operatorMode{
	nativeMode("nftables"),
	nativeMode("iptables"),
	{
		name: "knockd-conf/nftables",
		start: func(t *testing.T, bed *netnsbed.Bed, sock string) *daemon {
			path := filepath.Join(t.TempDir(), "knockd.conf")
			writeSecret(t, path, []byte("[ssh]\nsequence = 7000,8000:udp,9000\nseq_timeout = 5\nopen = tcp/2222\nopen_for = 30\n"))
			return startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--knockd-conf", path,
				"--firewall", "nftables", "--control-socket", sock, "--log-level", "debug")
		},
		open: knockOpen,
		by:   "ssh", kind: "door", opened: "sesame_knock_opened_total 1",
	},
	{
		name: "fwknop-conf/iptables",
		start: func(t *testing.T, bed *netnsbed.Bed, sock string) *daemon {
			// fwknopd's way: the host's own rule closes the port, sesame's chain lets grants in.
			iptables(t, bed.Server, "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP")
			dir := t.TempDir()
			writeSecret(t, filepath.Join(dir, "fwknopd.conf"), fmt.Appendf(nil, "ENABLE_UDP_SERVER Y;\nUDPSERV_PORT %d;\n", spaPort))
			writeSecret(t, filepath.Join(dir, "access.conf"), []byte("SOURCE ANY\nKEY_BASE64 "+fwknopKey+"\nHMAC_KEY_BASE64 "+fwknopHMAC+
				"\nOPEN_PORTS tcp/2222\nFW_ACCESS_TIMEOUT 30\n"))
			return startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "--fwknop-conf", dir,
				"--state-dir", filepath.Join(dir, "state"), "--control-socket", sock, "--log-level", "debug")
		},
		open: func(t *testing.T, bed *netnsbed.Bed, src netip.Addr) {
			fwknopClient(t, bed, "-A", "tcp/2222", "-a", src.String())
		},
		by: "stanza#1", kind: "spa", opened: `sesame_spa_decisions_total{format="fwknop",result="accepted"} 1`,
	},
}

// TestIntegrationOperator: the running daemon's control socket and metrics, through the real
// binary's client commands, for both firewall backends and in --knockd-conf and --fwknop-conf
// modes. sesame status shows the doors or SPA clients and the grant a knock or SPA packet
// earned (source, port, door or client, time left); the metrics (over the socket, and over
// [metrics] listen in the server namespace) count that grant, and promtool accepts them. A
// revoke makes a new connection fail at once while an established one keeps carrying data both
// ways; revoke --kill ends it; revoke --all removes every grant; sesame grant opens a port for
// an address, shows as an operator grant with its note, and is refused above max_grant. A
// caller outside the admin group gets the 403, one outside the read group cannot connect.
func TestIntegrationOperator(t *testing.T) {
	for _, mode := range operatorModes {
		t.Run(mode.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			svc := listen(t, bed, families[0])
			extra, err := bed.AddClientAddrs(context.Background(), 1, false)
			if err != nil {
				t.Fatal(err)
			}
			other, client := extra[0], netnsbed.Client4
			sock := operatorSocket(t)
			d := mode.start(t, bed, sock)
			if !d.WaitOutput("control socket listening", time.Second) {
				t.Fatalf("no control socket line:\n%s", d.Output())
			}
			ctl := func(args ...string) string {
				t.Helper()
				out, err := sesameCtl(sock, nil, args...)
				if err != nil {
					t.Fatalf("sesame %v: %v\n%s\ndaemon:\n%s", args, err, out, d.Output())
				}
				return out
			}
			if canConnect(t, bed, client, svc) {
				t.Fatal("tcp/2222 open before any knock or SPA packet")
			}
			secondDaemon(t, d, sock)

			// status shows the door or client; the grant a knock or packet earned.
			if out := ctl("status"); !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(mode.by) + `\s`).MatchString(out) {
				t.Errorf("status does not list %s:\n%s", mode.by, out)
			}
			mode.open(t, bed, client)
			if !eventually(t, bed, client, svc, true) {
				t.Fatalf("tcp/2222 not open after the %s; daemon:\n%s", mode.kind, d.Output())
			}
			row := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(client.String()) + `\s+tcp/2222\s+` + regexp.QuoteMeta(mode.by) + `\s+` + mode.kind + `\s+\d+s\b`)
			if out := ctl("status"); !row.MatchString(out) {
				t.Errorf("status has no grant row %v:\n%s", row, out)
			}
			g := statusGrant(t, ctl("status", "--json"), client)
			if g == nil || g.Port != "tcp/2222" || g.By != mode.by || g.Kind != mode.kind || g.RemainingMS <= 0 || g.RemainingMS > 30000 {
				t.Errorf("status --json grant of %s: %+v", client, g)
			}

			// Metrics count the grant, over the socket and [metrics] listen; promtool accepts them.
			scrapes := map[string]string{"socket": scrape(t, unixDialer(sock))}
			if mode.native {
				scrapes["listen"] = scrape(t, nsDialer(bed.Server, metricsListen))
			}
			for where, text := range scrapes {
				for _, want := range []string{fmt.Sprintf("sesame_grants_added_total{name=%q} 1", mode.by), fmt.Sprintf("sesame_grants_active{name=%q} 1", mode.by), mode.opened} {
					if !metricLine(text, want) {
						t.Errorf("metrics over the %s: no line %q", where, want)
					}
				}
				promtoolCheck(t, where, text)
			}

			// A revoke closes the port to new connections at once; an established one goes on.
			held := holdConn(t, bed, client, svc)
			if out := ctl("revoke", client.String(), "tcp/2222"); !strings.Contains(out, "revoked the grant of "+client.String()+" on tcp/2222: 1 grant") {
				t.Errorf("revoke printed %q", out)
			}
			if canConnect(t, bed, client, svc) {
				t.Error("a new connection succeeds right after the revoke")
			}
			if err := held.echo(2 * time.Second); err != nil {
				t.Errorf("the established connection stopped carrying data after a revoke without --kill: %v", err)
			}
			if g := statusGrant(t, ctl("status", "--json"), client); g != nil {
				t.Errorf("status still shows the revoked grant %+v", g)
			}

			// revoke --kill ends the established connections too.
			mode.open(t, bed, client)
			if !eventually(t, bed, client, svc, true) {
				t.Fatal("tcp/2222 not open after the second knock or SPA packet")
			}
			second := holdConn(t, bed, client, svc)
			// Kill at once, while the exchange's last segments may still be in flight: a packet the
			// server sends after the kill (its retransmission of the echo, when the client's
			// delayed ACK was dropped) makes a new conntrack entry from the server's side; the
			// gate drops the client's packets of such an entry, so the connection stays dead.
			out := ctl("revoke", "--kill", client.String(), "tcp/2222")
			if !strings.Contains(out, ": 1 grant\n") || !regexp.MustCompile(`ended [1-9]\d* connections?`).MatchString(out) {
				t.Errorf("revoke --kill printed %q", out)
			}
			for i, c := range []*heldConn{held, second} {
				if err := c.echo(1500 * time.Millisecond); err == nil {
					t.Errorf("connection %d still carries data after revoke --kill", i+1)
				}
			}
			if canConnect(t, bed, client, svc) {
				t.Error("a new connection succeeds after revoke --kill")
			}

			// An operator grant opens the port for that address alone, with its note.
			if out := ctl("grant", other.String(), "tcp/2222", "--for", "5s", "--note", "x"); !strings.Contains(out, "granted "+other.String()+" tcp/2222") {
				t.Errorf("grant printed %q", out)
			}
			if !canConnect(t, bed, other, svc) {
				t.Error("the operator grant does not open tcp/2222")
			}
			if canConnect(t, bed, client, svc) {
				t.Errorf("the operator grant for %s opened tcp/2222 for %s", other, client)
			}
			if g := statusGrant(t, ctl("status", "--json"), other); g == nil || g.Kind != "operator" || g.By != "operator" || g.Note != "x" || g.RemainingMS > 5000 {
				t.Errorf("status --json grant of %s: %+v", other, g)
			}
			opRow := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(other.String()) + `\s+tcp/2222\s+operator\s+operator\s+\S+\s+x$`)
			if out := ctl("status"); !opRow.MatchString(out) {
				t.Errorf("status has no operator row %v:\n%s", opRow, out)
			}

			// Above max_grant: refused, naming the limit.
			limit, tooLong := "1h0m0s", "2h"
			if !mode.native {
				limit, tooLong = "24h0m0s", "25h"
			}
			out, err = sesameCtl(sock, nil, "grant", client.String(), "tcp/2222", "--for", tooLong)
			if err == nil || !strings.Contains(out, "is longer than the maximum grant, "+limit+" ([control] max_grant)") {
				t.Errorf("grant --for %s: %v, %q", tooLong, err, out)
			}

			// revoke --all removes every grant.
			mode.open(t, bed, client)
			if !eventually(t, bed, client, svc, true) {
				t.Fatal("tcp/2222 not open after the third knock or SPA packet")
			}
			if out := ctl("revoke", "--all"); !strings.Contains(out, "revoked every grant: 2 grants") {
				t.Errorf("revoke --all printed %q", out)
			}
			for _, src := range []netip.Addr{client, other} {
				if canConnect(t, bed, src, svc) {
					t.Errorf("tcp/2222 still open for %s after revoke --all", src)
				}
			}

			if mode.native {
				checkNonRoot(t, sock)
			}

			// A clean stop removes the socket.
			d.Stop(syscall.SIGTERM)
			if err := d.Err(); err != nil {
				t.Errorf("the daemon's exit: %v", err)
			}
			if _, err := os.Lstat(sock); !os.IsNotExist(err) {
				t.Errorf("the control socket is still there after the stop: %v", err)
			}
		})
	}
}

// secondDaemon starts the same daemon again, on the same control socket: it refuses to start,
// with the control package's message, and the first one still answers.
func secondDaemon(t *testing.T, d *daemon, sock string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.Cmd.Path, d.Cmd.Args[1:]...).CombinedOutput()
	want := "control: a daemon is already serving " + sock + ": is another sesame server running? Stop it first, or set [control] socket"
	if err == nil || !strings.Contains(string(out), want) || strings.Contains(string(out), `msg="sesame server running"`) {
		t.Errorf("a second daemon on the same socket: %v\n%s\nwant it refused with %q", err, out, want)
	}
	if out, err := sesameCtl(sock, nil, "status"); err != nil {
		t.Errorf("the first daemon stopped answering after the second was refused: %v\n%s", err, out)
	}
}

// checkNonRoot runs the client as uid 65534: in the read group (gid 65534) it reads and gets the
// daemon's 403 on a change; outside it, it cannot open the socket.
func checkNonRoot(t *testing.T, sock string) {
	t.Helper()
	// The test's binary is in a directory only root may enter: run a copy from the socket's.
	bin := filepath.Join(filepath.Dir(sock), "sesame")
	data, err := os.ReadFile(sesameBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	reader := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
	if out, err := sesameCtlBin(bin, sock, reader, "status"); err != nil || !strings.Contains(strings.ToLower(out), "live grants") {
		t.Errorf("status as uid 65534 in the read group: %v\n%s", err, out)
	}
	out, err := sesameCtlBin(bin, sock, reader, "revoke", "--all")
	if err == nil || !strings.Contains(out, "changing needs root or group 65533") {
		t.Errorf("revoke as uid 65534 outside the admin group: %v, %q", err, out)
	}
	outsider := &syscall.Credential{Uid: 65534, Gid: 65533, Groups: []uint32{}}
	out, err = sesameCtlBin(bin, sock, outsider, "status")
	if err == nil || !strings.Contains(out, "no access to "+sock+": reading needs root or membership of group") {
		t.Errorf("status as uid 65534 outside the read group: %v, %q", err, out)
	}
}

// operatorSocket is a socket path in a fresh temporary directory that uid 65534 may traverse.
func operatorSocket(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "control.sock")
}

// sesameCtl runs the real client `sesame ARGS --socket sock`, as cred when set, with a timeout.
func sesameCtl(sock string, cred *syscall.Credential, args ...string) (string, error) {
	return sesameCtlBin(sesameBin, sock, cred, args...)
}

// sesameCtlBin is sesameCtl with the binary at bin.
func sesameCtlBin(bin, sock string, cred *syscall.Credential, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "--socket", sock)...)
	cmd.Dir = filepath.Dir(bin)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// grantJSON is a grant of GET /v1/status.
type grantJSON struct {
	Src         string `json:"src"`
	Port        string `json:"port"`
	RemainingMS int64  `json:"remaining_ms"`
	By          string `json:"by"`
	Kind        string `json:"kind"`
	Note        string `json:"note"`
}

// statusGrant returns src's grant in the output of sesame status --json, nil when it has none.
func statusGrant(t *testing.T, out string, src netip.Addr) *grantJSON {
	t.Helper()
	var st struct {
		Grants []grantJSON `json:"grants"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, g := range st.Grants {
		if g.Src == src.String() {
			return &g
		}
	}
	return nil
}

type dialer func(ctx context.Context) (net.Conn, error)

func unixDialer(sock string) dialer {
	return func(ctx context.Context) (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, "unix", sock) }
}

// nsDialer dials addr over TCP from inside namespace ns.
func nsDialer(ns, addr string) dialer {
	return func(context.Context) (net.Conn, error) {
		var c net.Conn
		err := netnsbed.Do(ns, func() error {
			var err error
			c, err = net.DialTimeout("tcp", addr, 2*time.Second)
			return err
		})
		return c, err
	}
}

// scrape GETs /metrics through dial and returns the body.
func scrape(t *testing.T, dial dialer) string {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) }}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := cl.Get("http://sesame/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s, %v\n%s", resp.Status, err, body)
	}
	return string(body)
}

func metricLine(text, line string) bool {
	return strings.Contains("\n"+text, "\n"+line+"\n")
}

// promtoolCheck runs the real `promtool check metrics` on a scrape.
func promtoolCheck(t *testing.T, where, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "promtool", "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics (over the %s): %v\n%s", where, err, out)
	}
}

// heldConn is an established connection to a Listen service, proven with data both ways.
type heldConn struct {
	c  net.Conn
	rd *bufio.Reader
}

func holdConn(t *testing.T, bed *netnsbed.Bed, src netip.Addr, dst netip.AddrPort) *heldConn {
	t.Helper()
	c, err := netnsbed.Dial(bed.Client, src, dst, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s from %s: %v", dst, src, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := netnsbed.Exchange(c, time.Now().Add(2*time.Second)); err != nil {
		t.Fatalf("exchange with %s from %s: %v", dst, src, err)
	}
	return &heldConn{c: c, rd: bufio.NewReaderSize(c, netnsbed.MaxLine)}
}

// echo sends a fresh nonce line and reads its echo within timeout.
func (h *heldConn) echo(timeout time.Duration) error {
	nonce, err := netnsbed.Nonce()
	if err != nil {
		return err
	}
	if err := h.c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := io.WriteString(h.c, nonce); err != nil {
		return err
	}
	line, err := h.rd.ReadBytes('\n')
	if err != nil {
		return err
	}
	if !bytes.Equal(line, []byte(nonce)) {
		return fmt.Errorf("echo %q, want %q", line, nonce)
	}
	return nil
}

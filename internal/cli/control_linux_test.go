package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/control"
	"github.com/sesame-knock/sesame/internal/control/controltest"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/server"
)

var (
	ssh   = netport.Port{Proto: netport.TCP, Num: 22}
	addrA = netip.MustParseAddr("198.51.100.7")
	addrB = netip.MustParseAddr("2001:db8::7")
)

func richStatus() server.Status {
	return server.Status{
		Version:  "v1.4.0",
		Started:  time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC),
		Uptime:   server.MillisOf(3*time.Hour + 12*time.Minute + 5*time.Second),
		Firewall: "nftables",
		Config:   "/etc/sesame/sesame.toml",
		Doors: []server.DoorStatus{
			{Name: "ssh", Sequence: []string{"7000/tcp", "8000/udp", "9000/tcp"}, Open: []string{"tcp/22"}, OpenFor: 30000, Opened: 12},
			{Name: "backup", Sequence: []string{"7100/tcp", "7200/tcp"}, OpenFor: 10000, Commands: true, Opened: 0},
		},
		SPA: &server.SPAStatus{Listen: "udp/62201", Clients: []server.SPAClientStatus{
			{Name: "alice", Format: "native", Accepted: 4, Refused: 1},
			{Name: "bob@fwknop", Format: "fwknop", Accepted: 0, Refused: 0},
		}},
		InProgress: 2,
		Bans:       []server.BanStatus{{Src: netip.MustParseAddr("192.0.2.66"), Remaining: 50000, Reason: "decoy"}},
	}
}

// serveFake serves core on a control socket in a temporary directory until the test ends.
func serveFake(t *testing.T, core control.Core, maxGrant time.Duration) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	s, err := control.Open(control.Config{Socket: path, Group: strconv.Itoa(os.Getgid()), MaxGrant: maxGrant}, core, control.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return path
}

func TestStatusCommand(t *testing.T) {
	core := &controltest.Core{St: richStatus(), Live: []server.GrantStatus{
		{Src: addrA, Port: ssh, Remaining: 25400, By: "ssh", Kind: server.GrantDoor},
		{Src: addrB, Port: netport.Port{Proto: netport.UDP, Num: 53}, Remaining: 3598000, By: "alice", Kind: server.GrantSPA},
		{Src: netip.MustParseAddr("203.0.113.9"), Port: ssh, Remaining: 90061000, By: "operator", Kind: server.GrantOperator, Note: "INC-42, key lost"},
		{Src: netip.MustParseAddr("203.0.113.10"), Port: ssh, Remaining: 400, Kind: server.GrantKernel},
	}}
	path := serveFake(t, core, 0)
	code, out, errOut := run("status", "--socket", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := `sesame v1.4.0, up 3h12m5s, firewall nftables, config /etc/sesame/sesame.toml

DOOR    SEQUENCE                    OPENS     FOR  OPENED
ssh     7000/tcp 8000/udp 9000/tcp  tcp/22    30s  12
backup  7100/tcp 7200/tcp           commands  10s  0

SPA on udp/62201
CLIENT      FORMAT  ACCEPTED  REFUSED
alice       native  4         1
bob@fwknop  fwknop  0         0

Sources in the middle of a sequence: 2

Live grants: 4
SOURCE        PORT    BY        KIND      LEFT      NOTE
198.51.100.7  tcp/22  ssh       door      25s
2001:db8::7   udp/53  alice     spa       59m58s
203.0.113.9   tcp/22  operator  operator  1d1h1m1s  INC-42, key lost
203.0.113.10  tcp/22  -         kernel    <1s

Bans: 1
SOURCE      LEFT  REASON
192.0.2.66  50s   decoy
`
	if out != want {
		t.Errorf("status output:\n%s\nwant:\n%s", out, want)
	}

	// --json prints the API's answer: it decodes to what the core said.
	code, out, errOut = run("status", "--json", "--socket="+path)
	if code != 0 {
		t.Fatalf("--json: exit %d: %s", code, errOut)
	}
	var got server.Status
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json output is not JSON: %v\n%s", err, out)
	}
	wantSt, _ := core.Status(context.Background())
	if !reflect.DeepEqual(got, wantSt) {
		t.Errorf("--json decodes to\n%+v\nwant\n%+v", got, wantSt)
	}
	for _, s := range []string{`"uptime_ms": 11525000`, `"sources_in_progress": 2`, `"remaining_ms": 25400`} {
		if !strings.Contains(out, s) {
			t.Errorf("--json output lacks %s:\n%s", s, out)
		}
	}
}

func TestStatusCommandEmpty(t *testing.T) {
	path := serveFake(t, &controltest.Core{St: server.Status{Version: "v1", Uptime: 500, Firewall: "none"}}, 0)
	code, out, errOut := run("status", "--socket", path)
	want := "sesame v1, up <1s, firewall none\n\nSources in the middle of a sequence: 0\n\nNo live grants.\n"
	if code != 0 || out != want {
		t.Errorf("exit %d, stderr %q, output:\n%s\nwant:\n%s", code, errOut, out, want)
	}
}

func TestGrantRevokeCommands(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		code    int
		out     string // whole stdout
		err     string // in stderr
		granted *server.GrantRequest
		revoked *server.RevokeRequest
	}{
		{name: "grant", args: []string{"grant", "203.0.113.9", "tcp/22", "--for", "30m", "--note", "INC-42, key lost"}, out: "granted 203.0.113.9 tcp/22 for 30m (note: INC-42, key lost)\n",
			granted: &server.GrantRequest{Src: netip.MustParseAddr("203.0.113.9"), Port: ssh, For: 1800000, Note: "INC-42, key lost"}},
		{name: "grant flags first", args: []string{"grant", "--for=90s", "2001:db8::9", "udp/53"}, out: "granted 2001:db8::9 udp/53 for 1m30s\n",
			granted: &server.GrantRequest{Src: netip.MustParseAddr("2001:db8::9"), Port: netport.Port{Proto: netport.UDP, Num: 53}, For: 90000}},
		{name: "grant above max", args: []string{"grant", "203.0.113.9", "tcp/22", "--for", "2h"}, code: 1,
			err: "sesame grant: --for: 2h0m0s is longer than the maximum grant, 1h0m0s ([control] max_grant)\n"},
		{name: "grant without for", args: []string{"grant", "203.0.113.9", "tcp/22"}, code: 2, err: "--for DURATION is required"},
		{name: "grant bad duration", args: []string{"grant", "203.0.113.9", "tcp/22", "--for", "soon"}, code: 2, err: `invalid value "soon" for flag -for`},
		{name: "grant negative", args: []string{"grant", "203.0.113.9", "tcp/22", "--for", "-5m"}, code: 2, err: "must be at least 1ms"},
		{name: "grant host name", args: []string{"grant", "example.org", "tcp/22", "--for", "5m"}, code: 2, err: `"example.org" is not an IP address`},
		{name: "grant bad port", args: []string{"grant", "203.0.113.9", "22", "--for", "5m"}, code: 2, err: "want PROTO/PORT"},
		{name: "grant no port", args: []string{"grant", "203.0.113.9", "--for", "5m"}, code: 2, err: "want ADDR and PROTO/PORT"},
		{name: "grant long note", args: []string{"grant", "203.0.113.9", "tcp/22", "--for", "5m", "--note", strings.Repeat("x", 300)}, code: 2, err: "--note: longer than 256 bytes"},
		{name: "grant note newline", args: []string{"grant", "203.0.113.9", "tcp/22", "--for", "5m", "--note", "a\nb"}, code: 1, err: "note: a control character at byte 1"},

		{name: "revoke one", args: []string{"revoke", "198.51.100.7", "tcp/22"}, out: "revoked the grant of 198.51.100.7 on tcp/22: 1 grant\n",
			revoked: &server.RevokeRequest{Src: addrA, Port: ssh}},
		{name: "revoke source kill", args: []string{"revoke", "198.51.100.7", "--kill"}, out: "revoked the grants of 198.51.100.7: 2 grants\nended 6 connections\n",
			revoked: &server.RevokeRequest{Src: addrA, Kill: true}},
		{name: "revoke all", args: []string{"revoke", "--all"}, out: "revoked every grant: 3 grants\n", revoked: &server.RevokeRequest{All: true}},
		{name: "revoke nothing", args: []string{"revoke", "192.0.2.1"}, out: "nothing to revoke: no live grant matches the grants of 192.0.2.1\n",
			revoked: &server.RevokeRequest{Src: netip.MustParseAddr("192.0.2.1")}},
		{name: "revoke mapped", args: []string{"revoke", "::ffff:198.51.100.7", "udp/53"}, out: "revoked the grant of 198.51.100.7 on udp/53: 1 grant\n",
			revoked: &server.RevokeRequest{Src: addrA, Port: netport.Port{Proto: netport.UDP, Num: 53}}},
		{name: "revoke all with address", args: []string{"revoke", "--all", "198.51.100.7"}, code: 2, err: "--all revokes every grant; it takes no address or port"},
		{name: "revoke no address", args: []string{"revoke"}, code: 2, err: "missing ADDR (or --all)\n(see 'sesame revoke -h')"},
		{name: "revoke bad address", args: []string{"revoke", "198.51.100"}, code: 2, err: `"198.51.100" is not an IP address`},
		{name: "revoke bad port", args: []string{"revoke", "198.51.100.7", "tcp/99999"}, code: 2, err: "out of range"},
		{name: "revoke extra", args: []string{"revoke", "198.51.100.7", "tcp/22", "x"}, code: 2, err: `unexpected argument "x"`},
		{name: "revoke unknown flag", args: []string{"revoke", "--force"}, code: 2, err: "flag provided but not defined: -force"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			core := &controltest.Core{Killed: 3, Live: []server.GrantStatus{
				{Src: addrA, Port: ssh}, {Src: addrA, Port: netport.Port{Proto: netport.UDP, Num: 53}}, {Src: addrB, Port: ssh},
			}}
			path := serveFake(t, core, time.Hour)
			code, out, errOut := run(append(tc.args, "--socket", path)...)
			if code != tc.code || out != tc.out || !strings.Contains(errOut, tc.err) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, stderr with %q", code, out, errOut, tc.code, tc.out, tc.err)
			}
			if tc.granted != nil {
				if len(core.Granted) != 1 || !reflect.DeepEqual(core.Granted[0], *tc.granted) {
					t.Errorf("grants %+v, want %+v", core.Granted, *tc.granted)
				}
			} else if len(core.Granted) != 0 {
				t.Errorf("unexpected grants %+v", core.Granted)
			}
			if tc.revoked != nil {
				if len(core.Revoked) != 1 || !reflect.DeepEqual(core.Revoked[0], *tc.revoked) {
					t.Errorf("revokes %+v, want %+v", core.Revoked, *tc.revoked)
				}
			} else if len(core.Revoked) != 0 {
				t.Errorf("unexpected revokes %+v", core.Revoked)
			}
		})
	}
}

func TestControlCommandsNoDaemon(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	missing := filepath.Join(dir, "none.sock")
	for _, args := range [][]string{{"status"}, {"status", "--json"}, {"grant", "192.0.2.1", "tcp/22", "--for", "1m"}, {"revoke", "--all"}} {
		for _, c := range []struct{ path, why string }{{stale, "connection refused"}, {missing, "no such socket"}} {
			code, out, errOut := run(append(args, "--socket", c.path)...)
			want := fmt.Sprintf("sesame %s: no sesame daemon at %s: is it running? (%s)\n", args[0], c.path, c.why)
			if code != 1 || out != "" || errOut != want {
				t.Errorf("%v at %s: exit %d, stdout %q, stderr %q; want 1 and %q", args, c.path, code, out, errOut, want)
			}
		}
	}
}

// TestControlCommandsRefused checks that a daemon's refusal reaches the user as its message.
// (The rights themselves are tested in internal/control, with clients of other uids.)
func TestControlCommandsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "refusing.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"error":"changing needs root or group sesame-admin"}`+"\n")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	for _, args := range [][]string{{"grant", "192.0.2.1", "tcp/22", "--for", "1m"}, {"revoke", "--all"}} {
		code, _, errOut := run(append(args, "--socket", path)...)
		if want := "sesame " + args[0] + ": changing needs root or group sesame-admin\n"; code != 1 || errOut != want {
			t.Errorf("%v: exit %d, stderr %q; want 1 and %q", args, code, errOut, want)
		}
	}
}

// TestHelpPrintedOnce checks that -h prints a command's help once, and a bad flag only the
// error.
func TestHelpPrintedOnce(t *testing.T) {
	for _, cmd := range []string{"status", "grant", "revoke", "keygen"} {
		code, out, _ := run(cmd, "-h")
		if code != 0 || strings.Count(out, "Examples:") != 1 || !strings.Contains(out, "Options:") {
			t.Errorf("%s -h: exit %d, %d help texts:\n%s", cmd, code, strings.Count(out, "Examples:"), out)
		}
		code, out, errOut := run(cmd, "--no-such-flag")
		if want := "sesame " + cmd + ": flag provided but not defined: -no-such-flag\n(see 'sesame " + cmd + " -h')\n"; code != 2 || out != "" || errOut != want {
			t.Errorf("%s --no-such-flag: exit %d, stdout %q, stderr %q; want 2, nothing, %q", cmd, code, out, errOut, want)
		}
	}
}

func TestHuman(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", -time.Second: "0s", 400 * time.Millisecond: "<1s", time.Second: "1s", 1500 * time.Millisecond: "2s",
		90 * time.Second: "1m30s", time.Hour: "1h", 25*time.Hour + 61*time.Second: "1d1h1m1s", 48 * time.Hour: "2d",
	} {
		if got := human(d); got != want {
			t.Errorf("human(%v) = %q, want %q", d, got, want)
		}
	}
}

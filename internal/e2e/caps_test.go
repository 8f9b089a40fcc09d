//go:build linux

package e2e

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/spa"
)

// nobody is the unprivileged user the daemon runs as in these tests, as User=sesame does in
// dist/sesame.service.
const nobody = 65534

// userDir is a directory owned by nobody (mode 0700) holding a copy of the binary, the
// configuration, the state directory and the notification socket, removed when the test ends.
func userDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sesame-caps-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(sesameBin)
	if err != nil {
		t.Fatal(err)
	}
	writeOwned(t, filepath.Join(dir, "sesame"), bin, 0o755)
	return dir
}

// writeOwned writes a file owned by nobody.
func writeOwned(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, nobody, nobody); err != nil {
		t.Fatal(err)
	}
}

// startAs runs dir/sesame with args in the bed's server namespace as nobody, holding only caps
// (like "+net_admin,+net_raw") in its inheritable, ambient and bounding sets, with no_new_privs
// set: what dist/sesame.service's User=, AmbientCapabilities=, CapabilityBoundingSet= and
// NoNewPrivileges= give it. env is set for the daemon (env(1) execs it: same process).
func startAs(t *testing.T, bed *netnsbed.Bed, dir, caps, ready string, env []string, args ...string) *daemon {
	t.Helper()
	return startDaemon(t, bed.Server, ready, "setpriv", setprivArgs(dir, caps, env, args...)...)
}

// setprivArgs are the arguments of setpriv(1) that run dir/sesame with args as startAs does.
func setprivArgs(dir, caps string, env []string, args ...string) []string {
	argv := []string{fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody), "--clear-groups",
		"--inh-caps=-all," + caps, "--ambient-caps=-all," + caps, "--bounding-set=-all," + caps, "--no-new-privs",
		"env"}
	argv = append(argv, env...)
	argv = append(argv, filepath.Join(dir, "sesame"))
	if len(args) > 0 && args[0] == "server" && !slices.Contains(args, "--check") && !slices.Contains(args, "--control-socket") {
		// The control socket in the user's directory: /run/sesame is the unit's RuntimeDirectory,
		// which only systemd makes for the service user.
		args = append(slices.Clone(args), "--control-socket", filepath.Join(dir, "control.sock"))
	}
	return append(argv, args...)
}

// notifySocket is a stand-in for systemd's notification socket: it collects every datagram.
type notifySocket struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func newNotifySocket(t *testing.T, dir string) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(dir, "notify")}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(n.path, 0o666); err != nil { // nobody connects
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { c.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	return n
}

// count returns how many messages so far start with prefix.
func (n *notifySocket) count(prefix string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := 0
	for _, m := range n.msgs {
		if strings.HasPrefix(m, prefix) {
			c++
		}
	}
	return c
}

func (n *notifySocket) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// capsConf: a knock door opening tcp/2222 that also runs a command writing to a file, a door
// whose command is iptables (as knockd.conf doors often are), and SPA with a shared key.
const capsConf = `[server]
state_dir = "DIR/state"

[[door]]
name = "ssh"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
open = ["tcp/2222"]
open_for = "30s"
command = "echo open %IP% >> DIR/events"

[[door]]
name = "ipt"
sequence = ["7100/tcp", "8100/udp", "9100/tcp"]
command = "iptables -I INPUT -s %IP% -p tcp --dport 2223 -j ACCEPT"
stop_command = "iptables -D INPUT -s %IP% -p tcp --dport 2223 -j ACCEPT"
cmd_timeout = "1h"

[spa]
listen = "udp/62201"

[[spa.client]]
name = "alice"
key_file = "DIR/alice.key"
open = ["tcp/2222"]
sources = ["198.18.0.0/16"]
`

// TestIntegrationUnprivilegedDaemon: run as nobody with only CAP_NET_ADMIN and CAP_NET_RAW
// (and no_new_privs), the daemon puts its gate in the kernel before it tells systemd READY=1,
// opens the gate for a knock and for a native SPA packet, runs a door's command that writes a
// file and one that runs iptables (inheriting the ambient capabilities), reloads on SIGHUP
// between RELOADING=1 (with MONOTONIC_USEC) and READY=1, pings the watchdog, keeps its replay
// cache in a state directory owned by that user, says READY=1 after a failed reload too, and
// says STOPPING=1 on SIGTERM, running the pending iptables stop command.
func TestIntegrationUnprivilegedDaemon(t *testing.T) {
	bed := skipUnlessRoot(t)
	svc := listen(t, bed, families[0])
	dir := userDir(t)
	key, err := spa.GenerateSharedKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := key.MarshalText()
	writeOwned(t, filepath.Join(dir, "alice.key"), text, 0o600)
	conf := filepath.Join(dir, "sesame.toml")
	writeOwned(t, conf, []byte(strings.ReplaceAll(capsConf, "DIR", dir)), 0o600)
	notify := newNotifySocket(t, dir)

	d := startAs(t, bed, dir, "+net_admin,+net_raw", "", []string{"NOTIFY_SOCKET=" + notify.path, "WATCHDOG_USEC=400000"},
		"server", "-c", conf)
	if !waitFor(10*time.Second, func() bool { return notify.count("READY=1") == 1 }) {
		t.Fatalf("no READY=1 in 10 s; notifications %q; output:\n%s", notify.all(), d.Output())
	}
	// READY=1 came after the gate was in the kernel: it is there now, dropping tcp/2222.
	if out := nft(t, bed.Server, "list", "table", "inet", "sesame"); !strings.Contains(out, "2222") {
		t.Fatalf("READY=1 but the gate does not protect tcp/2222:\n%s", out)
	}
	if canConnect(t, bed, netnsbed.Client4, svc) {
		t.Fatal("protected port open before any knock")
	}
	if strings.Contains(d.Output(), "the server needs") {
		t.Errorf("warned about missing capabilities while holding both:\n%s", d.Output())
	}

	// A knock opens the port and runs the door's command as nobody.
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, "7000/tcp", "8000/udp", "9000/tcp")
	if !eventually(t, bed, netnsbed.Client4, svc, true) {
		t.Fatalf("port not open after the knock; output:\n%s", d.Output())
	}
	events := filepath.Join(dir, "events")
	if !waitFor(2*time.Second, func() bool {
		b, _ := os.ReadFile(events)
		return strings.Contains(string(b), "open "+netnsbed.Client4.String())
	}) {
		t.Errorf("the door's command did not write %s", events)
	}
	// The control socket works for the unprivileged daemon: status (as root, the socket's
	// owner's group being root's) lists the door and the grant the knock earned.
	out, err := sesameCtl(filepath.Join(dir, "control.sock"), nil, "status")
	if err != nil {
		t.Fatalf("sesame status: %v\n%s\ndaemon:\n%s", err, out, d.Output())
	}
	if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(netnsbed.Client4.String()) + `\s+tcp/2222\s+ssh\s+door\s`).MatchString(out) {
		t.Errorf("status of the unprivileged daemon has no grant row for the knock:\n%s", out)
	}
	// The iptables door: iptables, run by the door's command, holds the ambient capabilities.
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, "7100/tcp", "8100/udp", "9100/tcp")
	rule := []string{"-C", "INPUT", "-s", netnsbed.Client4.String(), "-p", "tcp", "--dport", "2223", "-j", "ACCEPT"}
	hasRule := func() bool { return netnsbed.Command(t.Context(), bed.Server, "iptables", rule...).Run() == nil }
	if !waitFor(3*time.Second, hasRule) {
		t.Errorf("the iptables command of a door did not add its rule; output:\n%s", d.Output())
	}

	// Native SPA from another address.
	extra, err := bed.AddClientAddrs(t.Context(), 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if canConnect(t, bed, extra[0], svc) {
		t.Fatal("port open for an address that sent nothing")
	}
	pkt := seal(t, spa.ClientCredential{ID: "alice", Shared: &key}, spa.Request{}, time.Now())
	sendUDP(t, bed, extra[0], netip.AddrPortFrom(netnsbed.Server4, spaPort), pkt)
	if !eventually(t, bed, extra[0], svc, true) {
		t.Fatalf("port not open after a valid SPA packet; output:\n%s", d.Output())
	}
	// The replay cache lives in the state directory, owned by the daemon's user.
	if fi, err := os.Stat(filepath.Join(dir, "state", "replay.db")); err != nil {
		t.Error(err)
	} else if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody {
		t.Errorf("replay.db owned by uid %d, want %d", st.Uid, nobody)
	}

	// The watchdog: WATCHDOG_USEC=400000 asks for a ping every 200 ms.
	if !waitFor(3*time.Second, func() bool { return notify.count("WATCHDOG=1") >= 3 }) {
		t.Errorf("fewer than 3 watchdog pings; notifications %q", notify.all())
	}

	// SIGHUP with a new protected port: RELOADING=1 and MONOTONIC_USEC, then READY=1 again.
	writeOwned(t, conf, []byte(strings.ReplaceAll(strings.Replace(capsConf, `open = ["tcp/2222"]`, `open = ["tcp/2222", "tcp/2224"]`, 1), "DIR", dir)), 0o600)
	d.Cmd.Process.Signal(syscall.SIGHUP)
	if !waitFor(5*time.Second, func() bool { return notify.count("READY=1") == 2 }) {
		t.Fatalf("no second READY=1 after SIGHUP; notifications %q; output:\n%s", notify.all(), d.Output())
	}
	var reloading string
	for _, m := range notify.all() {
		if strings.HasPrefix(m, "RELOADING=1") {
			reloading = m
		}
	}
	if !strings.HasPrefix(reloading, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Errorf("reload notification %q, want RELOADING=1 and MONOTONIC_USEC", reloading)
	}
	if out := nft(t, bed.Server, "list", "table", "inet", "sesame"); !strings.Contains(out, "2224") {
		t.Errorf("after the reload the gate does not protect tcp/2224:\n%s", out)
	}

	// A reload that fails (a broken file) keeps the running configuration and still ends
	// with READY=1: systemd must not wait for it.
	writeOwned(t, conf, []byte("[[door]]\nname = \"broken\"\n"), 0o600)
	d.Cmd.Process.Signal(syscall.SIGHUP)
	if !waitFor(5*time.Second, func() bool { return notify.count("READY=1") == 3 }) {
		t.Fatalf("no READY=1 after a failed reload; notifications %q; output:\n%s", notify.all(), d.Output())
	}
	if notify.count("RELOADING=1") != 2 || !strings.Contains(d.Output(), "reload failed") {
		t.Errorf("the broken reload: notifications %q; output:\n%s", notify.all(), d.Output())
	}

	// SIGTERM: STOPPING=1, a clean exit, and the iptables door's pending stop command ran.
	d.Stop(syscall.SIGTERM)
	if err := d.Err(); err != nil {
		t.Errorf("exit after SIGTERM: %v; output:\n%s", err, d.Output())
	}
	if notify.count("STOPPING=1") != 1 {
		t.Errorf("notifications %q, want one STOPPING=1", notify.all())
	}
	if hasRule() {
		t.Error("the iptables stop command did not remove its rule at shutdown")
	}
}

// capsKnockdConf is a knockd.conf whose doors only run commands: one writes a file, one runs
// iptables, as knockd users' configurations do.
const capsKnockdConf = `[options]
	logfile = DIR/knockd.log

[files]
	sequence      = 7000,8000:udp,9000
	seq_timeout   = 10
	start_command = echo start %IP% >> DIR/events

[iptables]
	sequence      = 7100,8100:udp,9100
	seq_timeout   = 10
	start_command = /usr/sbin/iptables -A INPUT -s %IP% -p tcp --dport 2223 -j ACCEPT
`

// TestIntegrationUnprivilegedKnockdConf: a knockd.conf run unchanged by the unprivileged daemon
// (only CAP_NET_ADMIN and CAP_NET_RAW, no_new_privs): its start commands run, and the one that
// calls iptables changes the firewall.
func TestIntegrationUnprivilegedKnockdConf(t *testing.T) {
	bed := skipUnlessRoot(t)
	dir := userDir(t)
	conf := filepath.Join(dir, "knockd.conf")
	writeOwned(t, conf, []byte(strings.ReplaceAll(capsKnockdConf, "DIR", dir)), 0o600)
	d := startAs(t, bed, dir, "+net_admin,+net_raw", "sesame server running", nil, "server", "--knockd-conf", conf)
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, "7000/tcp", "8000/udp", "9000/tcp")
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, "7100/tcp", "8100/udp", "9100/tcp")
	events := filepath.Join(dir, "events")
	if !waitFor(3*time.Second, func() bool {
		b, _ := os.ReadFile(events)
		return strings.Contains(string(b), "start "+netnsbed.Client4.String())
	}) {
		t.Errorf("the start_command did not write %s; output:\n%s", events, d.Output())
	}
	rule := []string{"-C", "INPUT", "-s", netnsbed.Client4.String(), "-p", "tcp", "--dport", "2223", "-j", "ACCEPT"}
	if !waitFor(3*time.Second, func() bool { return netnsbed.Command(t.Context(), bed.Server, "iptables", rule...).Run() == nil }) {
		t.Errorf("the iptables start_command did not add its rule; output:\n%s", d.Output())
	}
}

// TestIntegrationMissingCapability: started with one of its two capabilities, the daemon exits
// with an error naming the missing one; asked for an SPA port below 1024, which the unit does
// not grant CAP_NET_BIND_SERVICE for, it names that.
func TestIntegrationMissingCapability(t *testing.T) {
	cases := []struct {
		name, caps, firewall string
		spaPort              int
		want                 []string
	}{
		{"no CAP_NET_RAW", "+net_admin", "nftables", 0,
			[]string{"missing=CAP_NET_RAW", "open packet capture: capture: open: packet socket: operation not permitted: needs CAP_NET_RAW"}},
		{"no CAP_NET_ADMIN/nftables", "+net_raw", "nftables", 0,
			[]string{"missing=CAP_NET_ADMIN", "operation not permitted: needs CAP_NET_ADMIN"}},
		{"no CAP_NET_ADMIN/iptables", "+net_raw", "iptables", 0,
			[]string{"missing=CAP_NET_ADMIN", "firewall ipt: ipset: operation not permitted: needs CAP_NET_ADMIN"}},
		{"spa port 500", "+net_admin,+net_raw", "nftables", 500,
			[]string{"udpintake: listen on udp/500: listen udp4 0.0.0.0:500: bind: permission denied: needs CAP_NET_BIND_SERVICE"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bed := skipUnlessRoot(t)
			dir := userDir(t)
			// stealth = "off": with a stealth gate the SPA port is sniffed and nothing binds it.
			stealth := ""
			if tc.spaPort != 0 {
				stealth = "stealth = \"off\"\n"
			}
			cfg := fmt.Sprintf("[server]\nfirewall = %q\nstate_dir = %q\n"+stealth+"\n[[door]]\nname = \"ssh\"\nsequence = [\"7000/tcp\", \"8000/udp\"]\nopen = [\"tcp/2222\"]\n",
				tc.firewall, filepath.Join(dir, "state"))
			if tc.spaPort != 0 {
				key, err := spa.GenerateSharedKey(rand.Reader)
				if err != nil {
					t.Fatal(err)
				}
				text, _ := key.MarshalText()
				writeOwned(t, filepath.Join(dir, "alice.key"), text, 0o600)
				cfg += fmt.Sprintf("\n[spa]\nlisten = \"udp/%d\"\n\n[[spa.client]]\nname = \"alice\"\nkey_file = %q\nopen = [\"tcp/2222\"]\n",
					tc.spaPort, filepath.Join(dir, "alice.key"))
			}
			conf := filepath.Join(dir, "sesame.toml")
			writeOwned(t, conf, []byte(cfg), 0o600)
			d := startAs(t, bed, dir, tc.caps, "", nil, "server", "-c", conf)
			select {
			case <-d.Done():
			case <-time.After(10 * time.Second):
				t.Fatalf("still running after 10 s without %s; output:\n%s", tc.name, d.Output())
			}
			var exit *exec.ExitError
			if err := d.Err(); err == nil || !errors.As(err, &exit) {
				t.Errorf("exit: %v, want a failure", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(d.Output(), w) {
					t.Errorf("output lacks %q:\n%s", w, d.Output())
				}
			}
			if strings.Contains(d.Output(), "sesame server running") {
				t.Errorf("the server ran:\n%s", d.Output())
			}
		})
	}
}

// unitSyscalls is the set of system calls dist/sesame.service's SystemCallFilter= lines allow:
// the first names an allow list, each later "~" line removes from it; groups (@name) are
// expanded with systemd-analyze syscall-filter.
func unitSyscalls(t *testing.T, tool string) map[string]bool {
	t.Helper()
	unit, err := os.ReadFile(filepath.Join("..", "..", "dist", "sesame.service"))
	if err != nil {
		t.Fatal(err)
	}
	var expand func(name string, depth int) []string
	expand = func(name string, depth int) []string {
		if !strings.HasPrefix(name, "@") {
			return []string{name}
		}
		if depth > 8 {
			t.Fatalf("syscall group %s nests too deep", name)
		}
		out, err := exec.Command(tool, "syscall-filter", "--no-pager", name).Output()
		if err != nil {
			t.Fatalf("systemd-analyze syscall-filter %s: %v", name, err)
		}
		var names []string
		for i, l := range strings.Split(string(out), "\n") {
			l = strings.TrimSpace(l)
			if i == 0 || l == "" || l[0] == '#' {
				continue // the group's own name, blank lines, comments
			}
			names = append(names, expand(l, depth+1)...)
		}
		return names
	}
	allowed := map[string]bool{}
	lines := 0
	for l := range strings.SplitSeq(string(unit), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(l), "SystemCallFilter=")
		if !ok {
			continue
		}
		deny := strings.HasPrefix(v, "~")
		if lines == 0 && deny {
			t.Fatal("the unit's first SystemCallFilter= is a deny list; this check expects an allow list")
		}
		lines++
		for _, name := range strings.Fields(strings.TrimPrefix(v, "~")) {
			for _, sc := range expand(name, 0) {
				if deny {
					delete(allowed, sc)
				} else {
					allowed[sc] = true
				}
			}
		}
	}
	if len(allowed) < 100 {
		t.Fatalf("only %d system calls allowed by the unit's SystemCallFilter= lines", len(allowed))
	}
	return allowed
}

// TestIntegrationSyscallsInUnitFilter: everything the daemon (and the shell and iptables its
// commands run) calls while it starts, opens a door by knock and by SPA, runs a command and its
// stop, reloads, pings the watchdog and stops, is in the unit's SystemCallFilter= (what systemd
// would kill it or fail it for). Traced with strace; the calls setpriv makes before it execs
// the daemon do not count.
func TestIntegrationSyscallsInUnitFilter(t *testing.T) {
	bed := skipUnlessRoot(t)
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatal("systemd-analyze (Debian package systemd) is needed:", err)
	}
	if _, err := exec.LookPath("strace"); err != nil {
		t.Fatal("strace (Debian package strace) is needed:", err)
	}
	allowed := unitSyscalls(t, tool)
	svc := listen(t, bed, families[0])
	dir := userDir(t)
	key, err := spa.GenerateSharedKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := key.MarshalText()
	writeOwned(t, filepath.Join(dir, "alice.key"), text, 0o600)
	conf := filepath.Join(dir, "sesame.toml")
	cfg := strings.ReplaceAll(strings.Replace(capsConf, `cmd_timeout = "1h"`, `cmd_timeout = "1s"`, 1), "DIR", dir)
	writeOwned(t, conf, []byte(cfg), 0o600)
	notify := newNotifySocket(t, dir)
	trace := filepath.Join(t.TempDir(), "strace")
	args := setprivArgs(dir, "+net_admin,+net_raw", []string{"NOTIFY_SOCKET=" + notify.path, "WATCHDOG_USEC=400000"}, "server", "-c", conf)
	d := startDaemon(t, bed.Server, "", "strace", append([]string{"-f", "-qq", "-o", trace, "setpriv"}, args...)...)
	if !waitFor(20*time.Second, func() bool { return notify.count("READY=1") == 1 }) {
		t.Fatalf("no READY=1 in 20 s; output:\n%s", d.Output())
	}
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, "7000/tcp", "8000/udp", "9000/tcp")
	if !eventually(t, bed, netnsbed.Client4, svc, true) {
		t.Fatalf("port not open after the knock; output:\n%s", d.Output())
	}
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, "7100/tcp", "8100/udp", "9100/tcp")
	extra, err := bed.AddClientAddrs(t.Context(), 1, false)
	if err != nil {
		t.Fatal(err)
	}
	sendUDP(t, bed, extra[0], netip.AddrPortFrom(netnsbed.Server4, spaPort), seal(t, spa.ClientCredential{ID: "alice", Shared: &key}, spa.Request{}, time.Now()))
	if !eventually(t, bed, extra[0], svc, true) {
		t.Fatalf("port not open after a valid SPA packet; output:\n%s", d.Output())
	}
	if !waitFor(5*time.Second, func() bool { return strings.Contains(d.Output(), "command=stop") }) {
		t.Errorf("the ipt door's stop command did not run; output:\n%s", d.Output())
	}
	// The daemon is strace's child (setpriv and env exec it): signal it, not strace.
	pid := straceChild(t, d.Cmd.Process.Pid)
	syscall.Kill(pid, syscall.SIGHUP)
	if !waitFor(10*time.Second, func() bool { return notify.count("READY=1") == 2 }) {
		t.Fatalf("no READY=1 after SIGHUP; output:\n%s", d.Output())
	}
	syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-d.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the traced daemon did not stop in 20 s")
	}
	if notify.count("WATCHDOG=1") == 0 || notify.count("STOPPING=1") != 1 {
		t.Errorf("notifications %q, want watchdog pings and STOPPING=1", notify.all())
	}

	out, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	exe := fmt.Sprintf("execve(%q", filepath.Join(dir, "sesame"))
	used := map[string]int{}
	started := false
	for l := range strings.SplitSeq(string(out), "\n") {
		if !started {
			started = strings.Contains(l, exe) && strings.Contains(l, ") = 0")
			continue
		}
		if m := syscallRE.FindStringSubmatch(l); m != nil {
			used[m[1]]++
		}
	}
	if !started || len(used) < 20 {
		t.Fatalf("the trace does not show the daemon's system calls (%d names):\n%.2000s", len(used), out)
	}
	var denied []string
	for sc := range used {
		if !allowed[sc] {
			denied = append(denied, fmt.Sprintf("%s (%d calls)", sc, used[sc]))
		}
	}
	t.Logf("%d distinct system calls, all checked against the unit's filter", len(used))
	if len(denied) > 0 {
		t.Errorf("system calls outside dist/sesame.service's SystemCallFilter=: %v", denied)
	}
}

// syscallRE matches a system call line of strace -f: "PID name(" or "PID <... name resumed>".
var syscallRE = regexp.MustCompile(`^\d+ +(?:<\.\.\. )?([a-z0-9_]+)(?:\(| resumed>)`)

// straceChild is the process strace (pid) started.
func straceChild(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 1 {
		t.Fatalf("strace has children %q, want one", f)
	}
	child, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatal(err)
	}
	return child
}

// TestIntegrationUnprivilegedConfigLayout: the layout docs/INSTALL.md gives for /etc/sesame
// under User=sesame (directory root:sesame 0750, sesame.toml root:sesame 0640, key files
// sesame 0600) passes --check as that user; a key file the group can read is refused.
func TestIntegrationUnprivilegedConfigLayout(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	dir := userDir(t) // holds the binary; the configuration directory is root's
	etc := filepath.Join(dir, "etc")
	clients := filepath.Join(etc, "clients")
	if err := os.MkdirAll(clients, 0o750); err != nil {
		t.Fatal(err)
	}
	key, err := spa.GenerateSharedKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := key.MarshalText()
	keyPath := filepath.Join(clients, "alice.key")
	writeOwned(t, keyPath, text, 0o600)
	conf := filepath.Join(etc, "sesame.toml")
	cfg := fmt.Sprintf("[server]\nstate_dir = %q\n\n[[door]]\nname = \"ssh\"\nsequence = [\"7000/tcp\", \"8000/udp\"]\nopen = [\"tcp/22\"]\n\n"+
		"[spa]\nlisten = \"udp/62201\"\n\n[[spa.client]]\nname = \"alice\"\nkey_file = %q\nopen = [\"tcp/22\"]\n", filepath.Join(dir, "state"), keyPath)
	if err := os.WriteFile(conf, []byte(cfg), 0o640); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{etc, clients, conf} {
		if err := os.Chown(p, 0, nobody); err != nil {
			t.Fatal(err)
		}
	}
	check := func() (string, error) {
		out, err := exec.Command("setpriv", fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody), "--clear-groups",
			filepath.Join(dir, "sesame"), "server", "-c", conf, "--check").CombinedOutput()
		return string(out), err
	}
	if out, err := check(); err != nil || !strings.Contains(out, "ok: 1 door(s)") || !strings.Contains(out, "1 client(s)") {
		t.Fatalf("--check as the service user: %v\n%s", err, out)
	}
	if err := os.Chown(keyPath, 0, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keyPath, 0o640); err != nil {
		t.Fatal(err)
	}
	if out, err := check(); err == nil || !strings.Contains(out, "chmod 600 "+keyPath) {
		t.Errorf("a group-readable key file: %v\n%s", err, out)
	}
}

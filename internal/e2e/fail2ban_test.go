//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/logfmt"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/spa"
)

// fail2banFilter is the filter under test, from the repository.
var fail2banFilter = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "dist", "fail2ban", "filter.d", "sesame.conf")
}()

// f2bDoor is the knock door the fail2ban tests add to the SPA configuration.
const f2bDoor = `
[[door]]
name = "ssh"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
sequence_timeout = "3s"
open = ["tcp/2222"]
open_for = "30s"

[[door]]
name = "slow"
sequence = ["7100/tcp", "7200/tcp"]
min_gap = "1s"
open = ["tcp/2222"]

[[door]]
name = "office"
sequence = ["7300/tcp", "7400/tcp"]
sources = ["10.0.0.0/8"]
open = ["tcp/2222"]
`

// f2bRun is what one run of the scenario left: the daemon's output and who was who.
type f2bRun struct {
	log                  string // stdout and stderr of the daemon
	hostile, legitimate  []netip.Addr
	replayer             netip.Addr // hostile too, but counted in aggressive mode only
	legitimateKnockTypos []netip.Addr
}

// runF2BScenario runs the real sesame in bed with a knock door and SPA, its stderr on a file
// (with JOURNAL_STREAM naming that file when journal is set), and plays it the scenario: a
// scanner sweeps the knock ports with the real nmap (IPv4) and with raw guard-port knocks
// (IPv6); another source sends SPA garbage, truncated, tampered and wrongly keyed packets
// (both families) and replays a legitimate packet; the legitimate client mistypes a knock,
// then knocks right and sends valid SPA packets (both families).
func runF2BScenario(t *testing.T, bed *netnsbed.Bed, extra []netip.Addr, journal bool) f2bRun {
	t.Helper()
	nmap, err := exec.LookPath("nmap")
	if err != nil {
		t.Fatal("nmap is not installed (.ci/deps.sh installs it)")
	}
	k := newSPAKeys(t)
	d := startSesameToFile(t, bed, k, journal)
	output, has := d.output, d.has
	scanner4, scanner6, spam4, spam6 := extra[0], extra[1], extra[2], extra[3]
	srv4 := netip.AddrPortFrom(netnsbed.Server4, spaPort)
	srv6 := netip.AddrPortFrom(netnsbed.Server6, spaPort)
	src := func(a netip.Addr) string { return " src=" + a.String() + " " }

	// The legitimate client: a wrong knock (9000 before 8000), then the sequence, then SPA.
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, "7000/tcp", "9000/tcp")
	if !has(2*time.Second, `msg="knock refused"`, src(netnsbed.Client4), `reason="wrong knock"`) {
		t.Fatalf("no wrong-knock line for the legitimate client:\n%s", output())
	}
	// Too fast for the slow door, and outside the office door's sources.
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, "7100/tcp", "7200/tcp", "7300/tcp")
	for _, reason := range []string{`reason="knock sooner than min_gap"`, `reason="source not allowed"`} {
		if !has(2*time.Second, `msg="knock refused"`, src(netnsbed.Client4), reason) {
			t.Fatalf("no %s line for the legitimate client:\n%s", reason, output())
		}
	}
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, "7000/tcp", "8000/udp", "9000/tcp")
	if !has(2*time.Second, `msg="door opened"`, " src="+netnsbed.Client4.String()) {
		t.Fatalf("the legitimate knock did not open the door:\n%s", output())
	}
	good := seal(t, k.shared(), spa.Request{}, time.Now())
	sendUDP(t, bed, netnsbed.Client4, srv4, good)
	sendUDP(t, bed, netnsbed.Client6, srv6, seal(t, k.shared(), spa.Request{}, time.Now()))
	for _, c := range []netip.Addr{netnsbed.Client4, netnsbed.Client6} {
		if !has(2*time.Second, `msg="spa accepted"`, src(c)) {
			t.Fatalf("no accepted SPA line for %s:\n%s", c, output())
		}
	}

	// The scanners: the real nmap over the first sequence port's neighbours (IPv4), raw
	// knocks on guard ports (IPv6).
	args := []string{"-sS", "-S", scanner4.String(), "-e", bed.ClientIf, "-p", "6990-7010", "-T4", "--max-retries", "0", "-n", "-Pn", netnsbed.Server4.String()}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	out, err := netnsbed.Command(ctx, bed.Client, nmap, args...).CombinedOutput()
	cancel()
	if err != nil {
		t.Fatalf("nmap %v: %v\n%s", args, err, out)
	}
	knockFrom(t, bed, scanner6, netnsbed.Server6, "8001/udp", "8999/tcp")
	const guardLine = `msg="sweep guard: knocks from this source are ignored for a while"`
	for _, s := range []netip.Addr{scanner4, scanner6} {
		if !has(2*time.Second, guardLine, src(s)) {
			t.Fatalf("no sweep guard line for %s:\n%s", s, output())
		}
	}
	// The guard ignores the source from its first guard hit: one line per sweep.
	if n := strings.Count(output(), guardLine+src(scanner4)); n != 1 {
		t.Errorf("the nmap sweep gave %d sweep guard lines, want 1", n)
	}

	// The SPA attacker: garbage, a truncated and a tampered packet, a wrong key (an unknown
	// client), from both families.
	var garbage [200]byte // random bytes: not base64 text, so malformed for fwknop
	rand.Read(garbage[:])
	wrongKey, err := spa.GenerateSharedKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		from netip.Addr
		to   netip.AddrPort
	}{{spam4, srv4}, {spam6, srv6}} {
		tampered := seal(t, k.shared(), spa.Request{}, time.Now())
		tampered[len(tampered)-1] ^= 1
		long := append(seal(t, k.shared(), spa.Request{}, time.Now()), make([]byte, spa.MaxPacketLen)...)
		for _, pkt := range [][]byte{
			garbage[:],
			seal(t, k.shared(), spa.Request{}, time.Now())[:spa.HeaderLen+2],
			tampered,
			seal(t, spa.ClientCredential{ID: "mallory", Shared: &wrongKey}, spa.Request{}, time.Now()),
			long,
		} {
			sendUDP(t, bed, p.from, p.to, pkt)
		}
		for _, reason := range []string{"malformed", "too short", "bad MAC", "unknown client", "too long"} {
			if !has(2*time.Second, `msg="spa refused"`+src(p.from), reasonAttr(reason)) {
				t.Fatalf("no spa refused line with %s for %s:\n%s", reason, p.from, output())
			}
		}
		if !waitFor(2*time.Second, func() bool { return strings.Count(output(), `msg="spa refused"`+src(p.from)) == 5 }) {
			t.Fatalf("not five spa refused lines for %s:\n%s", p.from, output())
		}
	}
	// The scanner also replays the legitimate client's packet from its own address.
	sendUDP(t, bed, scanner4, srv4, good)
	if !has(2*time.Second, `msg="spa refused"`, src(scanner4), "reason=replay") {
		t.Fatalf("no replay line for %s:\n%s", scanner4, output())
	}
	d.stop()
	return f2bRun{
		log:                  output(),
		hostile:              []netip.Addr{scanner4, scanner6, spam4, spam6},
		legitimate:           []netip.Addr{netnsbed.Client4, netnsbed.Client6},
		replayer:             scanner4,
		legitimateKnockTypos: []netip.Addr{netnsbed.Client4},
	}
}

// fileDaemon is the real sesame with its stdout and stderr on a file.
type fileDaemon struct {
	path string
	stop func()
}

func (d *fileDaemon) output() string {
	b, _ := os.ReadFile(d.path)
	return string(b)
}

// has waits up to timeout for a line that contains all of subs.
func (d *fileDaemon) has(timeout time.Duration, subs ...string) bool {
	return waitFor(timeout, func() bool {
		for l := range strings.SplitSeq(d.output(), "\n") {
			if !slices.ContainsFunc(subs, func(s string) bool { return !strings.Contains(l, s) }) {
				return true
			}
		}
		return false
	})
}

// startSesameToFile runs 'sesame server' on k's SPA clients and f2bDoor in bed's server
// namespace, at the default log level, its output on a file; with journal, JOURNAL_STREAM
// names that file as systemd would name the journal's stream. It waits until the server runs
// and stops it when the test ends.
func startSesameToFile(t *testing.T, bed *netnsbed.Bed, k *spaKeys, journal bool) *fileDaemon {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sesame.toml")
	writeSecret(t, cfgPath, []byte(k.config(false, dir)+f2bDoor))
	d := &fileDaemon{path: filepath.Join(dir, "sesame.log")}
	logFile, err := os.OpenFile(d.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	// A control socket of its own: the default one may be another daemon's.
	sock := filepath.Join(shortTempDir(t), "control.sock")
	cmd := netnsbed.Command(context.Background(), bed.Server, sesameBin, "server", "-c", cfgPath, "--control-socket", sock)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "JOURNAL_STREAM=") })
	if journal {
		fi, err := logFile.Stat()
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		cmd.Env = append(cmd.Env, fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	d.stop = func() {
		select {
		case <-done:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(d.stop)
	if !d.has(10*time.Second, "sesame server running") {
		t.Fatalf("sesame did not start; output:\n%s", d.output())
	}
	return d
}

// fail2banRegex runs the real fail2ban-regex on logPath with filter and returns the set of
// addresses it reports, one per match (-o ip).
func fail2banRegex(t *testing.T, logPath, filter string, extra ...string) map[netip.Addr]int {
	t.Helper()
	bin, err := exec.LookPath("fail2ban-regex")
	if err != nil {
		t.Fatal("fail2ban-regex is not installed (.ci/deps.sh installs fail2ban)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	args := append(append([]string{"-o", "ip"}, extra...), logPath, filter)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("fail2ban-regex %v: %v\n%s%s", args, err, stdout.String(), stderr.String())
	}
	got := map[netip.Addr]int{}
	for l := range strings.SplitSeq(strings.TrimSpace(stdout.String()), "\n") {
		a, err := netip.ParseAddr(strings.TrimSpace(l))
		if err != nil {
			t.Fatalf("fail2ban-regex printed %q, not an address; output:\n%s%s", l, stdout.String(), stderr.String())
		}
		got[a]++
	}
	return got
}

// checkBanned compares the addresses fail2ban-regex found with want, exactly.
func checkBanned(t *testing.T, what string, got map[netip.Addr]int, want, never []netip.Addr, log string) {
	t.Helper()
	for _, a := range never {
		if got[a] > 0 {
			t.Errorf("%s: fail2ban would count %d failure(s) against the legitimate client %s", what, got[a], a)
		}
	}
	for _, a := range want {
		if got[a] == 0 {
			t.Errorf("%s: fail2ban found no failure for the hostile %s", what, a)
		}
	}
	for a := range got {
		if !slices.Contains(want, a) && !slices.Contains(never, a) {
			t.Errorf("%s: fail2ban counted %s, which sent nothing", what, a)
		}
	}
	if t.Failed() {
		t.Logf("found %v; log:\n%s", got, log)
	}
}

// TestIntegrationFail2banFilter: the real fail2ban-regex, with dist/fail2ban/filter.d/sesame.conf,
// on the real daemon's log of a scenario with scanners, an SPA attacker and a legitimate client
// (who also mistypes a knock), finds exactly the hostile addresses and never the legitimate
// client's; in aggressive mode it also counts the replay and the mistyped knock. Run once with
// the log on a file (time= lines), once as under systemd (JOURNAL_STREAM names the file: no
// timestamps, sd-daemon priority prefixes that must match each line's level), whose lines are
// then given to fail2ban-regex as the journal reader gives them to fail2ban: "HOST
// IDENT[PID]: MESSAGE", prefix removed.
func TestIntegrationFail2banFilter(t *testing.T) {
	bed := skipUnlessRoot(t)
	if _, err := os.Stat(fail2banFilter); err != nil {
		t.Fatal(err)
	}
	extra, err := bed.AddClientAddrs(t.Context(), 2, true) // scanner4, scanner6, spam4, spam6
	if err != nil {
		t.Fatal(err)
	}
	for _, journal := range []bool{false, true} {
		name := "file"
		if journal {
			name = "journal"
		}
		t.Run(name, func(t *testing.T) {
			run := runF2BScenario(t, bed, extra, journal)
			lines := strings.Split(strings.TrimSuffix(run.log, "\n"), "\n")
			if journal {
				lines = journalMessages(t, lines)
			} else {
				for _, l := range lines {
					if !strings.HasPrefix(l, "time=") {
						t.Fatalf("a log line without its timestamp outside systemd: %q", l)
					}
				}
			}
			logPath := filepath.Join(t.TempDir(), name+".log")
			if err := os.WriteFile(logPath, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			var extraArgs []string
			if journal {
				extraArgs = []string{"-d", "{NONE}"} // the journal backend takes its entries' own time
			}
			norm := fail2banRegex(t, logPath, fail2banFilter, extraArgs...)
			checkBanned(t, "normal", norm, run.hostile, run.legitimate, run.log)
			aggr := fail2banRegex(t, logPath, fail2banFilter+"[mode=aggressive]", extraArgs...)
			checkBanned(t, "aggressive", aggr, append(slices.Clone(run.hostile), run.legitimateKnockTypos...), nil, run.log)
			t.Logf("fail2ban-regex found, normal mode: %v; aggressive mode: %v", norm, aggr)
			// One failure per hostile line: the sweeps' guard lines, every SPA refusal but the
			// replay; in aggressive mode also the replay and the client's three knock mistakes.
			wantNorm := map[netip.Addr]int{extra[0]: 1, extra[1]: 1, extra[2]: 5, extra[3]: 5}
			if !maps.Equal(norm, wantNorm) {
				t.Errorf("normal mode: %v failures, want %v", norm, wantNorm)
			}
			wantAggr := map[netip.Addr]int{extra[0]: 2, extra[1]: 1, extra[2]: 5, extra[3]: 5, netnsbed.Client4: 3}
			if !maps.Equal(aggr, wantAggr) {
				t.Errorf("aggressive mode: %v failures, want %v", aggr, wantAggr)
			}
			if aggr[run.replayer] <= norm[run.replayer] {
				t.Errorf("aggressive mode counts %d failures for the replayer %s, normal %d: the replay is not counted", aggr[run.replayer], run.replayer, norm[run.replayer])
			}
		})
	}
}

var sdPrefix = regexp.MustCompile(`^<([0-7])>level=(\S+) `)

// journalMessages checks that every line has the sd-daemon prefix of its level and no time
// attribute, and returns the lines as fail2ban's journal reader presents them.
func journalMessages(t *testing.T, lines []string) []string {
	t.Helper()
	out := make([]string, 0, len(lines))
	for _, l := range lines {
		m := sdPrefix.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("journal line without an sd-daemon prefix: %q", l)
		}
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(m[2])); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if want := fmt.Sprint(logfmt.Priority(lvl)); m[1] != want {
			t.Fatalf("line %q: priority <%s>, want <%s> for %s", l, m[1], want, m[2])
		}
		if strings.Contains(l, "time=") {
			t.Fatalf("journal line with its own timestamp: %q", l)
		}
		out = append(out, "sesamehost sesame[4242]: "+strings.TrimPrefix(l, "<"+m[1]+">"))
	}
	return out
}

// fail2banJail is the example jail, from the repository.
var fail2banJail = filepath.Join(filepath.Dir(fail2banFilter), "..", "jail.d", "sesame.conf")

// f2bServer is a real fail2ban server running in a bed's server namespace.
type f2bServer struct {
	conf, sock string
}

// client runs fail2ban-client against the server.
func (s *f2bServer) client(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "fail2ban-client", append([]string{"-c", s.conf, "-s", s.sock}, args...)...).CombinedOutput()
	return string(out), err
}

// banned returns the jail's banned addresses.
func (s *f2bServer) banned(t *testing.T) []netip.Addr {
	t.Helper()
	out, err := s.client(t, "get", "sesame", "banip")
	if err != nil {
		t.Fatalf("fail2ban-client get sesame banip: %v\n%s", err, out)
	}
	var as []netip.Addr
	for _, f := range strings.Fields(out) {
		if a, err := netip.ParseAddr(f); err == nil {
			as = append(as, a)
		}
	}
	return as
}

// startFail2ban copies the system's fail2ban configuration without its jails, adds the
// repository's filter and example jail, and, in a .local beside the jail, only what the test
// must change: the log file instead of the journal, the test's service port. It runs the
// server in the bed's server namespace (its nftables rules stay there) until the test ends.
func startFail2ban(t *testing.T, bed *netnsbed.Bed, logPath string) *f2bServer {
	t.Helper()
	if _, err := exec.LookPath("fail2ban-client"); err != nil {
		t.Fatal("fail2ban-client is not installed (.ci/deps.sh installs fail2ban)")
	}
	dir := t.TempDir()
	s := &f2bServer{conf: filepath.Join(dir, "etc"), sock: filepath.Join(dir, "f2b.sock")}
	if out, err := exec.Command("cp", "-a", "/etc/fail2ban", s.conf).CombinedOutput(); err != nil {
		t.Fatalf("cp /etc/fail2ban: %v\n%s", err, out)
	}
	for _, glob := range []string{"jail.d/*", "jail.local", "fail2ban.local", "fail2ban.d/*"} {
		ms, _ := filepath.Glob(filepath.Join(s.conf, glob))
		for _, m := range ms {
			if err := os.RemoveAll(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	copyFile := func(from, to string) {
		t.Helper()
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	copyFile(fail2banFilter, filepath.Join(s.conf, "filter.d", "sesame.conf"))
	copyFile(fail2banJail, filepath.Join(s.conf, "jail.d", "sesame.conf"))
	writeSecret(t, filepath.Join(s.conf, "jail.d", "sesame.local"), []byte(fmt.Sprintf(
		"[sesame]\nbackend = polling\nlogpath = %s\nport = 2222,%d\n", logPath, spaPort)))
	writeSecret(t, filepath.Join(s.conf, "fail2ban.local"), []byte("[Definition]\ndbfile = :memory:\n"))
	if out, err := s.client(t, "-t"); err != nil {
		t.Fatalf("fail2ban-client -t: %v\n%s", err, out)
	}
	cmd := netnsbed.Command(context.Background(), bed.Server, "fail2ban-client", "-c", s.conf, "-s", s.sock,
		"-p", filepath.Join(dir, "f2b.pid"), "--logtarget", filepath.Join(dir, "f2b.log"), "-f", "-x", "start")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		s.client(t, "stop")
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "f2b.log"))
			t.Logf("fail2ban log:\n%s", b)
		}
	})
	if !waitFor(20*time.Second, func() bool { _, err := s.client(t, "status", "sesame"); return err == nil }) {
		out, err := s.client(t, "status", "sesame")
		t.Fatalf("the sesame jail did not start: %v\n%s", err, out)
	}
	return s
}

// TestIntegrationFail2banJail: the example jail, in a real fail2ban server reading the real
// daemon's log, bans a source that sends SPA garbage, with the nftables action, on the
// protected port and the SPA port: a grant it earned by knocking no longer lets it through, its
// SPA packets no longer reach the SPA socket, a new knock opens the door in sesame (its packet
// socket sees knocks before the firewall) but not the port, and an unban lets it through again.
// The legitimate client, who mistyped a knock, is not banned and keeps its connection. Open and
// closed are judged by data both ways.
func TestIntegrationFail2banJail(t *testing.T) {
	bed := skipUnlessRoot(t)
	extra, err := bed.AddClientAddrs(t.Context(), 1, false)
	if err != nil {
		t.Fatal(err)
	}
	attacker, legit := extra[0], netnsbed.Client4
	svc := listen(t, bed, families[0])
	k := newSPAKeys(t)
	d := startSesameToFile(t, bed, k, false)
	f2b := startFail2ban(t, bed, d.path)

	knockFrom(t, bed, legit, netnsbed.Server4, "7000/tcp", "9000/tcp") // mistyped
	for _, c := range []netip.Addr{legit, attacker} {
		knockFrom(t, bed, c, netnsbed.Server4, "7000/tcp", "8000/udp", "9000/tcp")
		if !eventually(t, bed, c, svc, true) {
			t.Fatalf("%s: the knock did not open the port; log:\n%s", c, d.output())
		}
	}
	sendUDP(t, bed, legit, netip.AddrPortFrom(netnsbed.Server4, spaPort), seal(t, k.shared(), spa.Request{}, time.Now()))
	var garbage [200]byte // random bytes: not base64 text, so malformed for fwknop
	for range 5 {
		rand.Read(garbage[:])
		sendUDP(t, bed, attacker, netip.AddrPortFrom(netnsbed.Server4, spaPort), garbage[:])
	}
	if !waitFor(20*time.Second, func() bool { return slices.Contains(f2b.banned(t), attacker) }) {
		t.Fatalf("fail2ban did not ban %s; banned %v; log:\n%s", attacker, f2b.banned(t), d.output())
	}
	if !eventually(t, bed, attacker, svc, false) {
		t.Fatal("the banned source still reaches the protected port")
	}
	// Its SPA packets no longer reach the SPA socket.
	refused := func() int { return strings.Count(d.output(), `msg="spa refused" src=`+attacker.String()+" ") }
	before := refused()
	for range 3 {
		sendUDP(t, bed, attacker, netip.AddrPortFrom(netnsbed.Server4, spaPort), garbage[:])
	}
	time.Sleep(time.Second)
	if n := refused(); n != before {
		t.Fatalf("the banned source's SPA packets still reach sesame: %d refusals, %d before the ban took effect", n, before)
	}
	knockFrom(t, bed, attacker, netnsbed.Server4, "7000/tcp", "8000/udp", "9000/tcp")
	if !waitFor(2*time.Second, func() bool {
		return strings.Count(d.output(), `msg="door opened" door=ssh src=`+attacker.String()) == 2
	}) {
		t.Fatalf("sesame did not see the banned source's knock; log:\n%s", d.output())
	}
	if canConnect(t, bed, attacker, svc) {
		t.Fatal("the banned source reached the protected port after knocking")
	}
	if !canConnect(t, bed, legit, svc) {
		t.Fatal("the legitimate client lost the protected port")
	}
	if got := f2b.banned(t); !slices.Equal(got, []netip.Addr{attacker}) {
		t.Fatalf("banned %v, want only %s", got, attacker)
	}
	if out, err := f2b.client(t, "set", "sesame", "unbanip", attacker.String()); err != nil {
		t.Fatalf("unbanip: %v\n%s", err, out)
	}
	if !eventually(t, bed, attacker, svc, true) {
		t.Fatal("the unbanned source does not reach the port its knock opened")
	}
}

// TestFail2banFilterAnchored: text in a line's later attributes (detail=, as slog's text
// handler quotes it, newlines included) cannot make the filter read another address: it reads
// only the src right after the message. Needs fail2ban-regex, not root.
func TestFail2banFilterAnchored(t *testing.T) {
	var buf bytes.Buffer
	h, err := logfmt.New(&buf, logfmt.Options{Format: logfmt.Text, Level: slog.LevelInfo})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h)
	forged := "x src=203.0.113.9 reason=malformed y\" src=203.0.113.9 reason=\"bad MAC\"\n" +
		`time=2026-12-01T00:00:00Z level=INFO msg="spa refused" src=203.0.113.9 reason=malformed`
	log.Info("spa refused", "src", netip.MustParseAddr("198.18.1.2"), "format", "native", "reason", "bad MAC", "detail", forged)
	log.Info("spa refused", "src", netip.MustParseAddr("198.18.1.3"), "format", "native", "reason", "stale", "detail", forged)
	log.Info("door opened", "door", "ssh", "src", netip.MustParseAddr("198.18.1.4"), "note", forged)
	log.Info("knock refused", "src", netip.MustParseAddr("198.18.1.5"), "door", "x reason=\"bad MAC\"", "reason", "sequence timeout", "detail", forged)
	path := filepath.Join(t.TempDir(), "forged.log")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, filter := range []string{fail2banFilter, fail2banFilter + "[mode=aggressive]"} {
		got := fail2banRegex(t, path, filter)
		if want := map[netip.Addr]int{netip.MustParseAddr("198.18.1.2"): 1}; !maps.Equal(got, want) {
			t.Errorf("%s: found %v, want %v; log:\n%s", filepath.Base(filter), got, want, buf.String())
		}
	}
}

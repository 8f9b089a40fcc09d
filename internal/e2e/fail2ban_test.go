//go:build linux

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
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
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sesame.toml")
	writeSecret(t, cfgPath, []byte(k.config(false, dir)+f2bDoor))
	logPath := filepath.Join(dir, "sesame.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd := netnsbed.Command(context.Background(), bed.Server, sesameBin, "server", "-c", cfgPath)
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
	stop := func() {
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
	t.Cleanup(stop)
	output := func() string {
		b, _ := os.ReadFile(logPath)
		return string(b)
	}
	has := func(timeout time.Duration, subs ...string) bool {
		return waitFor(timeout, func() bool {
			for l := range strings.SplitSeq(output(), "\n") {
				if !slices.ContainsFunc(subs, func(s string) bool { return !strings.Contains(l, s) }) {
					return true
				}
			}
			return false
		})
	}
	if !has(10*time.Second, "sesame server running") {
		t.Fatalf("sesame did not start; output:\n%s", output())
	}
	scanner4, scanner6, spam4, spam6 := extra[0], extra[1], extra[2], extra[3]
	srv4 := netip.AddrPortFrom(netnsbed.Server4, spaPort)
	srv6 := netip.AddrPortFrom(netnsbed.Server6, spaPort)
	src := func(a netip.Addr) string { return " src=" + a.String() + " " }

	// The legitimate client: a wrong knock (9000 before 8000), then the sequence, then SPA.
	knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, "7000/tcp", "9000/tcp")
	if !has(2*time.Second, `msg="knock refused"`, src(netnsbed.Client4), `reason="wrong knock"`) {
		t.Fatalf("no wrong-knock line for the legitimate client:\n%s", output())
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
	for _, s := range []netip.Addr{scanner4, scanner6} {
		if !has(2*time.Second, `msg="sweep guard: knocks from this source are ignored for a while"`, src(s)) {
			t.Fatalf("no sweep guard line for %s:\n%s", s, output())
		}
	}

	// The SPA attacker: garbage, a truncated and a tampered packet, a wrong key (an unknown
	// client), from both families.
	var garbage [96]byte
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
		for _, pkt := range [][]byte{
			garbage[:],
			seal(t, k.shared(), spa.Request{}, time.Now())[:spa.HeaderLen+2],
			tampered,
			seal(t, spa.ClientCredential{ID: "mallory", Shared: &wrongKey}, spa.Request{}, time.Now()),
		} {
			sendUDP(t, bed, p.from, p.to, pkt)
		}
		if !waitFor(2*time.Second, func() bool { return strings.Count(output(), `msg="spa refused"`+src(p.from)) >= 4 }) {
			t.Fatalf("not four spa refused lines for %s:\n%s", p.from, output())
		}
	}
	// The scanner also replays the legitimate client's packet from its own address.
	sendUDP(t, bed, scanner4, srv4, good)
	if !has(2*time.Second, `msg="spa refused"`, src(scanner4), "reason=replay") {
		t.Fatalf("no replay line for %s:\n%s", scanner4, output())
	}
	stop()
	return f2bRun{
		log:                  output(),
		hostile:              []netip.Addr{scanner4, scanner6, spam4, spam6},
		legitimate:           []netip.Addr{netnsbed.Client4, netnsbed.Client6},
		replayer:             scanner4,
		legitimateKnockTypos: []netip.Addr{netnsbed.Client4},
	}
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

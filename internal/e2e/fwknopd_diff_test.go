//go:build linux

package e2e

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"

	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
)

// Keys of the differential test besides the reference keys (fwknopKey, fwknopHMAC).
const (
	fwdPass      = "diff-test-passphrase"
	fwdHMACPass  = "diff-test-hmac-passphrase"
	fwdWrongKey  = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	fwdWrongHMAC = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="
)

// fwdModes are the ways fwknopd gets packets: its UDP server, and sniffing (its default).
var fwdModes = []struct{ name, conf string }{
	{"udp", "ENABLE_UDP_SERVER           Y;\nUDPSERV_PORT                62201;\n"},
	{"sniff", "PCAP_INTF                   {intf};\nPCAP_FILTER                 udp port 62201;\n"},
}

// fwdServerConf is the rest of the fwknopd.conf both daemons run; {run} is the daemon's own
// run directory.
const fwdServerConf = `ENABLE_SPA_PACKET_AGING     Y;
MAX_SPA_PACKET_AGE          120;
ENABLE_DIGEST_PERSISTENCE   Y;
FWKNOP_RUN_DIR              {run};
`

// fwdPorts are the services behind the gate; every case probes each of them from each of its
// addresses.
var fwdPorts = []uint16{2222, 2223}

// fwdSend is one datagram of a case: packet pkt of the case, sent from address "src" or "alt".
type fwdSend struct {
	pkt  int
	from string
}

// fwdCase is one row of the differential table. Each case has its own client addresses, {src}
// (the sender), {alt} and {oth}, and its own access.conf stanzas, so the cases cannot
// interfere with each other while one daemon serves them all.
type fwdCase struct {
	name    string
	access  string     // the case's stanzas; {src}, {alt}, {oth} are its addresses
	packets [][]string // fwknop client arguments, one packet each (see fk)
	sends   []fwdSend  // nil: packet 0 once from src
	mangle  func([]byte) []byte
	// Reachable services afterwards ("src/2222 alt/2223"; "" none), per daemon.
	fwknopd, sesame string
	// closes, when set, is how long each reachable service stays reachable.
	closes, sesameCloses time.Duration
	// diff names the section of docs/MIGRATING-FROM-FWKNOP.md that documents why sesame's
	// outcome differs from fwknopd's.
	diff string
	// fwLog and sesLog, when set, are the substrings of one log line of each daemon that give
	// the case's reason ({src}, {alt} filled in).
	fwLog, sesLog []string
}

// fwl is fwknopd's line about a packet from the case's sender.
func fwl(s string) []string { return []string{"[{src}] ", s} }

// sesl is sesame's line about a packet from the case's sender.
func sesl(reason string) []string { return []string{"src={src} ", reasonAttr(reason)} }

// st is a stanza for the case's sender with the reference keys and extra lines.
func st(extra ...string) string {
	return stSrc("{src}", extra...)
}

// stSrc is a stanza with SOURCE source, the reference keys unless extra sets keys, and extra.
func stSrc(source string, extra ...string) string {
	s := "SOURCE              " + source + "\n"
	if !slices.ContainsFunc(extra, func(l string) bool { return strings.HasPrefix(l, "KEY") || strings.HasPrefix(l, "HMAC_KEY") }) {
		s += "KEY_BASE64          " + fwknopKey + "\nHMAC_KEY_BASE64     " + fwknopHMAC + "\n"
	}
	for _, l := range extra {
		s += l + "\n"
	}
	return s
}

// fk is a packet's client arguments: args plus, unless args set them, -A tcp/2222, -a {src},
// the reference keys and an HMAC (none with the pseudo-flag --no-hmac).
func fk(args ...string) []string {
	has := func(flags ...string) bool {
		return slices.ContainsFunc(args, func(a string) bool { return slices.Contains(flags, a) })
	}
	out := slices.Clone(args)
	if !has("-A") {
		out = append(out, "-A", "tcp/2222")
	}
	if !has("-a", "-s") {
		out = append(out, "-a", "{src}")
	}
	if !has("--key-rijndael", "--key-base64-rijndael") {
		out = append(out, "--key-base64-rijndael", fwknopKey)
	}
	if !has("--no-hmac") {
		out = append(out, "--use-hmac")
		if !has("--key-hmac", "--key-base64-hmac") {
			out = append(out, "--key-base64-hmac", fwknopHMAC)
		}
	}
	return slices.DeleteFunc(out, func(a string) bool { return a == "--no-hmac" })
}

var fwdCases = []fwdCase{
	// Timeouts first: the daemons handle packets in order, so these are measured closest to
	// their sending.
	{name: "client timeout -f 2", access: st("FW_ACCESS_TIMEOUT 30"), packets: [][]string{fk("-f", "2")},
		fwknopd: "src/2222", sesame: "src/2222", closes: 2 * time.Second},
	{name: "FW_ACCESS_TIMEOUT without -f", access: st("FW_ACCESS_TIMEOUT 3"), packets: [][]string{fk()},
		fwknopd: "src/2222", sesame: "src/2222", closes: 3 * time.Second},
	{name: "MAX_FW_TIMEOUT caps -f 100", access: st("FW_ACCESS_TIMEOUT 3", "MAX_FW_TIMEOUT 3"), packets: [][]string{fk("-f", "100")},
		fwknopd: "src/2222", sesame: "src/2222", closes: 3 * time.Second},
	{name: "MAX_FW_TIMEOUT below FW_ACCESS_TIMEOUT caps -f 100", access: st("FW_ACCESS_TIMEOUT 30", "MAX_FW_TIMEOUT 3"), packets: [][]string{fk("-f", "100")},
		fwknopd: "src/2222", sesame: "src/2222", closes: 3 * time.Second},
	{name: "MAX_FW_TIMEOUT below FW_ACCESS_TIMEOUT, no -f", access: st("FW_ACCESS_TIMEOUT 30", "MAX_FW_TIMEOUT 3"), packets: [][]string{fk()},
		fwknopd: "src/2222", sesame: "src/2222", sesameCloses: 3 * time.Second, diff: "FW_ACCESS_TIMEOUT above MAX_FW_TIMEOUT"},

	{name: "two stanzas: the timeout of the one that grants", access: st("OPEN_PORTS tcp/2222", "FW_ACCESS_TIMEOUT 30") + st("OPEN_PORTS tcp/2223", "FW_ACCESS_TIMEOUT 3"),
		packets: [][]string{fk("-A", "tcp/2223")}, fwknopd: "src/2223", sesame: "src/2223", closes: 3 * time.Second},

	{name: "sha256 digest, sha256 HMAC, base64 keys", access: st(), packets: [][]string{fk()}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "md5 digest", access: st(), packets: [][]string{fk("-m", "md5")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "sha1 digest", access: st(), packets: [][]string{fk("-m", "sha1")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "sha384 digest", access: st(), packets: [][]string{fk("-m", "sha384")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "sha512 digest", access: st(), packets: [][]string{fk("-m", "sha512")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "HMAC md5", access: st("HMAC_DIGEST_TYPE MD5"), packets: [][]string{fk("--hmac-digest-type", "md5")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "HMAC sha1", access: st("HMAC_DIGEST_TYPE SHA1"), packets: [][]string{fk("--hmac-digest-type", "sha1")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "HMAC sha384", access: st("HMAC_DIGEST_TYPE SHA384"), packets: [][]string{fk("--hmac-digest-type", "sha384")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "HMAC sha512 with sha512 digest", access: st("HMAC_DIGEST_TYPE SHA512"), packets: [][]string{fk("--hmac-digest-type", "sha512", "-m", "sha512")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "HMAC sha512 to a sha256 stanza", access: st(), packets: [][]string{fk("--hmac-digest-type", "sha512")},
		fwLog: fwl("HMAC_COMPAREFAIL"), sesLog: sesl("bad MAC")},
	{name: "CFB encryption mode", access: st("ENCRYPTION_MODE CFB"), packets: [][]string{fk("-M", "cfb")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "passphrase keys", access: st("KEY "+fwdPass, "HMAC_KEY "+fwdHMACPass),
		packets: [][]string{fk("--key-rijndael", fwdPass, "--key-hmac", fwdHMACPass)}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "passphrase, no HMAC", access: st("KEY " + fwdPass), packets: [][]string{fk("--key-rijndael", fwdPass, "--no-hmac")},
		fwknopd: "src/2222", sesame: "src/2222"},
	{name: "legacy encryption mode, no HMAC", access: st("KEY "+fwdPass, "ENCRYPTION_MODE legacy"),
		packets: [][]string{fk("--key-rijndael", fwdPass, "--no-hmac", "-M", "legacy")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "no HMAC to an HMAC stanza", access: st(), packets: [][]string{fk("--no-hmac")},
		fwLog: fwl("HMAC_COMPAREFAIL"), sesLog: sesl("bad MAC")},
	{name: "wrong encryption key", access: st(), packets: [][]string{fk("--key-base64-rijndael", fwdWrongKey)},
		fwLog: fwl("Decryption failed"), sesLog: append(sesl("bad MAC"), "decryption failed")},
	{name: "wrong HMAC key", access: st(), packets: [][]string{fk("--key-base64-hmac", fwdWrongHMAC)},
		fwLog: fwl("HMAC_COMPAREFAIL"), sesLog: sesl("bad MAC")},
	{name: "wrong passphrase", access: st("KEY "+fwdPass, "HMAC_KEY "+fwdHMACPass),
		packets: [][]string{fk("--key-rijndael", "not-"+fwdPass, "--key-hmac", fwdHMACPass)},
		fwLog:   fwl("Decryption failed"), sesLog: append(sesl("bad MAC"), "decryption failed")},
	{name: "-s opens for the packet's source", access: st(), packets: [][]string{fk("-s")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "-a opens for another address in SOURCE", access: stSrc("{src}, {alt}"), packets: [][]string{fk("-a", "{alt}")}, fwknopd: "alt/2222", sesame: "alt/2222"},
	{name: "-a for an address outside SOURCE", access: st(), packets: [][]string{fk("-a", "{alt}")}, fwknopd: "alt/2222", sesame: "",
		diff: "Allow IP and SOURCE", sesLog: sesl("address not allowed")},
	{name: "REQUIRE_SOURCE_ADDRESS refuses -s", access: st("REQUIRE_SOURCE_ADDRESS Y"), packets: [][]string{fk("-s")},
		fwLog: fwl("Got 0.0.0.0 when valid source IP was required"), sesLog: sesl("source address required")},
	{name: "REQUIRE_SOURCE_ADDRESS with -a", access: st("REQUIRE_SOURCE_ADDRESS Y"), packets: [][]string{fk()}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "OPEN_PORTS: the other listed port", access: st("OPEN_PORTS tcp/2222, tcp/2223"), packets: [][]string{fk("-A", "tcp/2223")},
		fwknopd: "src/2223", sesame: "src/2223"},
	{name: "OPEN_PORTS: both listed ports", access: st("OPEN_PORTS tcp/2222, tcp/2223"), packets: [][]string{fk("-A", "tcp/2222,tcp/2223")},
		fwknopd: "src/2222 src/2223", sesame: "src/2222 src/2223"},
	{name: "OPEN_PORTS: a port outside it", access: st("OPEN_PORTS tcp/2222"), packets: [][]string{fk("-A", "tcp/2223")},
		fwLog: fwl("was denied per access.conf"), sesLog: sesl("port not allowed")},
	{name: "OPEN_PORTS: one of two ports outside it", access: st("OPEN_PORTS tcp/2222"), packets: [][]string{fk("-A", "tcp/2222,tcp/2223")},
		fwLog: fwl("was denied per access.conf"), sesLog: sesl("port not allowed")},
	{name: "no OPEN_PORTS: any port", access: st(), packets: [][]string{fk("-A", "tcp/2223")}, fwknopd: "src/2223", sesame: "src/2223"},
	{name: "RESTRICT_PORTS", access: st("RESTRICT_PORTS tcp/2223"), packets: [][]string{fk("-A", "tcp/2223")},
		fwLog: fwl("was denied per access.conf"), sesLog: sesl("port not allowed")},
	{name: "SOURCE list with the sender", access: stSrc("{oth}, {src}/32"), packets: [][]string{fk()}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "SOURCE list without the sender", access: stSrc("{alt}, {oth}/32"), packets: [][]string{fk()},
		fwLog: []string{"No access data found for source IP: {src}\n"}, sesLog: sesl("source not allowed")},
	{name: "REQUIRE_USERNAME matches", access: st("REQUIRE_USERNAME alice"), packets: [][]string{fk("-U", "alice")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "REQUIRE_USERNAME differs", access: st("REQUIRE_USERNAME alice"), packets: [][]string{fk("-U", "bob")},
		fwLog: fwl("does not match required username"), sesLog: sesl("username not allowed")},
	{name: "ACCESS_EXPIRE in the past", access: st("ACCESS_EXPIRE 01/01/2020"), packets: [][]string{fk()},
		fwLog: fwl("Access stanza has expired"), sesLog: sesl("access expired")},
	{name: "replay from another address", access: stSrc("{src}, {alt}"), packets: [][]string{fk("-s")},
		sends: []fwdSend{{0, "src"}, {0, "alt"}}, fwknopd: "src/2222", sesame: "src/2222",
		fwLog: []string{"Replay detected from source IP: {alt},"}, sesLog: []string{"src={alt} ", "reason=replay"}},
	{name: "replay of a refused packet", access: stSrc("{src}, {alt}", "OPEN_PORTS tcp/2222"), packets: [][]string{fk("-s", "-A", "tcp/2223"), fk("-s")},
		sends: []fwdSend{{0, "src"}, {0, "alt"}, {1, "alt"}}, fwknopd: "alt/2222", sesame: "alt/2222",
		fwLog: []string{"Replay detected from source IP: {alt},"}, sesLog: []string{"src={alt} ", "reason=replay"}},
	{name: "packet 60 s old", access: st(), packets: [][]string{fk("--time-offset-minus", "60s")}, fwknopd: "src/2222", sesame: "src/2222"},
	{name: "packet 5 min old", access: st(), packets: [][]string{fk("--time-offset-minus", "300s")},
		fwLog: fwl("time difference is too great"), sesLog: sesl("stale")},
	{name: "packet 5 min ahead", access: st(), packets: [][]string{fk("--time-offset-plus", "300s")},
		fwLog: fwl("time difference is too great"), sesLog: sesl("future")},
	{name: "-B file sent with its newline", access: st(), packets: [][]string{fk()}, mangle: func(p []byte) []byte { return append(p, '\n') },
		fwLog: fwl("Data is not an SPA message"), sesLog: sesl("malformed")},
	// Stanzas that share keys: a packet refused by one stanza whose keys fit goes on to the
	// next; the first that accepts grants, and the packet's digest is recorded once.
	{name: "two stanzas, the port only in the second", access: st("OPEN_PORTS tcp/2222") + st("OPEN_PORTS tcp/2223"),
		packets: [][]string{fk("-A", "tcp/2223")}, fwknopd: "src/2223", sesame: "src/2223",
		fwLog: fwl("was denied per access.conf"), sesLog: append(sesl("accepted"), "open=tcp/2223")},
	{name: "two stanzas, the first's SOURCE without the sender", access: stSrc("{oth}") + st("OPEN_PORTS tcp/2223"),
		packets: [][]string{fk("-A", "tcp/2223")}, fwknopd: "src/2223", sesame: "src/2223"},
	{name: "two stanzas, REQUIRE_USERNAME only in the first", access: st("REQUIRE_USERNAME alice") + st("OPEN_PORTS tcp/2223"),
		packets: [][]string{fk("-U", "bob", "-A", "tcp/2223")}, fwknopd: "src/2223", sesame: "src/2223"},
	{name: "two stanzas, the first expired", access: st("ACCESS_EXPIRE 01/01/2020") + st("OPEN_PORTS tcp/2223"),
		packets: [][]string{fk("-A", "tcp/2223")}, fwknopd: "src/2223", sesame: "src/2223"},
	{name: "two stanzas, REQUIRE_SOURCE_ADDRESS only in the first", access: st("REQUIRE_SOURCE_ADDRESS Y") + st("OPEN_PORTS tcp/2223"),
		packets: [][]string{fk("-s", "-A", "tcp/2223")}, fwknopd: "src/2223", sesame: "src/2223"},
	{name: "two stanzas, -a in the second's SOURCE only", access: st() + stSrc("{src}, {alt}", "OPEN_PORTS tcp/2223"),
		packets: [][]string{fk("-a", "{alt}", "-A", "tcp/2223")}, fwknopd: "alt/2223", sesame: "alt/2223"},
	{name: "three stanzas, other keys in the first", access: st("KEY "+fwdPass, "HMAC_KEY "+fwdHMACPass) + st("OPEN_PORTS tcp/2222") + st("OPEN_PORTS tcp/2223"),
		packets: [][]string{fk("-A", "tcp/2223")}, fwknopd: "src/2223", sesame: "src/2223"},
	{name: "two stanzas refusing, the packet resent", access: stSrc("{src}, {alt}", "OPEN_PORTS tcp/2222") + stSrc("{src}, {alt}", "OPEN_PORTS tcp/2222"),
		packets: [][]string{fk("-s", "-A", "tcp/2223"), fk("-s")},
		sends:   []fwdSend{{0, "src"}, {0, "alt"}, {1, "alt"}}, fwknopd: "alt/2222", sesame: "alt/2222",
		fwLog: []string{"Replay detected from source IP: {alt},"}, sesLog: []string{"src={alt} ", "reason=replay"}},
	{name: "two stanzas, the second grants, the packet resent", access: stSrc("{src}, {alt}", "OPEN_PORTS tcp/2222") + stSrc("{src}, {alt}", "OPEN_PORTS tcp/2223"),
		packets: [][]string{fk("-s", "-A", "tcp/2223")}, sends: []fwdSend{{0, "src"}, {0, "alt"}}, fwknopd: "src/2223", sesame: "src/2223",
		fwLog: []string{"Replay detected from source IP: {alt},"}, sesLog: []string{"src={alt} ", "reason=replay"}},
}

// TestFwknopdDifferential runs the same fwknopd.conf and access.conf under the real fwknopd and
// under 'sesame server --fwknop-conf', sends both the same packets built by the real fwknop
// client, and compares which services each case can then reach, with data both ways, and for
// how long. They agree except where docs/MIGRATING-FROM-FWKNOP.md documents a difference.
func TestFwknopdDifferential(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for _, bin := range []string{"fwknop", "fwknopd", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is not installed (.ci/deps.sh installs it): the differential test needs it", bin)
		}
	}
	if sesameBin == "" {
		t.Fatal("sesame binary not built")
	}
	doc, err := os.ReadFile("../../docs/MIGRATING-FROM-FWKNOP.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range fwdCases {
		switch {
		case tc.diff == "" && (tc.fwknopd != tc.sesame || tc.sesameCloses != 0):
			t.Fatalf("%s: outcomes differ without a documented difference", tc.name)
		case tc.diff != "" && !strings.Contains(string(doc), tc.diff):
			t.Fatalf("%s: difference %q is not in docs/MIGRATING-FROM-FWKNOP.md", tc.name, tc.diff)
		}
	}
	for _, mode := range fwdModes {
		t.Run(mode.name, func(t *testing.T) { fwdCompare(t, mode.conf) })
	}
}

// fwdCompare runs the table under both daemons, mode being fwknopd.conf's capture lines, and
// compares the outcomes with the table's.
func fwdCompare(t *testing.T, mode string) {
	// Both beds get the same client addresses, so one access.conf serves both daemons.
	n := 3*len(fwdCases) + 1
	beds := map[string]*fwdBed{}
	for _, name := range []string{"fwknopd", "sesame"} {
		beds[name] = newFwdBed(t, n)
	}
	access := fwdAccess(beds["fwknopd"].addrs)
	packets := fwdPackets(t, beds["fwknopd"], fwdCases)

	results, logs := map[string][]fwdResult{}, map[string]string{}
	for _, name := range []string{"fwknopd", "sesame"} {
		results[name], logs[name] = beds[name].run(t, name, mode, access, packets)
	}
	for i, tc := range fwdCases {
		fr, sr := results["fwknopd"][i], results["sesame"][i]
		for _, d := range []struct {
			name   string
			r      fwdResult
			want   string
			closes time.Duration
		}{
			{"fwknopd", fr, tc.fwknopd, tc.closes},
			{"sesame", sr, tc.sesame, cmp.Or(tc.sesameCloses, tc.closes)},
		} {
			if d.r.open != d.want {
				t.Errorf("%s: %s: reachable %q, want %q", tc.name, d.name, d.r.open, d.want)
			}
			for _, e := range d.r.errs {
				t.Errorf("%s: %s: %v", tc.name, d.name, e)
			}
			if d.want == "" || d.closes == 0 {
				if d.r.closedAfter != 0 {
					t.Errorf("%s: %s: closed after %v, want open for the whole test", tc.name, d.name, d.r.closedAfter)
				}
				continue
			}
			if lo, hi := d.closes-1200*time.Millisecond, d.closes+1800*time.Millisecond; d.r.closedAfter < lo || d.r.closedAfter > hi {
				t.Errorf("%s: %s: closed after %v (0: still open at the end), want %v (%v..%v)", tc.name, d.name, d.r.closedAfter, d.closes, lo, hi)
			}
		}
		a := caseAddrs(beds["fwknopd"].addrs, i)
		for _, l := range []struct {
			name string
			want []string
		}{{"fwknopd", tc.fwLog}, {"sesame", tc.sesLog}} {
			if len(l.want) > 0 && !hasLine(logs[l.name], a, l.want) {
				t.Errorf("%s: %s: no log line with %q", tc.name, l.name, l.want)
			}
		}
		t.Logf("%-52s fwknopd %-20q sesame %-20q (closed after %v / %v)", tc.name, fr.open, sr.open,
			fr.closedAfter.Round(100*time.Millisecond), sr.closedAfter.Round(100*time.Millisecond))
	}
}

// fwdBed is a bed with the test's services behind a gate of the host's own: established
// connections accepted, new connections to the services dropped unless a daemon's rule (ahead
// of these, at the top of INPUT) accepts them.
type fwdBed struct {
	*netnsbed.Bed
	addrs []netip.Addr // 3 per case, then a bystander that no SOURCE names
}

func newFwdBed(t *testing.T, n int) *fwdBed {
	t.Helper()
	b := &fwdBed{Bed: netnstest.NewT(t)}
	var err error
	if b.addrs, err = b.AddClientAddrs(context.Background(), n, false); err != nil {
		t.Fatal(err)
	}
	by := b.addrs[n-1] // the bystander
	rules := [][]string{{"-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"}}
	for _, p := range fwdPorts {
		dst := netip.AddrPortFrom(netnsbed.Server4, p)
		if _, err := netnsbed.Listen(t.Context(), b.Server, dst); err != nil {
			t.Fatal(err)
		}
		if ok, err := netnsbed.CanConnect(b.Client, by, dst, time.Second); !ok {
			t.Fatalf("the echo service on port %d does not answer before the gate is up: %v", p, err)
		}
		rules = append(rules, []string{"-A", "INPUT", "-p", "tcp", "--dport", fmt.Sprint(p), "-j", "DROP"})
	}
	for _, r := range rules {
		if out, err := netnsbed.Command(context.Background(), b.Server, "iptables", r...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %v: %v: %s", r, err, out)
		}
	}
	for _, p := range fwdPorts {
		if ok, err := netnsbed.CanConnect(b.Client, by, netip.AddrPortFrom(netnsbed.Server4, p), 300*time.Millisecond); ok || err != nil {
			t.Fatalf("port %d reachable (%v) before any SPA packet: the host's DROP rule does not work", p, err)
		}
	}
	return b
}

// caseAddrs maps a case's placeholders to its addresses.
func caseAddrs(addrs []netip.Addr, i int) map[string]netip.Addr {
	return map[string]netip.Addr{"src": addrs[3*i], "alt": addrs[3*i+1], "oth": addrs[3*i+2]}
}

func fill(s string, a map[string]netip.Addr) string {
	for k, v := range a {
		s = strings.ReplaceAll(s, "{"+k+"}", v.String())
	}
	return s
}

// fwdAccess is the access.conf of the whole table: every case's stanzas, in table order.
func fwdAccess(addrs []netip.Addr) string {
	var b strings.Builder
	for i, tc := range fwdCases {
		fmt.Fprintf(&b, "# %s\n%s\n", tc.name, fill(tc.access, caseAddrs(addrs, i)))
	}
	return b.String()
}

// fwdPackets builds every case's packets with the real fwknop client (-T: built and saved, not
// sent), so both daemons get the very same datagrams.
func fwdPackets(t *testing.T, bed *fwdBed, cases []fwdCase) [][][]byte {
	t.Helper()
	home := t.TempDir()
	out := make([][][]byte, len(cases))
	for i, tc := range cases {
		for j, args := range tc.packets {
			file := filepath.Join(home, fmt.Sprintf("packet-%d-%d", i, j))
			full := []string{"--no-rc-file", "--no-save-args", "-T", "-B", file, "-D", netnsbed.Server4.String(), "-p", fmt.Sprint(spaPort)}
			for _, a := range args {
				full = append(full, fill(a, caseAddrs(bed.addrs, i)))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			cmd := netnsbed.Command(ctx, bed.Client, "fwknop", full...)
			cmd.Env = append(os.Environ(), "HOME="+home)
			o, err := cmd.CombinedOutput()
			cancel()
			if err != nil {
				t.Fatalf("%s: fwknop %v: %v\n%s", tc.name, args, err, o)
			}
			p, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			// The saved file ends in a newline that is not part of the packet.
			p = []byte(strings.TrimRight(string(p), "\n"))
			if tc.mangle != nil {
				p = tc.mangle(p)
			}
			out[i] = append(out[i], p)
		}
	}
	return out
}

// fwdResult is what one case got from one daemon.
type fwdResult struct {
	open        string        // services reached, "src/2222 alt/2223"
	closedAfter time.Duration // how long the reached services stayed reachable (the longest); 0: to the end
	errs        []error
}

// run starts name (fwknopd or sesame) in the bed with the table's configuration, sends every
// case's packets and probes every case's services.
func (b *fwdBed) run(t *testing.T, name, mode, access string, packets [][][]byte) ([]fwdResult, string) {
	t.Helper()
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := strings.NewReplacer("{run}", run, "{intf}", b.ServerIf).Replace(mode + fwdServerConf)
	writeSecret(t, filepath.Join(dir, "fwknopd.conf"), []byte(conf))
	writeSecret(t, filepath.Join(dir, "access.conf"), []byte(access))
	var d *daemon
	switch name {
	case "fwknopd":
		// Ready when it refuses the bystander's packet (below).
		d = startDaemon(t, b.Server, "", "fwknopd", "-f", "-v", "-v",
			"-c", filepath.Join(dir, "fwknopd.conf"), "-a", filepath.Join(dir, "access.conf"),
			"-d", filepath.Join(run, "digest.cache"), "-p", filepath.Join(run, "fwknopd.pid"))
	default:
		d = startDaemon(t, b.Server, "sesame server running", sesameBin, "server", "--fwknop-conf", dir, "--state-dir", run, "--log-level", "debug")
	}
	// The bystander, whom no SOURCE names, sends case 0's packet until the daemon refuses it:
	// then it gets packets. Both handle packets in order, so the bystander's packet after the
	// table's, once refused, means the table's have been handled.
	dst := netip.AddrPortFrom(netnsbed.Server4, spaPort)
	by := b.addrs[len(b.addrs)-1]
	refused := map[string][]string{
		"fwknopd": {"No access data found for source IP: {src}\n"},
		"sesame":  {"src={src} ", reasonAttr("source not allowed")},
	}[name]
	byRefused := func() int { return countLines(d.Output(), map[string]netip.Addr{"src": by}, refused) }
	for try := 0; byRefused() == 0; try++ {
		if try == 40 {
			t.Fatalf("%s does not take packets after 10 s:\n%s", name, d.Output())
		}
		sendUDP(t, b.Bed, by, dst, packets[0][0])
		waitFor(250*time.Millisecond, func() bool { return byRefused() > 0 })
	}
	// Every service of every case is probed from before the first packet until 3 s after the
	// daemon has handled the last one, and those reached until they close.
	var until atomic.Int64
	until.Store(time.Now().Add(30 * time.Second).UnixNano())
	openUntil := func() time.Time { return time.Unix(0, until.Load()) }
	var wg sync.WaitGroup
	res := make([]fwdResult, len(fwdCases))
	var mu sync.Mutex
	for i, tc := range fwdCases {
		a := caseAddrs(b.addrs, i)
		for _, from := range []string{"src", "alt"} {
			for _, p := range fwdPorts {
				wg.Add(1)
				go func() {
					defer wg.Done()
					opened, closedAfter, err := probe(b.Client, a[from], netip.AddrPortFrom(netnsbed.Server4, p), openUntil, max(tc.closes, tc.sesameCloses))
					mu.Lock()
					defer mu.Unlock()
					r := &res[i]
					if err != nil {
						r.errs = append(r.errs, fmt.Errorf("%s/%d: %w", from, p, err))
					}
					if opened {
						r.open = strings.TrimSpace(r.open + fmt.Sprintf(" %s/%d", from, p))
						r.closedAfter = max(r.closedAfter, closedAfter)
					}
				}()
			}
		}
	}
	sent := time.Now()
	for i, tc := range fwdCases {
		a := caseAddrs(b.addrs, i)
		sends := tc.sends
		if sends == nil {
			sends = []fwdSend{{0, "src"}}
		}
		for _, s := range sends {
			sendUDP(t, b.Bed, a[s.from], dst, packets[i][s.pkt])
			time.Sleep(5 * time.Millisecond)
		}
	}
	before := byRefused()
	sendUDP(t, b.Bed, by, dst, packets[0][0])
	if !waitFor(20*time.Second, func() bool { return byRefused() > before }) {
		t.Errorf("%s did not refuse the bystander's last packet in 20 s", name)
	}
	t.Logf("%s handled the table's packets %v after the first", name, time.Since(sent).Round(time.Millisecond))
	until.Store(time.Now().Add(3 * time.Second).UnixNano())
	wg.Wait()
	t.Logf("%s: probes done %v after the first packet", name, time.Since(sent).Round(time.Millisecond))
	for i := range res {
		// The goroutines finish in any order.
		f := strings.Fields(res[i].open)
		slices.SortFunc(f, func(x, y string) int { return strings.Compare(y[:3], x[:3])*10 + strings.Compare(x, y) })
		res[i].open = strings.Join(f, " ")
	}
	// Nothing was opened for the bystander.
	for _, p := range fwdPorts {
		if ok, err := netnsbed.CanConnect(b.Client, by, netip.AddrPortFrom(netnsbed.Server4, p), 300*time.Millisecond); ok || err != nil {
			t.Errorf("%s: port %d reachable (%v) from the bystander", name, p, err)
		}
	}
	d.Stop(syscall.SIGTERM)
	return res, d.Output()
}

// hasLine reports whether one line of log holds every string of want, filled in with a.
func hasLine(log string, a map[string]netip.Addr, want []string) bool {
	return countLines(log, a, want) > 0
}

// countLines counts the lines of log that hold every string of want, filled in with a.
func countLines(log string, a map[string]netip.Addr, want []string) int {
	n := 0
	for l := range strings.SplitSeq(log, "\n") {
		l += "\n"
		if !slices.ContainsFunc(want, func(w string) bool { return !strings.Contains(l, fill(w, a)) }) {
			n++
		}
	}
	return n
}

// probe polls the service dst (netnsbed.Listen) from src, with data both ways
// (netnsbed.CanConnect), until it answers or openUntil() passes. When it answered and closes is
// set, it goes on until it stops answering (at most closes + 4 s), and reports after how long.
func probe(ns string, src netip.Addr, dst netip.AddrPort, openUntil func() time.Time, closes time.Duration) (opened bool, closedAfter time.Duration, err error) {
	const step = 50 * time.Millisecond
	const dial = 300 * time.Millisecond
	var openedAt time.Time
	for time.Now().Before(openUntil()) {
		ok, err := netnsbed.CanConnect(ns, src, dst, dial)
		if err != nil {
			return false, 0, err
		}
		if ok {
			opened, openedAt = true, time.Now()
			break
		}
		time.Sleep(step)
	}
	if opened && closes > 0 {
		for until := openedAt.Add(closes + 4*time.Second); time.Now().Before(until); time.Sleep(step) {
			ok, err := netnsbed.CanConnect(ns, src, dst, dial)
			if err != nil {
				return opened, 0, err
			}
			if !ok {
				closedAfter = time.Since(openedAt)
				break
			}
		}
	}
	return opened, closedAfter, nil
}

package spaclient_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"

	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/spaclient"
)

func copyFile(t *testing.T, src, dst string, mode os.FileMode, extra string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, append(b, extra...), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, mode); err != nil {
		t.Fatal(err)
	}
}

func inNS(t *testing.T, ns string, args ...string) string {
	t.Helper()
	out, err := netnsbed.Command(context.Background(), ns, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s in %s: %v\n%s", strings.Join(args, " "), ns, err, out)
	}
	return string(out)
}

// TestIntegrationOpenToFwknopd sends `sesame open --fwknop` packets from a
// client namespace to the real fwknopd (Debian, UDP server mode) in a
// server namespace whose INPUT policy is DROP, and checks that fwknopd adds
// its FWKNOP_INPUT rule for the client and that a TCP connect then works.
func TestIntegrationOpenToFwknopd(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	for _, bin := range []string{"fwknopd", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("skipping: %s is not installed (apt-get install fwknop-server iptables)", bin)
		}
	}
	bed := netnstest.NewT(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Server: default drop, established allowed, the SPA port open for fwknopd's UDP socket.
	for _, rule := range [][]string{
		{"-A", "INPUT", "-i", "lo", "-j", "ACCEPT"},
		{"-A", "INPUT", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"},
		{"-A", "INPUT", "-p", "udp", "--dport", "62201", "-j", "ACCEPT"},
		{"-P", "INPUT", "DROP"},
	} {
		inNS(t, bed.Server, append([]string{"iptables"}, rule...)...)
	}
	ports := []uint16{22, 2222, 2223}
	for _, p := range ports {
		if _, err := netnsbed.Listen(ctx, bed.Server, netip.AddrPortFrom(netnsbed.Server4, p)); err != nil {
			t.Fatal(err)
		}
	}
	canConnect := func(p uint16) bool {
		ok, err := netnsbed.CanConnect(bed.Client, netip.Addr{}, netip.AddrPortFrom(netnsbed.Server4, p), 300*time.Millisecond)
		if err != nil {
			t.Fatalf("connect to port %d: %v", p, err)
		}
		return ok
	}
	for _, p := range ports {
		if canConnect(p) {
			t.Fatalf("port %d is open before any SPA packet: the default-drop setup failed", p)
		}
	}

	// fwknopd with the reference configuration, in UDP server mode.
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	conf, access := filepath.Join(dir, "fwknopd.conf"), filepath.Join(dir, "access.conf")
	copyFile(t, "testdata/fwknopd-udp.conf", conf, 0o600, fmt.Sprintf("FWKNOP_RUN_DIR              %s;\n", run))
	copyFile(t, "testdata/access.conf", access, 0o600, "")
	fwknopd, err := netnsbed.StartDaemon(bed.Server, "fwknopd", "-f", "-v", "-v",
		"-c", conf, "-a", access, "-d", filepath.Join(run, "digest.cache"), "-p", filepath.Join(run, "fwknopd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		fwknopd.Stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("fwknopd output:\n%s", fwknopd.Output())
		}
	})
	if !fwknopd.WaitOutput("Kicking off UDP server", 10*time.Second) {
		t.Fatalf("fwknopd did not start its UDP server:\n%s", fwknopd.Output())
	}
	time.Sleep(100 * time.Millisecond) // from the log line to the bound socket

	// Client files: a key file (0600) and a ~/.fwknoprc in a temporary HOME.
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	keyFile := filepath.Join(home, "fwknop.keys")
	copyFile(t, "testdata/fwknop.keys", keyFile, 0o600, "")
	keys, err := os.ReadFile("testdata/fwknop.keys")
	if err != nil {
		t.Fatal(err)
	}
	var keyLines []string
	for _, l := range strings.Split(string(keys), "\n") {
		if strings.HasPrefix(l, "KEY_BASE64") || strings.HasPrefix(l, "HMAC_KEY_BASE64") {
			keyLines = append(keyLines, l)
		}
	}
	rc := "[default]\nHMAC_DIGEST_TYPE sha256\n\n[lab]\nSPA_SERVER " + netnsbed.Server4.String() +
		"\nACCESS tcp/2222\nFW_TIMEOUT 30\nUSE_HMAC Y\n" + strings.Join(keyLines, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(home, ".fwknoprc"), []byte(rc), 0o600); err != nil {
		t.Fatal(err)
	}
	b64 := func(name string) string {
		for _, l := range keyLines {
			if f := strings.Fields(l); f[0] == name {
				return f[1]
			}
		}
		t.Fatalf("no %s in testdata/fwknop.keys", name)
		return ""
	}

	tests := []struct {
		name     string
		args     []string
		port     uint16
		wantWarn bool
	}{
		{"flags", []string{netnsbed.Server4.String(), "-A", "tcp/22", "-a", netnsbed.Client4.String(), "--fwknop", "--id", "alice", "--key-file", keyFile, "-f", "20"}, 22, false},
		{"fwknoprc without ALLOW_IP: the route address", []string{"-n", "lab"}, 2222, false},
		{"key flags", []string{"-A", "tcp/2223", netnsbed.Server4.String(), "-s", "--key-base64-rijndael", b64("KEY_BASE64"), "--key-base64-hmac", b64("HMAC_KEY_BASE64")}, 2223, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := spaclient.ParseArgs(tt.args)
			if err != nil {
				t.Fatalf("ParseArgs: %v", err)
			}
			var stdout, stderr bytes.Buffer
			sent := time.Now()
			err = netnsbed.Do(bed.Client, func() error { return spaclient.Open(ctx, o, &stdout, &stderr) })
			if err != nil {
				t.Fatalf("sesame open %s: %v", strings.Join(tt.args, " "), err)
			}
			if got := stderr.Len() > 0; got != tt.wantWarn {
				t.Errorf("stderr = %q, want a warning: %v", stderr.String(), tt.wantWarn)
			}
			want := fmt.Sprintf("-s %s/32 -p tcp -m tcp --dport %d ", netnsbed.Client4, tt.port)
			var rules string
			if !netnsbed.WaitFor(3*time.Second, func() bool {
				rules = inNS(t, bed.Server, "iptables", "-S", "FWKNOP_INPUT")
				return strings.Contains(rules, want) && strings.Contains(rules, "_exp_")
			}) {
				t.Fatalf("no fwknopd rule %q after 3s; FWKNOP_INPUT:\n%s", want, rules)
			}
			t.Logf("fwknopd rule after %v", time.Since(sent).Round(time.Millisecond))
			if !canConnect(tt.port) {
				t.Fatalf("no greeting and echo on port %d although fwknopd added:\n%s", tt.port, rules)
			}
		})
	}
	// Nothing else was opened: a port never asked for stays closed.
	if _, err := netnsbed.Listen(ctx, bed.Server, netip.AddrPortFrom(netnsbed.Server4, 2224)); err != nil {
		t.Fatal(err)
	}
	if canConnect(2224) {
		t.Error("port 2224 is open although nobody asked for it")
	}
	if strings.Contains(fwknopd.Output(), "Replay") {
		t.Errorf("fwknopd saw a replay:\n%s", fwknopd.Output())
	}
}

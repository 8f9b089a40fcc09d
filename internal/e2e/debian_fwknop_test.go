//go:build linux

package e2e

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// /etc/fwknop/fwknopd.conf and access.conf as Debian's fwknop-server 2.6.10-16 package installs
// them, and their SHA-256.
const (
	debianFwknopdConf    = "testdata/debian/fwknop/fwknopd.conf"
	debianFwknopdConfSum = "9318c9f42811b0371fd520b2b6f7cada464e71d82a63170406ded06c8983ea6b"
	debianAccessConf     = "testdata/debian/fwknop/access.conf"
	debianAccessConfSum  = "849550d11edd1c2997aad2553aab76cdccc68dc128ea2286b589197e0a2726c5"
)

// fwknopKeys runs 'sesame keygen --fwknop' and returns the two lines it prints for access.conf
// (KEY_BASE64 and HMAC_KEY_BASE64, in the server's section) and the two keys.
func fwknopKeys(t *testing.T) (keyLine, hmacLine, key, hmac string) {
	t.Helper()
	out, err := exec.Command(sesameBin, "keygen", "--fwknop").Output()
	if err != nil {
		t.Fatalf("sesame keygen --fwknop: %v", err)
	}
	server, _, ok := strings.Cut(string(out), "# Client")
	if !ok {
		t.Fatalf("sesame keygen --fwknop printed no client section:\n%s", out)
	}
	for _, l := range strings.Split(server, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 2 && f[0] == "KEY_BASE64":
			keyLine, key = l, f[1]
		case len(f) == 2 && f[0] == "HMAC_KEY_BASE64":
			hmacLine, hmac = l, f[1]
		}
	}
	if key == "" || hmac == "" {
		t.Fatalf("no KEY_BASE64 and HMAC_KEY_BASE64 lines in the server section:\n%s", server)
	}
	return keyLine, hmacLine, key, hmac
}

// fillAccessConf replaces the __CHANGEME__ key lines of Debian's access.conf with keygen's
// lines, as an admin following 'sesame keygen --fwknop' would, and checks that nothing else
// changed.
func fillAccessConf(t *testing.T, access []byte, keyLine, hmacLine string) []byte {
	t.Helper()
	lines := strings.Split(string(access), "\n")
	changed := 0
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) != 2 || f[1] != "__CHANGEME__" {
			continue
		}
		switch f[0] {
		case "KEY_BASE64":
			lines[i] = keyLine
			changed++
		case "HMAC_KEY_BASE64":
			lines[i] = hmacLine
			changed++
		}
	}
	if changed != 2 {
		t.Fatalf("replaced %d placeholder lines in access.conf, want 2", changed)
	}
	return []byte(strings.Join(lines, "\n"))
}

// TestIntegrationDebianFwknopConf runs Debian's shipped fwknopd.conf unchanged and its
// access.conf with only the two __CHANGEME__ keys filled in from 'sesame keygen --fwknop',
// with 'sesame server --fwknop-conf DIR', and the real fwknop client with those keys opens
// tcp/22 (data both ways) through the admin's DROP rule, for the client's address only.
//
// The shipped fwknopd.conf sets nothing, so sesame sniffs udp/62201 on every interface and
// keeps its replay cache in the default state directory, /var/lib/sesame: the daemon runs in
// its own mount namespace with a temporary directory mounted on /var/lib, so the test leaves
// nothing on the host.
func TestIntegrationDebianFwknopConf(t *testing.T) {
	skipWithoutFwknop(t)
	bed := skipUnlessRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc := netip.AddrPortFrom(netnsbed.Server4, 22)
	if _, err := netnsbed.Listen(ctx, bed.Server, svc); err != nil {
		t.Fatal(err)
	}
	extra, err := bed.AddClientAddrs(ctx, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	iptables(t, bed.Server, "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "DROP")
	if canConnect(t, bed, netnsbed.Client4, svc) {
		t.Fatal("port 22 is open before any SPA packet: the DROP rule did not close it")
	}

	keyLine, hmacLine, key, hmac := fwknopKeys(t)
	dir := t.TempDir()
	writeSecret(t, filepath.Join(dir, "fwknopd.conf"), pristine(t, debianFwknopdConf, debianFwknopdConfSum))
	writeSecret(t, filepath.Join(dir, "access.conf"), fillAccessConf(t, pristine(t, debianAccessConf, debianAccessConfSum), keyLine, hmacLine))
	varLib := t.TempDir()
	d := startDaemon(t, bed.Server, "sesame server running", "sh", "-c", `mount --bind "$1" /var/lib && shift && exec "$@"`,
		"sh", varLib, sesameBin, "server", "--fwknop-conf", dir, "--log-level", "debug")

	fwknop := func(src netip.Addr) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := netnsbed.Command(ctx, bed.Client, "fwknop", "--no-rc-file", "--no-save-args", "-D", netnsbed.Server4.String(),
			"-A", "tcp/22", "-a", src.String(), "--key-base64-rijndael", key, "--use-hmac", "--key-base64-hmac", hmac)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("fwknop: %v\n%s", err, out)
		}
	}
	fwknop(netnsbed.Client4)
	if !eventually(t, bed, netnsbed.Client4, svc, true) {
		t.Fatalf("no greeting and echo on port 22 after the fwknop packet; log:\n%s", tail(d.Output()))
	}
	if !waitDecision(d, netnsbed.Client4, "stanza#1", "accepted", time.Second) {
		t.Error("no accepted line for stanza#1")
	}
	if canConnect(t, bed, extra[0], svc) {
		t.Error("another source reaches port 22")
	}
	if _, err := os.Stat(filepath.Join(varLib, "sesame", "replay.db")); err != nil {
		t.Errorf("replay cache not in the default state directory: %v", err)
	}
	if _, err := os.Stat("/var/lib/sesame/replay.db"); err == nil {
		t.Error("the daemon wrote /var/lib/sesame/replay.db on the host")
	}
}

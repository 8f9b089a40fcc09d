//go:build linux

package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// editorWrite writes files the way an admin's editor does under the default umask 022: the
// directory 0777 &^ 022 = 0755, each file 0666 &^ 022 = 0644. It checks the modes it got.
func editorWrite(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	for name := range files {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o644 {
			t.Fatalf("%s: mode %v under umask 022, want 0644", name, st.Mode().Perm())
		}
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("%s: %v, %v; want mode 0755", dir, st, err)
	}
}

// startOrRefuse runs sesame with args in the bed's server namespace and waits until it either
// runs ("sesame server running") or exits. It reports whether it runs; the daemon is stopped
// when the test ends.
func startOrRefuse(t *testing.T, bed *netnsbed.Bed, args ...string) (*daemon, bool) {
	t.Helper()
	d := startDaemon(t, bed.Server, "", sesameBin, args...)
	running := func() bool { return strings.Contains(d.Output(), "sesame server running") }
	if !waitFor(10*time.Second, func() bool {
		select {
		case <-d.Done():
			return true
		default:
			return running()
		}
	}) {
		t.Fatalf("sesame neither ran nor exited in 10 s:\n%s", d.Output())
	}
	return d, running()
}

// TestIntegrationUmaskConfigs: configuration files an admin writes with an editor under the
// default umask (0644 files in a 0755 directory). A native sesame.toml and a knockd.conf hold
// no secrets: sesame runs them, and the door opens (data both ways). fwknop's access.conf
// holds keys: sesame either runs it or refuses with a message that names the file and says
// chmod 600.
func TestIntegrationUmaskConfigs(t *testing.T) {
	t.Run("sesame.toml", func(t *testing.T) {
		bed := skipUnlessRoot(t)
		svc := listen(t, bed, families[0])
		dir := filepath.Join(t.TempDir(), "sesame")
		state := t.TempDir()
		cfg := strings.ReplaceAll(fmt.Sprintf(doorConfig, "nftables", "5s", "30s"), "STATE_DIR", state)
		editorWrite(t, dir, map[string][]byte{"sesame.toml": []byte(cfg)})
		path := filepath.Join(dir, "sesame.toml")
		d, ok := startOrRefuse(t, bed, "server", "-c", path, "--log-level", "debug")
		if !ok {
			t.Fatalf("sesame refused a 0644 sesame.toml:\n%s", d.Output())
		}
		if canConnect(t, bed, netnsbed.Client4, svc) {
			t.Fatal("protected port open before the knock")
		}
		knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, seq...)
		if !eventually(t, bed, netnsbed.Client4, svc, true) {
			t.Fatalf("no greeting and echo after the knock:\n%s", tail(d.Output()))
		}
	})

	t.Run("knockd.conf", func(t *testing.T) {
		bed := skipUnlessRoot(t)
		svc := listen(t, bed, families[0])
		iptables(t, bed.Server, "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP")
		if canConnect(t, bed, netnsbed.Client4, svc) {
			t.Fatal("the DROP rule does not close the port")
		}
		ipt, err := exec.LookPath("iptables")
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "knockd")
		editorWrite(t, dir, map[string][]byte{"knockd.conf": []byte(`[options]
	UseSyslog

[openSSH]
	sequence    = 7000,8000,9000
	seq_timeout = 5
	command     = ` + ipt + ` -I INPUT -s %IP% -p tcp --dport 2222 -j ACCEPT
	tcpflags    = syn
`)})
		d, ok := startOrRefuse(t, bed, "server", "--knockd-conf", filepath.Join(dir, "knockd.conf"), "--log-level", "debug")
		if !ok {
			t.Fatalf("sesame refused a 0644 knockd.conf:\n%s", d.Output())
		}
		knockFrom(t, bed, netnsbed.Client4, netnsbed.Server4, "7000/tcp", "8000/tcp", "9000/tcp")
		if !eventually(t, bed, netnsbed.Client4, svc, true) {
			t.Fatalf("no greeting and echo after the knock:\n%s", tail(d.Output()))
		}
	})

	// fwknopd warns about a 0644 access.conf and runs; so does sesame, naming the file and the fix.
	t.Run("fwknop", func(t *testing.T) {
		skipWithoutFwknop(t)
		bed := skipUnlessRoot(t)
		svc := listen(t, bed, families[0])
		dir := filepath.Join(t.TempDir(), "fwknop")
		run := t.TempDir()
		editorWrite(t, dir, map[string][]byte{
			"fwknopd.conf": []byte(fmt.Sprintf("ENABLE_UDP_SERVER Y;\nUDPSERV_PORT %d;\n", spaPort)),
			"access.conf": []byte("SOURCE ANY\nKEY_BASE64 " + fwknopKey + "\nHMAC_KEY_BASE64 " + fwknopHMAC +
				"\nOPEN_PORTS tcp/2222\n"),
		})
		d, ok := startOrRefuse(t, bed, "server", "--fwknop-conf", dir, "--state-dir", run, "--log-level", "debug")
		if !ok {
			t.Fatalf("sesame refused a 0644 access.conf (fwknopd warns and runs):\n%s", d.Output())
		}
		access := filepath.Join(dir, "access.conf")
		if out := d.Output(); !strings.Contains(out, access) || !strings.Contains(out, "chmod 600") {
			t.Fatalf("no warning naming %s and chmod 600:\n%s", access, out)
		}
		fwknopClient(t, bed, "-A", "tcp/2222", "-a", netnsbed.Client4.String())
		if !eventually(t, bed, netnsbed.Client4, svc, true) {
			t.Fatalf("no greeting and echo after the fwknop packet:\n%s", tail(d.Output()))
		}
	})
}

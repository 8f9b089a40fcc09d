//go:build linux

package e2e

import (
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
)

// sshBed is a real sshd in a bed's server namespace on port 2222 (both families), with its own
// host key, and a client key it accepts, in a temporary directory.
type sshBed struct {
	dir        string // keys, sshd_config, known_hosts
	clientKey  string // the client's private key
	knownHosts string
}

// startSSHD runs the real OpenSSH server, `sshd -D -e -f CONFIG`, in ns; stopped when the test ends.
func startSSHD(t *testing.T, ns string) *sshBed {
	t.Helper()
	for _, bin := range []string{"/usr/sbin/sshd", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not installed (packages openssh-server, openssh-client): %v", bin, err)
		}
	}
	// sshd's privilege separation directory (its systemd unit makes it).
	if _, err := os.Stat("/run/sshd"); os.IsNotExist(err) {
		if err := os.Mkdir("/run/sshd", 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove("/run/sshd") })
	}
	s := &sshBed{dir: t.TempDir()}
	keygen := func(name string) {
		out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", filepath.Join(s.dir, name)).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh-keygen %s: %v\n%s", name, err, out)
		}
	}
	keygen("host_key")
	keygen("client_key")
	s.clientKey = filepath.Join(s.dir, "client_key")
	pub, err := os.ReadFile(s.clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	hostPub, err := os.ReadFile(filepath.Join(s.dir, "host_key.pub"))
	if err != nil {
		t.Fatal(err)
	}
	hk := strings.Join(strings.Fields(string(hostPub))[:2], " ")
	s.knownHosts = filepath.Join(s.dir, "known_hosts")
	known := fmt.Sprintf("[%s]:2222 %s\n[%s]:2222 %s\n", netnsbed.Server4, hk, netnsbed.Server6, hk)
	if err := os.WriteFile(s.knownHosts, []byte(known), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(s.dir, "sshd_config")
	cfg := fmt.Sprintf(`Port 2222
ListenAddress %s
ListenAddress [%s]
HostKey %s
AuthorizedKeysFile %s
PidFile none
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
LogLevel VERBOSE
`, netnsbed.Server4, netnsbed.Server6, filepath.Join(s.dir, "host_key"), filepath.Join(s.dir, "authorized_keys"))
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := netnsbed.StartDaemon(ns, "/usr/sbin/sshd", "-D", "-e", "-f", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("sshd output:\n%s", d.Output())
		}
	})
	if !netnsbed.WaitFor(10*time.Second, func() bool {
		return strings.Count(d.Output(), "Server listening on") >= 2
	}) {
		t.Fatalf("sshd did not start; output:\n%s", d.Output())
	}
	return s
}

// ssh runs the real OpenSSH client in the client namespace with proxy as its ProxyCommand,
// and returns its stdout, stderr and error.
func (s *sshBed) ssh(t *testing.T, ns string, host netip.Addr, proxy string, remote ...string) (string, string, error) {
	t.Helper()
	return s.sshIn(t, ns, host, proxy, "", remote...)
}

// sshIn is ssh with stdin as the client's standard input.
func (s *sshBed) sshIn(t *testing.T, ns string, host netip.Addr, proxy, stdin string, remote ...string) (string, string, error) {
	t.Helper()
	args := []string{"-F", "/dev/null",
		"-o", "ProxyCommand=" + proxy,
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + s.knownHosts,
		"-o", "IdentitiesOnly=yes",
		"-o", "ConnectTimeout=20",
		"-i", s.clientKey,
		"-p", "2222",
		"root@" + host.String()}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := netnsbed.Command(ctx, ns, "ssh", append(args, remote...)...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Dir = s.dir
	err := cmd.Run()
	return stdout.String(), stderr.String(), err
}

// TestIntegrationSSHProxy: the real ssh, with `sesame ssh-proxy` as its ProxyCommand, reaches
// the real sshd behind sesame's gate in one command: the SPA packet (or the knock) opens the
// port, ssh-proxy connects as soon as it is open, and the session carries data both ways (the
// key exchange, then "echo hello" prints hello, and stdin reaches the remote cat). A wrong key
// fails cleanly: non-zero exit and ssh-proxy's message. IPv4 and IPv6.
func TestIntegrationSSHProxy(t *testing.T) {
	bed := skipUnlessRoot(t)
	s := startSSHD(t, bed.Server)
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(sesameBin, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sesame %v: %v\n%s", args, err, out)
		}
	}
	run("keygen", "-o", "alice.key")
	run("keygen", "-o", "mallory.key")
	cfg := fmt.Sprintf(`[server]
state_dir = %q

[spa]
listen = "udp/62201"
sniff = true

[[spa.client]]
name = "alice"
key_file = %q
open = ["tcp/2222"]
default_open_for = "3s"

[[door]]
name = "ssh"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
sequence_timeout = "5s"
open = ["tcp/2222"]
open_for = "3s"
`, dir, filepath.Join(dir, "alice.key"))
	path := filepath.Join(dir, "sesame.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, bed.Server, "sesame server running", sesameBin, "server", "-c", path)

	spa := func(key string) string {
		return fmt.Sprintf("%s ssh-proxy --id alice --key-file %s --wait 3s %%h %%p", sesameBin, filepath.Join(dir, key))
	}
	closed := func(dst netip.Addr) bool {
		c, err := netnsbed.Dial(bed.Client, netip.Addr{}, netip.AddrPortFrom(dst, 2222), 300*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	}
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			if !closed(fam.server) {
				t.Fatal("sshd reachable before any SPA packet: the gate is not closed")
			}
			// The wrong key: ssh fails, with ssh-proxy's message on its stderr.
			_, stderr, err := s.ssh(t, bed.Client, fam.server, spa("mallory.key"), "true")
			if err == nil {
				t.Fatal("ssh with a wrong key succeeded")
			}
			want := fmt.Sprintf("no answer from %s after 3s", netip.AddrPortFrom(fam.server, 2222))
			if !strings.Contains(stderr, want) || !strings.Contains(stderr, "the SPA packet was sent; check the key") {
				t.Fatalf("wrong key: stderr lacks %q and the advice:\n%s", want, stderr)
			}
			// The right key: one command, true succeeds.
			start := time.Now()
			if _, stderr, err := s.ssh(t, bed.Client, fam.server, spa("alice.key"), "true"); err != nil {
				t.Fatalf("ssh true: %v\n%s", err, stderr)
			}
			took := time.Since(start)
			// For comparison: the same ssh without a proxy, straight to the port the grant still opens.
			start = time.Now()
			if _, stderr, err := s.ssh(t, bed.Client, fam.server, "none", "true"); err != nil {
				t.Fatalf("ssh true without a proxy, port open: %v\n%s", err, stderr)
			}
			t.Logf("%s: ssh true through SPA + ssh-proxy took %v; straight to the open port %v", fam.name, took, time.Since(start))
			// Data both ways: the remote echo prints hello, and stdin reaches the remote cat.
			out, stderr, err := s.ssh(t, bed.Client, fam.server, spa("alice.key"), "echo hello")
			if err != nil || out != "hello\n" {
				t.Fatalf("ssh echo hello: %q, %v\n%s", out, err, stderr)
			}
			out, stderr, err = s.sshIn(t, bed.Client, fam.server, spa("alice.key"), "ping from stdin\n", "cat")
			if err != nil || out != "ping from stdin\n" {
				t.Fatalf("ssh cat: %q, %v\n%s", out, err, stderr)
			}
		})
	}
	t.Run("knock", func(t *testing.T) {
		// The SPA grant above ends after open_for; then only the knock can open the port.
		if !netnsbed.WaitFor(6*time.Second, func() bool { return closed(netnsbed.Server4) }) {
			t.Fatal("the SPA grant did not expire")
		}
		knock := func(seq string) string {
			return fmt.Sprintf("%s ssh-proxy --knock %s --knock-delay 20 --wait 3s %%h %%p", sesameBin, seq)
		}
		_, stderr, err := s.ssh(t, bed.Client, netnsbed.Server4, knock("7000,9000,8000:udp"), "true")
		if err == nil || !strings.Contains(stderr, "the knock sequence 7000,9000,8000:udp was sent") {
			t.Fatalf("wrong sequence: %v\n%s", err, stderr)
		}
		out, stderr, err := s.ssh(t, bed.Client, netnsbed.Server4, knock("7000,8000:udp,9000"), "echo hello")
		if err != nil || out != "hello\n" {
			t.Fatalf("knock + ssh echo hello: %q, %v\n%s", out, err, stderr)
		}
	})
}

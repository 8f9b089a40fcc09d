//go:build linux

package dist

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// maxExposure is the highest overall exposure level systemd-analyze security may give the unit.
const maxExposure = 2.0

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("skipping: %s is not installed (Debian package systemd); CI has it", name)
	}
	return p
}

var exposureRE = regexp.MustCompile(`Overall exposure level for sesame\.service: ([0-9]+\.[0-9]+)`)

// TestUnitExposure: systemd-analyze security scores the unit at most maxExposure, and its own
// --threshold check passes (it takes tenths: the printed 2.0 is 20).
func TestUnitExposure(t *testing.T) {
	tool := needTool(t, "systemd-analyze")
	out, err := exec.Command(tool, "security", "--offline=true", "--threshold="+strconv.Itoa(int(maxExposure*10)), "--no-pager", "sesame.service").CombinedOutput()
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("no overall exposure level in the output (%v):\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("exposure of dist/sesame.service: %.1f (at most %.1f)", score, maxExposure)
	if err != nil || score > maxExposure {
		t.Errorf("exposure %.1f, want at most %.1f (%v); the settings that cost:\n%s", score, maxExposure, err, costly(out))
	}
}

// costly returns the lines of a systemd-analyze security report that add to the exposure.
func costly(out []byte) string {
	var b strings.Builder
	for l := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(l, "✗") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// TestUnitVerify: systemd-analyze verify accepts the unit, with the daemon's path pointed at an
// executable that exists here (it checks that the binary exists).
func TestUnitVerify(t *testing.T) {
	tool := needTool(t, "systemd-analyze")
	dir := t.TempDir()
	bin := filepath.Join(dir, "sesame")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	unit, err := os.ReadFile("sesame.service")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "/usr/sbin/sesame ") {
		t.Fatal("the unit does not run /usr/sbin/sesame")
	}
	path := filepath.Join(dir, "sesame.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/sbin/sesame ", bin+" ")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(tool, "verify", "--no-pager", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// unitSettings reads a unit file into key -> values (a key given twice has two values).
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || l[0] == '#' || l[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("%s: not KEY=VALUE: %q", path, l)
		}
		m[k] = append(m[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestUnitSettings: the settings the daemon's contract with systemd rests on (issue 11): notify
// start-up, the config check before start, reload by SIGHUP, an unprivileged user with exactly
// CAP_NET_ADMIN and CAP_NET_RAW, its directories, and no setting that would cut it off the
// host's netfilter.
func TestUnitSettings(t *testing.T) {
	s := unitSettings(t, "sesame.service")
	want := []struct{ key, value string }{
		{"Type", "notify"},
		{"ExecStartPre", "/usr/sbin/sesame server -c /etc/sesame/sesame.toml --check"},
		{"ExecStart", "/usr/sbin/sesame server -c /etc/sesame/sesame.toml"},
		{"ExecReload", "/bin/kill -HUP $MAINPID"},
		{"User", "sesame"},
		{"AmbientCapabilities", "CAP_NET_ADMIN CAP_NET_RAW"},
		{"CapabilityBoundingSet", "CAP_NET_ADMIN CAP_NET_RAW"},
		{"NoNewPrivileges", "yes"},
		{"StateDirectory", "sesame"},
		{"RuntimeDirectory", "sesame"},
		{"ConfigurationDirectory", "sesame"},
		{"UMask", "0077"},
		{"RestrictAddressFamilies", "AF_UNIX AF_NETLINK AF_INET AF_INET6 AF_PACKET"},
		{"SystemCallFilter", "@system-service"},
	}
	for _, w := range want {
		if !slices.Contains(s[w.key], w.value) {
			t.Errorf("%s=%q, want %q", w.key, s[w.key], w.value)
		}
	}
	if len(s["WatchdogSec"]) == 0 {
		t.Error("no WatchdogSec=")
	}
	for _, k := range []string{"PrivateNetwork", "PrivateUsers", "DynamicUser"} {
		if v, ok := s[k]; ok {
			t.Errorf("%s=%v: it would cut the daemon off the host's netfilter or its state", k, v)
		}
	}
}

// TestSysusersAndTmpfiles: systemd-sysusers creates the sesame user from dist/sesame.sysusers
// in an empty root, and systemd-tmpfiles then creates the directories with the owners and
// modes the daemon's file checks accept (owned by root or by the user running sesame).
func TestSysusersAndTmpfiles(t *testing.T) {
	sysusers := needTool(t, "systemd-sysusers")
	tmpfiles := needTool(t, "systemd-tmpfiles")
	if os.Geteuid() != 0 {
		t.Skip("skipping: systemd-tmpfiles sets owners only as root")
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	abs := func(name string) string { p, _ := filepath.Abs(name); return p }
	if out, err := exec.Command(sysusers, "--root="+root, abs("sesame.sysusers")).CombinedOutput(); err != nil {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	passwd, err := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if err != nil {
		t.Fatal(err)
	}
	var uid, gid uint32
	for l := range strings.SplitSeq(string(passwd), "\n") {
		f := strings.Split(l, ":")
		if len(f) == 7 && f[0] == "sesame" {
			u, _ := strconv.ParseUint(f[2], 10, 32)
			g, _ := strconv.ParseUint(f[3], 10, 32)
			uid, gid = uint32(u), uint32(g)
			if f[5] != "/var/lib/sesame" {
				t.Errorf("home %q, want /var/lib/sesame", f[5])
			}
			if u == 0 || u >= 1000 {
				t.Errorf("uid %d, want a system user", u)
			}
		}
	}
	if uid == 0 {
		t.Fatalf("no sesame user in /etc/passwd:\n%s", passwd)
	}
	if out, err := exec.Command(tmpfiles, "--create", "--root="+root, abs("sesame.tmpfiles")).CombinedOutput(); err != nil {
		t.Fatalf("systemd-tmpfiles: %v\n%s", err, out)
	}
	dirs := []struct {
		path     string
		uid, gid uint32
		mode     os.FileMode
	}{
		{"etc/sesame", 0, gid, 0o750},
		{"var/lib/sesame", uid, gid, 0o700},
		{"run/sesame", uid, gid, 0o750},
	}
	for _, d := range dirs {
		fi, err := os.Stat(filepath.Join(root, d.path))
		if err != nil {
			t.Error(err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		if !fi.IsDir() || fi.Mode().Perm() != d.mode || st.Uid != d.uid || st.Gid != d.gid {
			t.Errorf("/%s: %v %d:%d, want a directory %v %d:%d", d.path, fi.Mode(), st.Uid, st.Gid, d.mode, d.uid, d.gid)
		}
	}
}

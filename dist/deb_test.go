//go:build linux

package dist

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shipped is what the package must hold, with its mode and owner.
var shipped = map[string]struct {
	mode         fs.FileMode
	owner, group string
}{
	"/usr/sbin/sesame":                              {0o755, "root", "root"},
	"/usr/lib/systemd/system/sesame.service":        {0o644, "root", "root"},
	"/usr/lib/sysusers.d/sesame.conf":               {0o644, "root", "root"},
	"/usr/lib/tmpfiles.d/sesame.conf":               {0o644, "root", "root"},
	"/etc/sesame/sesame.toml":                       {0o640, "root", "sesame"},
	"/usr/share/man/man8/sesame.8.gz":               {0o644, "root", "root"},
	"/usr/share/man/man8/sesame-server.8.gz":        {0o644, "root", "root"},
	"/usr/share/man/man8/sesame-demo.8.gz":          {0o644, "root", "root"},
	"/usr/share/man/man8/sesame-status.8.gz":        {0o644, "root", "root"},
	"/usr/share/man/man8/sesame-grant.8.gz":         {0o644, "root", "root"},
	"/usr/share/man/man8/sesame-revoke.8.gz":        {0o644, "root", "root"},
	"/usr/share/man/man1/sesame-knock.1.gz":         {0o644, "root", "root"},
	"/usr/share/man/man1/sesame-open.1.gz":          {0o644, "root", "root"},
	"/usr/share/man/man1/sesame-keygen.1.gz":        {0o644, "root", "root"},
	"/usr/share/man/man1/sesame-version.1.gz":       {0o644, "root", "root"},
	"/usr/share/man/man1/sesame-help.1.gz":          {0o644, "root", "root"},
	"/usr/share/bash-completion/completions/sesame": {0o644, "root", "root"},
	"/usr/share/zsh/vendor-completions/_sesame":     {0o644, "root", "root"},
	"/usr/share/doc/sesame/README.Debian":           {0o644, "root", "root"},
	"/usr/share/doc/sesame/copyright":               {0o644, "root", "root"},
}

const (
	conffile = "/etc/sesame/sesame.toml"
	stateDir = "/var/lib/sesame"
)

// TestIntegrationDebPackage builds the package with dist/deb.sh, installs it with dpkg on
// this machine, checks what it installed, reinstalls it over an edited configuration,
// removes it and purges it. The package is purged when the test ends, also on failure, and
// the user sesame removed if the test made it.
func TestIntegrationDebPackage(t *testing.T) {
	pkg, version := buildPackage(t)
	dir := filepath.Dir(pkg)
	arch := strings.TrimSpace(run(t, "dpkg", "--print-architecture"))
	if want := filepath.Join(dir, fmt.Sprintf("sesame_%s_%s.deb", version, arch)); pkg != want {
		t.Fatalf("deb.sh wrote %s, want %s", pkg, want)
	}

	// The package's contents, before it touches the machine.
	listed := map[string]string{} // path -> "perms owner/group"
	for _, l := range strings.Split(strings.TrimSpace(run(t, "dpkg-deb", "-c", pkg)), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c: odd line %q", l)
		}
		listed[strings.TrimSuffix(strings.TrimPrefix(f[5], "."), "/")] = f[0] + " " + f[1]
	}
	for path, w := range shipped {
		want := fs.FileMode(w.mode).String() + " " + w.owner + "/" + w.group
		if got, ok := listed[path]; !ok {
			t.Errorf("package lacks %s", path)
		} else if got != want {
			t.Errorf("package: %s is %s, want %s", path, got, want)
		}
	}
	if got := run(t, "dpkg-deb", "-I", pkg, "conffiles"); got != conffile+"\n" {
		t.Errorf("conffiles: %q, want %q", got, conffile+"\n")
	}
	files := packageFiles(listed)

	purgeAtEnd(t)
	if out, err := dpkg("-i", pkg); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	if st := status(t); st != "install ok installed" {
		t.Fatalf("after dpkg -i: status %q", st)
	}
	if _, err := user.Lookup("sesame"); err != nil {
		t.Fatalf("postinst made no user sesame: %v", err)
	}
	if got := run(t, "dpkg-query", "-W", "-f=${Conffiles}", "sesame"); !strings.Contains(got, conffile+" ") {
		t.Errorf("dpkg-query: conffiles %q, want %s", got, conffile)
	}
	for path, w := range shipped {
		checkFile(t, path, w.mode, w.owner, w.group)
	}
	if fi, err := os.Stat(stateDir); err != nil || !fi.IsDir() {
		t.Errorf("systemd-tmpfiles made no %s: %v", stateDir, err)
	}

	if got := run(t, "/usr/sbin/sesame", "version"); !strings.HasPrefix(got, "sesame "+version+" ") {
		t.Errorf("sesame version: %q, want version %s", got, version)
	}
	// The shipped configuration passes --check, as root and as the daemon's user, and
	// guards nothing.
	for _, as := range [][]string{{"/usr/sbin/sesame"}, {"runuser", "-u", "sesame", "--", "/usr/sbin/sesame"}} {
		got := run(t, as[0], append(as[1:], "server", "-c", conffile, "--check")...)
		if !strings.HasPrefix(got, conffile+": ok: 0 door(s)") || strings.Contains(got, "spa") {
			t.Errorf("%v server --check: %q, want ok with no door and no SPA", as, got)
		}
	}
	checkMan(t, files)
	if got := run(t, "bash", "-c", "source /usr/share/bash-completion/bash_completion && _completion_loader sesame; complete -p sesame"); !strings.Contains(got, "-F _sesame sesame") {
		t.Errorf("bash-completion did not load /usr/share/bash-completion/completions/sesame: %q", got)
	}

	// Reinstalling (dpkg runs postinst configure with the old version) keeps an edited
	// configuration, its owner and its mode.
	edited := append(readFile(t, conffile), []byte("# edited by the test\n")...)
	if err := os.WriteFile(conffile, edited, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(conffile, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(conffile, 0, 0); err != nil {
		t.Fatal(err)
	}
	if out, err := dpkg("-i", "--force-confold", pkg); err != nil {
		t.Fatalf("dpkg -i again: %v\n%s", err, out)
	}
	if got := readFile(t, conffile); !bytes.Equal(got, edited) {
		t.Errorf("reinstall replaced the edited %s", conffile)
	}
	checkFile(t, conffile, 0o600, "root", "root")

	// Removal: everything goes but the configuration and the state directory.
	if out, err := dpkg("-r", "sesame"); err != nil {
		t.Fatalf("dpkg -r: %v\n%s", err, out)
	}
	if st := status(t); st != "deinstall ok config-files" {
		t.Errorf("after dpkg -r: status %q", st)
	}
	for _, f := range files {
		_, err := os.Lstat(f)
		switch {
		case f == conffile && err != nil:
			t.Errorf("dpkg -r removed the conffile %s", f)
		case f != conffile && err == nil:
			t.Errorf("dpkg -r left %s", f)
		}
	}
	if _, err := os.Stat(stateDir); err != nil {
		t.Errorf("dpkg -r removed %s: %v", stateDir, err)
	}

	// Purge: the configuration and the state go; the user stays (Debian keeps system users).
	if out, err := dpkg("--purge", "sesame"); err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out)
	}
	for _, p := range []string{conffile, filepath.Dir(conffile), stateDir} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("dpkg --purge left %s", p)
		}
	}
	if _, err := user.Lookup("sesame"); err != nil {
		t.Errorf("dpkg --purge removed the user sesame: %v", err)
	}
}

// TestIntegrationDebPackageAdduser installs the package where systemd-sysusers is missing
// (hidden in a private mount namespace): postinst makes the user with adduser.
func TestIntegrationDebPackageAdduser(t *testing.T) {
	pkg, _ := buildPackage(t)
	sysusers, err := exec.LookPath("systemd-sysusers")
	if err != nil {
		t.Skip("skipping: systemd-sysusers is missing already; TestIntegrationDebPackage covers adduser then")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("skipping: unshare (util-linux) is not installed")
	}
	if _, err := user.Lookup("sesame"); err == nil {
		t.Skip("skipping: the user sesame exists already, so postinst would not make it")
	}
	purgeAtEnd(t)
	script := `mount --make-rprivate / && mount --bind /dev/null "$1" && ! command -v systemd-sysusers >/dev/null && exec dpkg -i "$2"`
	cmd := exec.Command("unshare", "--mount", "sh", "-c", script, "sh", sysusers, pkg)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i without systemd-sysusers: %v\n%s", err, out)
	}
	u, err := user.Lookup("sesame")
	if err != nil {
		t.Fatalf("postinst made no user sesame with adduser: %v", err)
	}
	pw := strings.Split(strings.TrimSpace(run(t, "getent", "passwd", "sesame")), ":")
	uid, _ := strconv.Atoi(u.Uid)
	if len(pw) != 7 || uid == 0 || uid >= 1000 || pw[5] != stateDir || pw[6] != "/usr/sbin/nologin" {
		t.Errorf("user sesame: %q, want a system user with home %s and shell /usr/sbin/nologin", pw, stateDir)
	}
	if g, err := user.LookupGroupId(u.Gid); err != nil || g.Name != "sesame" {
		t.Errorf("user sesame: primary group %v (%v), want sesame", g, err)
	}
	checkFile(t, conffile, 0o640, "root", "sesame")
	if st := status(t); st != "install ok installed" {
		t.Errorf("status %q", st)
	}
}

// buildPackage skips the test unless it can install packages, then builds the package with
// dist/deb.sh into a temporary directory and returns its path and version.
func buildPackage(t *testing.T) (pkg, version string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: installs a Debian package with dpkg: needs root (CI runs it as root)")
	}
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query", "go", "git", "runuser"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping: %s is not installed (this test installs the package on a Debian system)", tool)
		}
	}
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "sesame").Output(); err == nil && strings.TrimSpace(string(out)) != "" && !strings.Contains(string(out), "not-installed") {
		t.Skipf("skipping: a sesame package is already on this machine (%s); this test installs and purges its own", out)
	}
	out := strings.TrimSpace(run(t, "bash", "deb.sh", t.TempDir()))
	pkg = out[strings.LastIndex(out, "\n")+1:]
	return pkg, strings.TrimSpace(run(t, "dpkg-deb", "-f", pkg, "Version"))
}

// purgeAtEnd purges the package when the test ends, also on failure, and removes the user
// and group sesame and the state directory if they were not there before.
func purgeAtEnd(t *testing.T) {
	t.Helper()
	_, err := user.Lookup("sesame")
	userBefore := err == nil
	_, err = user.LookupGroup("sesame")
	groupBefore := err == nil
	_, err = os.Lstat(stateDir)
	stateBefore := err == nil
	t.Cleanup(func() {
		if out, err := dpkg("--purge", "sesame"); err != nil {
			t.Errorf("cleanup: dpkg --purge sesame: %v\n%s", err, out)
		}
		if _, err := os.Lstat(stateDir); err == nil && !stateBefore {
			t.Errorf("cleanup: %s left after purge; removing it", stateDir)
			os.RemoveAll(stateDir)
		}
		if _, err := user.Lookup("sesame"); err == nil && !userBefore {
			if out, err := exec.Command("userdel", "sesame").CombinedOutput(); err != nil {
				t.Errorf("cleanup: userdel sesame: %v\n%s", err, out)
			}
		}
		if _, err := user.LookupGroup("sesame"); err == nil && !groupBefore {
			if out, err := exec.Command("groupdel", "sesame").CombinedOutput(); err != nil {
				t.Errorf("cleanup: groupdel sesame: %v\n%s", err, out)
			}
		}
	})
}

// TestExampleDoor checks that the door the shipped configuration shows, once uncommented,
// is a valid door: the example is not broken.
func TestExampleDoor(t *testing.T) {
	text := string(readFile(t, "sesame.toml"))
	i := strings.Index(text, "#[[door]]\n")
	if i < 0 {
		t.Fatal("sesame.toml: no #[[door]] example")
	}
	block, _, _ := strings.Cut(text[i:], "\n\n")
	door := regexp.MustCompile(`(?m)^#`).ReplaceAllString(block, "")
	for _, l := range strings.Split(text, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") && l != "[server]" {
			t.Errorf("sesame.toml: line %q is not commented out: the shipped file must open nothing", l)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "sesame")
	build := exec.Command("go", "build", "-o", bin, "../cmd/sesame")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name, config, want string
	}{
		{"as shipped", text, "ok: 0 door(s)"},
		{"door uncommented", text + "\n" + door + "\n", `door "ssh": sequence [tcp/7000 udp/8000 tcp/9000], timeout 5s, open [tcp/22] for 30s`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "sesame.toml")
			if err := os.WriteFile(path, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(bin, "server", "-c", path, "--check").CombinedOutput()
			if err != nil || !strings.Contains(string(out), tc.want) {
				t.Errorf("--check: %v: %s, want %q", err, out, tc.want)
			}
		})
	}
}

// packageFiles returns the paths of the package's files (not its directories).
func packageFiles(listed map[string]string) []string {
	var files []string
	for p, perms := range listed {
		if !strings.HasPrefix(perms, "d") {
			files = append(files, p)
		}
	}
	sort.Strings(files)
	return files
}

// checkMan checks every installed man page with man --warnings and lexgrog.
func checkMan(t *testing.T, files []string) {
	t.Helper()
	for _, tool := range []string{"man", "lexgrog"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Errorf("%s is not installed (man-db; .ci/deps.sh installs it)", tool)
			return
		}
	}
	pages := 0
	for _, f := range files {
		if !strings.HasPrefix(f, "/usr/share/man/") {
			continue
		}
		pages++
		cmd := exec.Command("man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", f)
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "LC_ALL=C.UTF-8")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("man --warnings %s: %v\n%s", f, err, stderr.String())
		}
		name := strings.TrimSuffix(filepath.Base(f), ".gz")
		name = name[:strings.LastIndex(name, ".")]
		out, err := exec.Command("lexgrog", f).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), f+`: "`+name+` - `) {
			t.Errorf("lexgrog %s: %v: %s", f, err, out)
		}
	}
	if pages < 11 {
		t.Errorf("%d man pages installed, want sesame(8) and one per command", pages)
	}
	if got := strings.TrimSpace(run(t, "man", "-w", "sesame-server")); got != "/usr/share/man/man8/sesame-server.8.gz" {
		t.Errorf("man -w sesame-server: %q", got)
	}
}

func checkFile(t *testing.T, path string, mode fs.FileMode, owner, group string) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("not installed: %v", err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	u, _ := user.LookupId(strconv.Itoa(int(st.Uid)))
	g, _ := user.LookupGroupId(strconv.Itoa(int(st.Gid)))
	switch {
	case !fi.Mode().IsRegular() || fi.Mode().Perm() != mode:
		t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
	case u == nil || u.Username != owner || g == nil || g.Name != group:
		t.Errorf("%s: owner %d:%d, want %s:%s", path, st.Uid, st.Gid, owner, group)
	}
}

func status(t *testing.T) string {
	t.Helper()
	return strings.TrimSpace(run(t, "dpkg-query", "-W", "-f=${Status}", "sesame"))
}

// dpkg runs dpkg non-interactively, waiting (up to 2 minutes) while another dpkg or apt
// holds the lock.
func dpkg(args ...string) (string, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cmd := exec.Command("dpkg", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err == nil || !bytes.Contains(out, []byte("lock")) || time.Now().After(deadline) {
			return string(out), err
		}
		time.Sleep(2 * time.Second)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

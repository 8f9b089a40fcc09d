package control

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/control/controltest"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/server"
)

// The helper subprocess: the test binary re-executed with helperEnv set runs one client call
// against the socket in helperSocket and prints "ok ..." or "err ...".
const (
	helperEnv    = "SESAME_CONTROL_TEST_HELPER"
	helperSocket = "SESAME_CONTROL_TEST_SOCKET"
)

func TestMain(m *testing.M) {
	if action := os.Getenv(helperEnv); action != "" {
		os.Exit(runHelper(action, os.Getenv(helperSocket)))
	}
	os.Exit(m.Run())
}

func runHelper(action, socket string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := NewClient(socket)
	var err error
	switch action {
	case "status":
		var st server.Status
		st, err = c.Status(ctx)
		if err == nil {
			fmt.Printf("ok version %s\n", st.Version)
		}
	case "revoke":
		var res server.RevokeResult
		res, err = c.Revoke(ctx, server.RevokeRequest{All: true})
		if err == nil {
			fmt.Printf("ok revoked %d\n", res.Grants)
		}
	default:
		err = fmt.Errorf("unknown helper action %q", action)
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			fmt.Printf("err %d %s\n", e.Code, e.Message)
		} else {
			fmt.Printf("err %s\n", err)
		}
	}
	return 0
}

// serveT opens cfg with core and serves it until the test ends.
func serveT(t *testing.T, cfg Config, core Core) *Server {
	t.Helper()
	s, err := Open(cfg, core, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return s
}

// testGroups returns the read and admin groups to use: unused gids as root, this process's
// gid otherwise (only root may give a file to another group).
func testGroups() (string, string) {
	if os.Geteuid() == 0 {
		return strconv.Itoa(readGID), strconv.Itoa(adminGID)
	}
	g := strconv.Itoa(os.Getgid())
	return g, g
}

func fakeCore() *controltest.Core {
	return &controltest.Core{
		St: server.Status{Version: "v9"},
		Live: []server.GrantStatus{{Src: netip.MustParseAddr("198.51.100.7"), Port: netport.Port{Proto: netport.TCP, Num: 22},
			Remaining: 9000, By: "ssh", Kind: server.GrantDoor}},
	}
}

func TestSocketModes(t *testing.T) {
	rg, ag := testGroups()
	path := filepath.Join(t.TempDir(), "run", "control.sock")
	serveT(t, Config{Socket: path, Group: rg, AdminGroup: ag}, fakeCore())
	gid, _ := strconv.Atoi(rg)
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{filepath.Dir(path), os.ModeDir | DirMode}, {path, os.ModeSocket | SocketMode}} {
		fi, err := os.Lstat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != c.mode || int(st.Uid) != os.Geteuid() || int(st.Gid) != gid {
			t.Errorf("%s: mode %v owner %d:%d, want %v %d:%d", c.path, fi.Mode(), st.Uid, st.Gid, c.mode, os.Geteuid(), gid)
		}
	}
	st, err := NewClient(path).Status(context.Background())
	if err != nil || st.Version != "v9" || len(st.Grants) != 1 {
		t.Fatalf("status %+v, %v", st, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("socket directory holds %d files, want only the socket", len(entries))
	}
}

func TestSocketReplace(t *testing.T) {
	dir := t.TempDir()
	rg, ag := testGroups()
	t.Run("stale socket replaced", func(t *testing.T) {
		path := filepath.Join(dir, "stale.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetUnlinkOnClose(false)
		ln.Close() // a crashed daemon's socket: the file stays, nothing answers
		if _, err := NewClient(path).Status(context.Background()); err == nil || !strings.Contains(err.Error(), "(connection refused)") {
			t.Fatalf("stale socket: %v", err)
		}
		serveT(t, Config{Socket: path, Group: rg, AdminGroup: ag}, fakeCore())
		if _, err := NewClient(path).Status(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("live socket kept", func(t *testing.T) {
		path := filepath.Join(dir, "live.sock")
		serveT(t, Config{Socket: path, Group: rg, AdminGroup: ag}, fakeCore())
		_, err := Open(Config{Socket: path, Group: rg}, fakeCore(), Options{})
		if err == nil || !strings.Contains(err.Error(), "a daemon is already serving "+path+": is another sesame server running?") {
			t.Fatalf("second daemon: %v", err)
		}
		if _, err := NewClient(path).Status(context.Background()); err != nil {
			t.Fatalf("the first daemon no longer answers: %v", err)
		}
	})
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(dir, "file")
		if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Open(Config{Socket: path, Group: rg}, fakeCore(), Options{})
		if err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
			t.Fatalf("regular file: %v", err)
		}
		if b, _ := os.ReadFile(path); string(b) != "keep me" {
			t.Errorf("the file was changed: %q", b)
		}
	})
	t.Run("stop removes only its own socket", func(t *testing.T) {
		path := filepath.Join(dir, "own.sock")
		s, err := Open(Config{Socket: path, Group: rg}, fakeCore(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Serve(ctx) }()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left after stop: %v", err)
		}
		// A socket that another daemon put in its place is left alone.
		s2, err := Open(Config{Socket: path, Group: rg}, fakeCore(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(path)
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		s2.Close()
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("the other daemon's socket was removed: %v", err)
		}
	})
}

func TestClientErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		path string
		want string
	}{
		{"no socket", filepath.Join(dir, "none.sock"), "no sesame daemon at " + filepath.Join(dir, "none.sock") + ": is it running? (no such socket)"},
		{"no directory", filepath.Join(dir, "none", "x.sock"), "is it running? (no such socket)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewClient(tc.path).Status(context.Background())
			if err == nil || err.Error() != tc.want && !strings.HasSuffix(err.Error(), tc.want) || !errors.Is(err, ErrNotRunning) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
	// A 404 comes back as an *Error with the daemon's message.
	rg, _ := testGroups()
	path := filepath.Join(dir, "ok.sock")
	serveT(t, Config{Socket: path, Group: rg}, fakeCore())
	_, err := NewClient(path).Raw(context.Background(), "/v1/nothing")
	var e *Error
	if !errors.As(err, &e) || e.Code != 404 || e.Message != "no endpoint /v1/nothing (see docs/CONTROL.md)" {
		t.Fatalf("err %#v", err)
	}
}

// TestIntegrationPeerRights connects as other users (uid 65534 with chosen groups) to prove
// the rights model on a real socket: the file's group bars non-members, the server's
// SO_PEERCRED check lets the read group read but not change, and the admin group change.
func TestIntegrationPeerRights(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to run clients as other users (CI runs these as root)")
	}
	base := t.TempDir()
	// Let uid 65534 walk down to the socket's directory, which Open makes 0750 root:readGID.
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(base, "helper.test") // the test binary, where uid 65534 may run it
	if b, err := os.ReadFile(os.Args[0]); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(base, "run", "control.sock")
	core := fakeCore()
	serveT(t, Config{Socket: path, Group: strconv.Itoa(readGID), AdminGroup: strconv.Itoa(adminGID)}, core)

	helper := func(t *testing.T, action string, groups []uint32) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+action, helperSocket+"="+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: groups}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	noAccess := "err no access to " + path + ": reading needs root or membership of group 64100 (permission denied)"
	tests := []struct {
		name   string
		action string
		groups []uint32
		want   string
	}{
		{"non-member cannot read", "status", nil, noAccess},
		{"admin group alone cannot open the socket", "revoke", []uint32{adminGID}, noAccess},
		{"reader reads", "status", []uint32{readGID}, "ok version v9"},
		{"reader cannot change", "revoke", []uint32{readGID}, "err 403 changing needs root or group 64101"},
		{"admin changes", "revoke", []uint32{readGID, adminGID}, "ok revoked 1"},
		{"admin reads", "status", []uint32{adminGID, readGID}, "ok version v9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := helper(t, tc.action, tc.groups); got != tc.want {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
	core.Mu.Lock()
	revoked := core.Revoked
	core.Mu.Unlock()
	if len(revoked) != 1 || revoked[0].UID != 65534 {
		t.Errorf("revokes that reached the core: %+v, want one by uid 65534", revoked)
	}
	// Root changes too.
	if _, err := NewClient(path).Revoke(context.Background(), server.RevokeRequest{All: true}); err != nil {
		t.Errorf("root: %v", err)
	}

	// With the file opened to everyone, the server's own check still refuses non-members.
	if err := os.Chmod(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	t.Run("server refuses non-member", func(t *testing.T) {
		if got, want := helper(t, "status", []uint32{27}), "err 403 reading needs root or group 64100"; got != want {
			t.Errorf("got  %q\nwant %q", got, want)
		}
	})
}

package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A configuration whose commands run as root must not be one that others can change.
func TestReadConfigFilePermissions(t *testing.T) {
	tests := []struct {
		name    string
		mode    os.FileMode // of the file
		dirMode os.FileMode // of its directory
		link    bool        // read it through a symbolic link in a private directory
		err     string      // "{f}" is the file, "{d}" its directory
	}{
		{"private", 0o600, 0o700, false, ""},
		{"world-readable", 0o644, 0o755, false, ""},
		{"world-writable file", 0o646, 0o700, false, "configuration file {f} is writable by others (mode 0646): anyone could change it, and sesame acts on it as root: chmod o-w {f}"},
		{"world-writable directory", 0o600, 0o777, false, "directory {d} is writable by others (mode 0777): anyone could change it, and sesame acts on it as root: chmod o-w {d}"},
		{"sticky world-writable directory", 0o600, 0o777 | os.ModeSticky, false, ""},
		{"through a link to a world-writable directory", 0o600, 0o777, true, "directory {d} is writable by others"},
		{"through a link to a world-writable file", 0o666, 0o700, true, "is writable by others (mode 0666)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.err = strings.ReplaceAll(tc.err, "as root", "as "+userName(os.Geteuid()))
			d := filepath.Join(t.TempDir(), "conf")
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(d, "sesame.toml")
			if err := os.WriteFile(f, []byte("[server]\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(f, tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(d, tc.dirMode); err != nil {
				t.Fatal(err)
			}
			path := f
			if tc.link {
				path = filepath.Join(t.TempDir(), "link.toml")
				if err := os.Symlink(f, path); err != nil {
					t.Fatal(err)
				}
			}
			data, fi, err := ReadConfigFile(path)
			if tc.err == "" {
				if err != nil || string(data) != "[server]\n" || fi.Mode().Perm() != tc.mode {
					t.Fatalf("got %q, %v, %v", data, fi, err)
				}
				if _, err := Load(path, Overrides{}); err != nil {
					t.Errorf("Load: %v", err)
				}
				return
			}
			want := strings.NewReplacer("{f}", f, "{d}", d).Replace(tc.err)
			if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrUnsafe) {
				t.Fatalf("err = %v, want %q", err, want)
			}
			if _, err := Load(path, Overrides{}); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Load: err = %v, want %q", err, want)
			}
		})
	}
}

func TestReadConfigFileKinds(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := ReadConfigFile(dir); err == nil || !strings.Contains(err.Error(), "is not a regular file") {
		t.Errorf("directory: %v", err)
	}
	if _, _, err := ReadConfigFile(filepath.Join(dir, "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, maxConfigFile+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadConfigFile(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("large file: %v", err)
	}
}

// Key files: as configuration files, and also private.
func TestReadSecretFilePermissions(t *testing.T) {
	tests := []struct {
		name string
		mode os.FileMode
		err  string
	}{
		{"private", 0o600, ""},
		{"read-only", 0o400, ""},
		{"group-readable", 0o640, "is readable by group or others (mode 0640): chmod 600"},
		{"world-readable", 0o604, "is readable by group or others (mode 0604): chmod 600"},
		{"world-writable", 0o602, "is writable by others (mode 0602)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(f, []byte("KEY x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(f, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := ReadSecretFile(f)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), f) {
				t.Fatalf("err = %v, want %q and the file", err, tc.err)
			}
		})
	}
}

func TestCheckDir(t *testing.T) {
	tests := []struct {
		mode os.FileMode
		err  string
	}{
		{0o700, ""},
		{0o755, ""},
		{0o777 | os.ModeSticky, ""},
		{0o777, "state directory {d} is writable by others (mode 0777)"},
		{0o703, "state directory {d} is writable by others (mode 0703)"},
	}
	for _, tc := range tests {
		t.Run(tc.mode.String(), func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "state")
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(d, tc.mode); err != nil {
				t.Fatal(err)
			}
			err := CheckDir(d)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if want := strings.ReplaceAll(tc.err, "{d}", d); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want %q", err, want)
			}
			// Below a world-writable directory, a private one is no safer.
			sub := filepath.Join(d, "sub")
			if err := os.Mkdir(sub, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := CheckDir(sub); (err == nil) != (tc.err == "") {
				t.Errorf("subdirectory: err = %v", err)
			}
		})
	}
}

// Files of another user are refused; a group may write only if it is root's group. Needs root
// (chown).
func TestReadConfigFileOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files to another user (chown)")
	}
	const other = 4242
	tests := []struct {
		name     string
		dir      bool
		uid, gid int
		mode     os.FileMode
		err      string
	}{
		{"file of another user", false, other, 0, 0o600, "configuration file {f} is owned by uid 4242, neither root nor the user running sesame (uid 0): that user could change it: chown root {f}"},
		{"directory of another user", true, other, 0, 0o755, "directory {d} is owned by uid 4242"},
		{"file of root in another group", false, 0, other, 0o640, ""},
		{"file writable by another group", false, 0, other, 0o660, "configuration file {f} is writable by group 4242 (mode 0660): its members could change it"},
		{"file writable by root's group", false, 0, 0, 0o660, ""},
		{"directory writable by another group", true, 0, other, 0o775, "directory {d} is writable by group 4242 (mode 0775)"},
		{"sticky directory writable by another group", true, 0, other, 0o775 | os.ModeSticky, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := filepath.Join(t.TempDir(), "conf")
			if err := os.Mkdir(d, 0o700); err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(d, "sesame.toml")
			if err := os.WriteFile(f, []byte("[server]\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			p := f
			if tc.dir {
				p = d
			}
			if err := os.Chown(p, tc.uid, tc.gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, _, err := ReadConfigFile(f)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if want := strings.NewReplacer("{f}", f, "{d}", d).Replace(tc.err); err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want %q", err, want)
			}
			if tc.dir {
				if err := CheckDir(d); err == nil {
					t.Error("CheckDir accepted the directory")
				}
			}
		})
	}
}

package config

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// Size limits of the files a configuration is read from.
const (
	maxConfigFile = 4 << 20
	maxKeyFile    = 64 << 10
)

// ReadConfigFile reads a configuration file (sesame.toml, knockd.conf, fwknopd.conf,
// access.conf), whose commands and grants sesame carries out as root. It refuses one that
// someone other than root and the user running sesame could change: the file, or a directory on
// the way to it, writable by others or by a group other than root's and sesame's own (a
// directory with the sticky bit, as /tmp, is fine), or owned by another user. It does not judge who may read the file; the
// caller can, from the returned FileInfo.
func ReadConfigFile(path string) ([]byte, fs.FileInfo, error) {
	return readChecked("configuration file", path, maxConfigFile, false)
}

// ReadSecretFile reads a key file, checked as ReadConfigFile does; it also refuses one that
// group or others may read (the mode must be 0600 or stricter).
func ReadSecretFile(path string) ([]byte, error) {
	data, _, err := readChecked("key file", path, maxKeyFile, true)
	return data, err
}

// CheckDir refuses a directory that sesame keeps state in (state_dir) when someone other than
// root and the user running sesame could change it or a directory on the way to it, with the
// rules of ReadConfigFile.
func CheckDir(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state directory %s is not a directory", path)
	}
	if err := checkWriters("state directory", path, fi); err != nil {
		return err
	}
	return checkParents(path)
}

func readChecked(what, path string, limit int64, secret bool) ([]byte, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|openNonblock, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s %s is not a regular file", what, path)
	}
	if err := checkWriters(what, path, fi); err != nil {
		return nil, nil, err
	}
	if err := checkParents(path); err != nil {
		return nil, nil, err
	}
	if secret && unixModes && fi.Mode().Perm()&0o077 != 0 {
		return nil, nil, fmt.Errorf("%s %s is readable by group or others (mode %04o): chmod 600 %s", what, path, fi.Mode().Perm(), path)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", what, path, err)
	}
	if int64(len(data)) > limit {
		return nil, nil, fmt.Errorf("%s %s is larger than %d bytes", what, path, limit)
	}
	return data, fi, nil
}

// checkParents checks every directory from path's up to the root, for the path as given and,
// when a symbolic link is on the way, for the path it resolves to.
func checkParents(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	paths := []string{abs}
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		paths = append(paths, real)
	}
	seen := map[string]bool{}
	for _, p := range paths {
		for dir := filepath.Dir(p); !seen[dir]; dir = filepath.Dir(dir) {
			seen[dir] = true
			fi, err := os.Stat(dir)
			if err != nil {
				return fmt.Errorf("directory %s: %w", dir, err)
			}
			if err := checkWriters("directory", dir, fi); err != nil {
				return fmt.Errorf("%w (it holds %s)", err, path)
			}
		}
	}
	return nil
}

// ErrUnsafe marks the refusal of a file or directory that someone else could change.
var ErrUnsafe = errors.New("unsafe file permissions")

type unsafeError struct{ msg string }

func (e *unsafeError) Error() string { return e.msg }
func (e *unsafeError) Unwrap() error { return ErrUnsafe }

// checkWriters refuses a file or directory that a user other than root and the one running
// sesame could change.
func checkWriters(what, path string, fi fs.FileInfo) error {
	if !unixModes {
		return nil
	}
	m := fi.Mode()
	sticky := fi.IsDir() && m&fs.ModeSticky != 0
	uid, gid, ok := owner(fi)
	euid := os.Geteuid()
	who := "root"
	if euid != 0 {
		who = strconv.Itoa(euid)
	}
	switch {
	case m.Perm()&0o002 != 0 && !sticky:
		return &unsafeError{fmt.Sprintf("%s %s is writable by others (mode %04o): anyone could change it, and sesame acts on it as %s: chmod o-w %s",
			what, path, m.Perm(), userName(euid), path)}
	case m.Perm()&0o020 != 0 && !sticky && ok && gid != 0 && int(gid) != os.Getegid():
		return &unsafeError{fmt.Sprintf("%s %s is writable by group %d (mode %04o): its members could change it, and sesame acts on it as %s: chmod g-w %s",
			what, path, gid, m.Perm(), userName(euid), path)}
	case ok && uid != 0 && int(uid) != euid:
		return &unsafeError{fmt.Sprintf("%s %s is owned by uid %d, neither root nor the user running sesame (uid %d): that user could change it: chown %s %s",
			what, path, uid, euid, who, path)}
	}
	return nil
}

func userName(euid int) string {
	if euid == 0 {
		return "root"
	}
	return "uid " + strconv.Itoa(euid)
}

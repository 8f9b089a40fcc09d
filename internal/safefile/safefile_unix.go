//go:build unix

// Package safefile opens the files a root daemon writes (its log file, its pid file) without following links planted in their place.
package safefile

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// Open opens a file the server writes (log_file, pid_file) without following a symbolic link in
// its place, so that whoever can write its directory cannot point root's writes at another
// file. It refuses what is not a regular file, and one owned by a user other than root and the
// one running sesame.
func Open(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link: give the file itself", path)
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch euid := os.Geteuid(); {
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("%s is not a regular file", path)
	case st != nil && st.Uid != 0 && int(st.Uid) != euid:
		err = fmt.Errorf("%s is owned by uid %d, neither root nor the user running sesame (uid %d): remove it, or chown it", path, st.Uid, euid)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// WritePid writes pid to path (mode 0644), with Open's checks.
func WritePid(path string, pid int) error {
	f, err := Open(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	// Truncate only once the file is known to be a regular file of ours.
	if err := f.Truncate(0); err != nil {
		f.Close()
		return err
	}
	_, err = f.WriteString(strconv.Itoa(pid) + "\n")
	return errors.Join(err, f.Close())
}

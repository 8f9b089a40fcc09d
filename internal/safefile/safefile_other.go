//go:build !unix

// Package safefile opens the files a root daemon writes (its log file, its pid file) without following links planted in their place.
package safefile

import (
	"errors"
	"os"
	"strconv"
)

// Open opens path; without O_NOFOLLOW it only refuses what is not a regular file.
func Open(path string, flag int, perm os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag, perm)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, errors.Join(err, errors.New(path+" is not a regular file"))
	}
	return f, nil
}

// WritePid writes pid to path.
func WritePid(path string, pid int) error {
	f, err := Open(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteString(strconv.Itoa(pid) + "\n")
	return errors.Join(err, f.Close())
}

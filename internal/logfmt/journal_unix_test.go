//go:build unix

package logfmt

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestOnJournal: only a JOURNAL_STREAM naming the very file counts.
func TestOnJournal(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	other, err := os.Create(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	stream := fmt.Sprintf("%d:%d", st.Dev, st.Ino)
	tests := []struct {
		name   string
		stream string
		f      *os.File
		want   bool
	}{
		{"the file", stream, f, true},
		{"unset", "", f, false},
		{"another file", stream, other, false},
		{"another inode", fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), f, false},
		{"another device", fmt.Sprintf("%d:%d", uint64(st.Dev)+1, st.Ino), f, false},
		{"trailing bytes", stream + "x", f, false},
		{"not numbers", "journal", f, false},
		{"no file", stream, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := OnJournal(tc.stream, tc.f); got != tc.want {
				t.Errorf("OnJournal(%q) = %v, want %v", tc.stream, got, tc.want)
			}
		})
	}
}

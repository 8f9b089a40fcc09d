//go:build unix

package control

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// socketNeeds says who may open the socket at path, from the group of the socket (or of its
// directory, when the socket cannot be seen).
func socketNeeds(path string) string {
	for _, p := range []string{path, filepath.Dir(path)} {
		fi, err := os.Stat(p)
		if err != nil {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			break
		}
		name := strconv.Itoa(int(st.Gid))
		if g, err := user.LookupGroupId(name); err == nil {
			name = g.Name
		}
		return fmt.Sprintf("reading needs root or membership of group %s", name)
	}
	return "reading needs root or membership of the socket's group"
}

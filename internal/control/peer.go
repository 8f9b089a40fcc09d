package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// Peer is the process at the other end of a control connection, as the kernel reported it
// when it connected (SO_PEERCRED), with its supplementary groups from /proc.
type Peer struct {
	PID    int
	UID    int
	GID    int
	Groups []int // supplementary groups; nil when they could not be read
}

// member reports whether p's primary or a supplementary group is gid.
func (p Peer) member(gid int) bool {
	return p.GID == gid || slices.Contains(p.Groups, gid)
}

type peerKey struct{}

// withPeer returns ctx carrying p (or the error reading it).
func withPeer(ctx context.Context, p Peer, err error) context.Context {
	return context.WithValue(ctx, peerKey{}, peerResult{p, err})
}

type peerResult struct {
	p   Peer
	err error
}

// peerFrom returns the peer stored by withPeer.
func peerFrom(ctx context.Context) (Peer, error) {
	r, ok := ctx.Value(peerKey{}).(peerResult)
	if !ok {
		return Peer{}, errors.New("no peer credentials")
	}
	return r.p, r.err
}

// maxStatus bounds how much of /proc/PID/status is read.
const maxStatus = 64 << 10

// procGroups reads the supplementary groups of process pid, checking that the process still
// has effective uid uid (so a recycled pid cannot lend its groups).
func procGroups(pid, uid int) ([]int, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, fmt.Errorf("peer groups: %w", err)
	}
	defer f.Close()
	euid, groups, err := parseStatus(io.LimitReader(f, maxStatus))
	if err != nil {
		return nil, fmt.Errorf("peer groups: /proc/%d/status: %w", pid, err)
	}
	if euid != uid {
		return nil, fmt.Errorf("peer groups: process %d now has uid %d, not %d", pid, euid, uid)
	}
	return groups, nil
}

// parseStatus reads the effective uid (the second field of "Uid:") and the "Groups:" line of
// a /proc/PID/status file.
func parseStatus(r io.Reader) (euid int, groups []int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxStatus)
	euid = -1
	seenGroups := false
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch key {
		case "Uid":
			f := strings.Fields(val)
			if len(f) < 2 {
				return 0, nil, fmt.Errorf("Uid line %q: want 4 ids", val)
			}
			n, err := strconv.ParseUint(f[1], 10, 31)
			if err != nil {
				return 0, nil, fmt.Errorf("Uid line: %q is not a uid", f[1])
			}
			euid = int(n)
		case "Groups":
			if seenGroups {
				return 0, nil, errors.New("two Groups lines")
			}
			seenGroups = true
			for _, g := range strings.Fields(val) {
				n, err := strconv.ParseUint(g, 10, 31)
				if err != nil {
					return 0, nil, fmt.Errorf("Groups line: %q is not a gid", g)
				}
				groups = append(groups, int(n))
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, nil, err
	}
	if euid < 0 || !seenGroups {
		return 0, nil, errors.New("no Uid or Groups line")
	}
	return euid, groups, nil
}

// canRead reports whether p may read: root, the daemon's own user, a member of the read
// group, or one who may change.
func (r rights) canRead(p Peer, self int) bool {
	return p.member(r.read.gid) || r.canChange(p, self)
}

// canChange reports whether p may change: root, the daemon's own user, or a member of the
// admin group.
func (r rights) canChange(p Peer, self int) bool {
	return p.UID == 0 || p.UID == self || r.admin != nil && p.member(r.admin.gid)
}

// needRead and needChange are the 403 messages.
func (r rights) needRead() string {
	if r.read.gid == 0 {
		return "reading needs root (set [control] group to let a group read)"
	}
	return fmt.Sprintf("reading needs root or group %s", r.read)
}

func (r rights) needChange() string {
	if r.admin == nil {
		return "changing needs root (set [control] admin_group to let a group change)"
	}
	return fmt.Sprintf("changing needs root or group %s", r.admin)
}

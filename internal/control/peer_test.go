package control

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseStatus(t *testing.T) {
	const head = "Name:\tsesame\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t77\n"
	tests := []struct {
		name   string
		in     string
		euid   int
		groups []int
		err    string
	}{
		{name: "groups", in: head + "Uid:\t1000\t1001\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nGroups:\t4 27 64100 \n", euid: 1001, groups: []int{4, 27, 64100}},
		{name: "no groups", in: head + "Uid:\t0\t0\t0\t0\nGroups:\t\n", euid: 0},
		{name: "missing groups", in: head + "Uid:\t0\t0\t0\t0\n", err: "no Uid or Groups line"},
		{name: "missing uid", in: head + "Groups:\t1\n", err: "no Uid or Groups line"},
		{name: "bad gid", in: "Uid:\t0\t0\t0\t0\nGroups:\t1 x\n", err: `"x" is not a gid`},
		{name: "negative gid", in: "Uid:\t0\t0\t0\t0\nGroups:\t-1\n", err: `"-1" is not a gid`},
		{name: "short uid", in: "Uid:\t0\nGroups:\t1\n", err: "want 4 ids"},
		{name: "two groups lines", in: "Uid:\t0\t0\t0\t0\nGroups:\t1\nGroups:\t0\n", err: "two Groups lines"},
		{name: "huge line", in: "Uid:\t0\t0\t0\t0\nGroups:\t" + strings.Repeat("1 ", maxStatus) + "\n", err: "too long"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			euid, groups, err := parseStatus(strings.NewReader(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || euid != tc.euid || !slices.Equal(groups, tc.groups) {
				t.Fatalf("got %d %v %v, want %d %v", euid, groups, err, tc.euid, tc.groups)
			}
		})
	}
}

// TestProcGroupsSelf reads this process's own groups and checks the uid guard.
func TestProcGroupsSelf(t *testing.T) {
	want, err := os.Getgroups()
	if err != nil {
		t.Skipf("no groups on this system: %v", err)
	}
	got, err := procGroups(os.Getpid(), os.Geteuid())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("groups %v, want %v", got, want)
	}
	if _, err := procGroups(os.Getpid(), os.Geteuid()+1); err == nil || !strings.Contains(err.Error(), "now has uid") {
		t.Errorf("another uid: err %v", err)
	}
}

func TestRights(t *testing.T) {
	noAdmin := rights{read: group{readGID, "sesame"}}
	tests := []struct {
		name         string
		r            rights
		p            Peer
		read, change bool
	}{
		{"root", noAdmin, rootPeer, true, true},
		{"self", noAdmin, selfPeer, true, true},
		{"reader", testRights, readerPeer, true, false},
		{"admin", testRights, adminPeer, true, true},
		{"admin by primary group", testRights, primPeer, true, true},
		{"admin group unset", noAdmin, adminPeer, true, false},
		{"other", testRights, otherPeer, false, false},
		{"reader by primary group", testRights, Peer{UID: 5, GID: readGID}, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.r.canRead(tc.p, selfUID); got != tc.read {
				t.Errorf("canRead %v, want %v", got, tc.read)
			}
			if got := tc.r.canChange(tc.p, selfUID); got != tc.change {
				t.Errorf("canChange %v, want %v", got, tc.change)
			}
		})
	}
}

func TestConfigResolve(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		read int
		adm  int // -1: none
		err  string
	}{
		{name: "defaults", c: Config{}, read: 0, adm: -1},
		{name: "names", c: Config{Group: "root", AdminGroup: "root"}, read: 0, adm: 0},
		{name: "numbers", c: Config{Group: "64100", AdminGroup: "64101"}, read: 64100, adm: 64101},
		{name: "no such group", c: Config{Group: "no-such-group-sesame"}, err: `control: group: no group "no-such-group-sesame" on this system`},
		{name: "no such admin group", c: Config{AdminGroup: "no-such-group-sesame"}, err: "control: admin_group: no group"},
		{name: "negative max", c: Config{MaxGrant: -1}, err: "max_grant: -1ns is negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := tc.c.resolve()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			adm := -1
			if r.admin != nil {
				adm = r.admin.gid
			}
			if r.read.gid != tc.read || adm != tc.adm {
				t.Errorf("read %d admin %d, want %d %d", r.read.gid, adm, tc.read, tc.adm)
			}
		})
	}
	if c := (Config{}).withDefaults(); c.Socket != DefaultSocket || c.MaxGrant != DefaultMaxGrant {
		t.Errorf("defaults %+v", c)
	}
}

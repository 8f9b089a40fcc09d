//go:build linux

package hostcheck

import (
	"context"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netnsbed"
	"github.com/sesame-knock/sesame/internal/netnsbed/netnstest"
	"github.com/sesame-knock/sesame/internal/netport"
)

// TestIntegrationRead reads a real ruleset (iptables-nft and nft tables) in a throw-away
// namespace and finds what drops a granted tcp/2222, and nothing for tcp/22.
func TestIntegrationRead(t *testing.T) {
	netnstest.SkipUnlessRoot(t)
	bed := netnstest.NewT(t)
	ctx := context.Background()
	for _, c := range [][]string{
		{"iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "2222", "-j", "DROP"},
		{"nft", "add table inet filter"},
		{"nft", "add chain inet filter input { type filter hook input priority 0; policy drop; }"},
		{"nft", "add rule inet filter input ct state established,related accept"},
		{"nft", "add rule inet filter input tcp dport { 22, 80 } accept"},
	} {
		if out, err := netnsbed.Command(ctx, bed.Server, c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", c, err, out)
		}
	}
	fd, err := netnsbed.NSFd(bed.Server)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	conn, err := nftables.New(nftables.WithNetNSFd(int(fd)))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := Read(conn)
	if err != nil {
		t.Fatal(err)
	}
	g := Gate{Table: "sesame", Priority: -10, Mark: firewall.ConnMark}
	var got []string
	for _, f := range Check(rs, g, []netport.Port{{Proto: netport.TCP, Num: 2222}, {Proto: netport.TCP, Num: 22}}) {
		got = append(got, f.Port.String()+" "+f.String()+" / "+f.Packets())
	}
	want := []string{
		"tcp/2222 ip filter INPUT: tcp dport 2222 drop (handle ",
		"tcp/2222 inet filter input: policy drop / new connections",
	}
	if len(got) != len(want) {
		t.Fatalf("findings:\n%s\nwant %d", strings.Join(got, "\n"), len(want))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("finding %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
}

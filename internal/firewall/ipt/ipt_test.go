//go:build linux

package ipt

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

func TestRules(t *testing.T) {
	b := &Backend{chain: DefaultChain}
	tcp := netport.Port{Proto: netport.TCP, Num: 2222}
	got := b.rules("sesame4", firewall.Gate{Protected: []netport.Port{tcp, {Proto: netport.UDP, Num: 53}, tcp}})
	var lines []string
	for _, r := range got {
		lines = append(lines, strings.Join(r, " "))
	}
	want := []string{
		"-p tcp --dport 2222 -m set --match-set sesame4_ban src -j DROP",
		"-p udp --dport 53 -m set --match-set sesame4_ban src -j DROP",
		"-p tcp --dport 2222 -m conntrack --ctdir REPLY -j DROP",
		"-m connmark --mark 0x20000000/0x20000000 -j ACCEPT",
		"-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
		"-m set --match-set sesame4 src,dst -j CONNMARK --set-xmark 0x20000000/0x20000000",
		"-m set --match-set sesame4 src,dst -j ACCEPT",
		"-p tcp --dport 2222 -j DROP",
		"-p udp --dport 53 -j DROP",
		"-j RETURN",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("rules:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestSeconds(t *testing.T) {
	for d, want := range map[time.Duration]uint32{
		time.Millisecond:        1,
		time.Second:             1,
		1500 * time.Millisecond: 2,
		30 * time.Second:        30,
		1000 * time.Hour:        maxTimeout,
	} {
		if got := seconds(d); got != want {
			t.Errorf("seconds(%s) = %d, want %d", d, got, want)
		}
	}
}

func TestJumpPositions(t *testing.T) {
	rules := []string{"-P INPUT ACCEPT", "-A INPUT -j SESAME", "-A INPUT -p tcp -j DROP", "-A INPUT -j SESAME"}
	if got := firstRule(rules); got != "-A INPUT -j SESAME" {
		t.Errorf("firstRule = %q", got)
	}
	if got := lastJump(rules, "-A INPUT -j SESAME"); got != 3 {
		t.Errorf("lastJump = %d, want 3", got)
	}
	if got := firstRule([]string{"-P INPUT ACCEPT"}); got != "" {
		t.Errorf("firstRule(empty chain) = %q", got)
	}
}

func TestEntry(t *testing.T) {
	e := entry(firewall.Grant{Src: netip.MustParseAddr("::ffff:198.18.0.2"), Port: netport.Port{Proto: netport.UDP, Num: 53}})
	if e.IP.String() != "198.18.0.2" || len(e.IP) != 4 || *e.Port != 53 || *e.Protocol != 17 {
		t.Errorf("entry = %+v", e)
	}
	b := &Backend{set4: DefaultSet4, set6: DefaultSet6}
	if b.setFor(netip.MustParseAddr("::ffff:198.18.0.2")) != DefaultSet4 || b.setFor(netip.MustParseAddr("fd5e:5a3e::2")) != DefaultSet6 {
		t.Error("setFor picks the wrong set")
	}
}

package doctor

import (
	"net/netip"
	"strings"
	"testing"
)

func TestFollow(t *testing.T) {
	p := newTraceParser()
	var evs []event
	for _, l := range []string{
		`trace id 1 ip nat PREROUTING packet: ip saddr 203.0.113.20 ip daddr 198.18.0.1 tcp sport 40002 tcp dport 2222 tcp flags == syn`,
		`trace id 1 ip nat PREROUTING rule fib daddr type local jump DOCKER # handle 3 (verdict jump DOCKER)`,
		`trace id 1 ip nat DOCKER rule iifname != "docker0" tcp dport 2222 dnat to 172.17.0.2:80 # handle 4 (verdict accept)`,
		`trace id 1 ip filter FORWARD packet: ip saddr 203.0.113.20 ip daddr 172.17.0.2 tcp sport 40002 tcp dport 80 tcp flags == syn`,
		`trace id 1 ip filter FORWARD policy drop`,
		`trace id 2 inet sesame gate packet: ip saddr 203.0.113.20 ip daddr 198.18.0.1 tcp sport 40003 tcp dport 2222 tcp flags == syn`,
		`trace id 2 inet sesame gate rule meta l4proto . th dport @protected drop # handle 9 (verdict drop)`,
	} {
		if e, ok := p.parse(l); ok {
			evs = append(evs, e)
		}
	}
	hooks := map[chainName]string{{"ip", "nat", "PREROUTING"}: "prerouting", {"ip", "filter", "FORWARD"}: "forward", {"inet", "sesame", "gate"}: "input"}
	src := netip.MustParseAddr("203.0.113.20")
	tr := follow(evs, hooks, src, 40002, true)
	if tr.dnat == nil || !strings.Contains(tr.dnat.rule, "dnat to 172.17.0.2:80") || !tr.forward || tr.drop == nil || tr.drop.kind != "policy" {
		t.Errorf("DNAT trail = %+v", tr)
	}
	tr = follow(evs, hooks, src, 40003, true)
	if tr.dnat != nil || tr.forward || tr.drop == nil || tr.drop.handle != 9 {
		t.Errorf("gate trail = %+v", tr)
	}
	if tr := follow(evs, hooks, src, 40003, false); tr.seen {
		t.Error("a SYN counted as a later packet")
	}
}

package doctor

import (
	"regexp"
	"strconv"
	"strings"
)

// event is one line of `nft -a monitor trace`.
type event struct {
	id                   string
	family, table, chain string
	// kind is "packet", "rule", "policy" or "verdict".
	kind string
	// rule is a rule's text as nft prints it, counters left out; verdict is "accept", "drop",
	// "continue", "return", "jump X" or "goto X".
	rule, verdict string
	handle        uint64
	// pkt is the packet the event is about: the fields of the last packet line of its trace id.
	pkt packet
	// base is the base chain the packet was in (the chain of that packet line).
	base chainName
}

// chainName names a chain as nft does: family, table, chain.
type chainName struct{ family, table, chain string }

func (c chainName) String() string { return c.family + " " + c.table + " " + c.chain }

// packet is what the trace shows of a packet's headers.
type packet struct {
	saddr, daddr string
	proto        string // "tcp", "udp" or ""
	sport, dport int
	syn          bool // tcp flags == syn (the first packet of a connection)
}

var (
	counterRE = regexp.MustCompile(`\bcounter packets \d+ bytes \d+ ?`)
	handleRE  = regexp.MustCompile(` # handle (\d+)$`)
)

// traceParser turns monitor lines into events; it keeps the last packet of each trace id.
type traceParser struct {
	pkts map[string]packet
	base map[string]chainName
}

func newTraceParser() *traceParser {
	return &traceParser{pkts: map[string]packet{}, base: map[string]chainName{}}
}

// parse reads one line; ok is false for lines that are not trace events.
func (p *traceParser) parse(line string) (event, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(line), "trace id ")
	if !ok {
		return event{}, false
	}
	f := strings.SplitN(rest, " ", 5)
	if len(f) < 5 {
		return event{}, false
	}
	e := event{id: f[0], family: f[1], table: f[2], chain: f[3]}
	body := f[4]
	switch {
	case strings.HasPrefix(body, "packet: "):
		e.kind = "packet"
		e.pkt = parsePacket(strings.TrimPrefix(body, "packet: "))
		p.pkts[e.id] = e.pkt
		p.base[e.id] = chainName{e.family, e.table, e.chain}
	case strings.HasPrefix(body, "rule "):
		e.kind = "rule"
		text := strings.TrimPrefix(body, "rule ")
		if i := strings.LastIndex(text, " (verdict "); i >= 0 && strings.HasSuffix(text, ")") {
			e.verdict = text[i+len(" (verdict ") : len(text)-1]
			text = text[:i]
		}
		if m := handleRE.FindStringSubmatch(text); m != nil {
			e.handle, _ = strconv.ParseUint(m[1], 10, 64)
			text = text[:len(text)-len(m[0])]
		}
		e.rule = strings.TrimSpace(counterRE.ReplaceAllString(text, ""))
	case strings.HasPrefix(body, "policy "):
		e.kind = "policy"
		e.verdict, _, _ = strings.Cut(strings.TrimPrefix(body, "policy "), " ")
	case strings.HasPrefix(body, "verdict "):
		e.kind = "verdict"
		e.verdict = strings.TrimSpace(strings.TrimPrefix(body, "verdict "))
	default:
		return event{}, false
	}
	if e.kind != "packet" {
		e.pkt = p.pkts[e.id]
	}
	e.base = p.base[e.id]
	return e, true
}

// parsePacket picks addresses, ports and the SYN flag out of a trace packet line.
func parsePacket(s string) packet {
	var pk packet
	t := strings.Fields(s)
	for i := 0; i+1 < len(t); i++ {
		a, b := t[i], t[i+1]
		v := ""
		if i+2 < len(t) {
			v = t[i+2]
		}
		switch {
		case (a == "ip" || a == "ip6") && b == "saddr":
			pk.saddr = v
		case (a == "ip" || a == "ip6") && b == "daddr":
			pk.daddr = v
		case (a == "tcp" || a == "udp") && b == "sport":
			pk.proto = a
			pk.sport, _ = strconv.Atoi(v)
		case (a == "tcp" || a == "udp") && b == "dport":
			pk.proto = a
			pk.dport, _ = strconv.Atoi(v)
		case a == "tcp" && b == "flags" && v == "==" && i+3 < len(t):
			pk.syn = t[i+3] == "syn"
		}
	}
	return pk
}

// drops reports whether an event ends the packet's trip: a drop (or reject) anywhere.
func (e event) drops() bool {
	return (e.kind == "rule" || e.kind == "policy") && e.verdict == "drop"
}

// accepts reports whether an event ends the packet's trip through its base chain with accept.
func (e event) accepts() bool {
	return (e.kind == "rule" || e.kind == "policy") && e.verdict == "accept"
}

// isDNAT reports whether a rule rewrites the destination.
func (e event) isDNAT() bool {
	return e.kind == "rule" && (strings.Contains(e.rule, "dnat to") || strings.Contains(e.rule, "dnat ip to") ||
		strings.Contains(e.rule, "redirect to") || strings.Contains(e.rule, "xt target \"DNAT\""))
}

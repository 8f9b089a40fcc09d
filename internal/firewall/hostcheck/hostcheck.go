//go:build linux

// Package hostcheck finds the rules of the host's nftables ruleset that would drop a connection
// sesame's gate admitted, so that sesame can name them at start-up.
//
// It reads every base chain on the input and prerouting hooks of the ip, ip6 and inet families
// (iptables-nft's tables included, as they are nftables tables), follows jumps and gotos, and
// evaluates each rule for two packets of a granted connection to each protected port: the first
// one (ct state new) and a later one (ct state established, sesame's conntrack mark bit set). A
// chain is reported only when every way through it ends in a drop, reject or drop policy:
// a rule whose expressions it cannot interpret counts as "may match, may do anything", so it
// never produces an alarm, only hides one. iptables-legacy tables are not nftables and are not
// seen.
package hostcheck

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/netport"
)

// Gate says where sesame's own gate sits, so that the check skips it and knows when the
// conntrack mark is set.
type Gate struct {
	// Table is sesame's nft table (family inet), skipped; empty with the ipt backend.
	Table string
	// Chain is sesame's iptables chain: with the ipt backend, a jump to it from a table
	// "filter" of family ip or ip6 accepts a granted packet. Empty with the nft backend.
	Chain string
	// Priority is the input-hook priority at which the gate marks a new connection: chains
	// after it see the mark on the first packet already.
	Priority int32
	// Mark is the conntrack mark bit the gate sets (firewall.ConnMark).
	Mark uint32
}

// ChainRef names a chain.
type ChainRef struct {
	Family nftables.TableFamily
	Table  string
	Chain  string
}

// SetRef names a set.
type SetRef struct {
	Family nftables.TableFamily
	Table  string
	Set    string
}

// Set is what the check knows of a set: its elements and whether it holds intervals.
type Set struct {
	Interval bool
	Elements []nftables.SetElement
}

// Ruleset is the part of the host's ruleset the check reads: chains, their rules, and the sets
// their lookups use. A lookup of a set missing here counts as "may match".
type Ruleset struct {
	Chains []*nftables.Chain
	Rules  map[ChainRef][]*nftables.Rule
	Sets   map[SetRef]Set
}

// Finding is one base chain that drops granted packets to one port.
type Finding struct {
	Chain    ChainRef
	Hook     string // "input" or "prerouting"
	Priority int32
	Port     netport.Port
	// New and Later say which packets are dropped: the first of a connection, later ones.
	New, Later bool
	// Rules are the rules (or "policy drop") where those packets end, as nft would list them.
	Rules []string
	gate  Gate
}

// FamilyName is nft's name of a table family.
func FamilyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	}
	return fmt.Sprintf("family-%d", f)
}

// Where is "family table chain", as nft names a chain.
func (f Finding) Where() string {
	return FamilyName(f.Chain.Family) + " " + f.Chain.Table + " " + f.Chain.Chain
}

// String is the warning's subject: "ip filter INPUT: tcp dport 22 drop".
func (f Finding) String() string {
	return f.Where() + ": " + strings.Join(f.Rules, "; ")
}

// Packets says which packets of a granted connection the chain drops.
func (f Finding) Packets() string {
	switch {
	case f.New && f.Later:
		return "new connections and their later packets"
	case f.New:
		return "new connections"
	}
	return "the later packets of admitted connections"
}

// iptablesChain reports whether the chain is one iptables-nft manages (table filter, chain
// INPUT of family ip or ip6), and which command manages it.
func (f Finding) iptablesChain() (string, bool) {
	if f.Chain.Table != "filter" || f.Chain.Chain != "INPUT" {
		return "", false
	}
	switch f.Chain.Family {
	case nftables.TableFamilyIPv4:
		return "iptables", true
	case nftables.TableFamilyIPv6:
		return "ip6tables", true
	}
	return "", false
}

// Fix says how to let granted connections through this chain.
func (f Finding) Fix() string {
	open := fmt.Sprintf("accept %s dport %d in that chain (sesame's gate still drops it for every source without a grant)", f.Port.Proto, f.Port.Num)
	if cmd, ok := f.iptablesChain(); ok && f.gate.Chain != "" {
		return fmt.Sprintf("the rule comes before INPUT's jump to %s: put it after the jump (`%s -D INPUT ...`, then `%s -A INPUT ...`; sesame's chain accepts what it admitted), or %s",
			f.gate.Chain, cmd, cmd, open)
	}
	markSet := f.Hook == "input" && (!f.New || f.Priority > f.gate.Priority)
	if !markSet {
		return "this chain runs before sesame's gate marks a connection: " + open
	}
	mark := fmt.Sprintf("%#x", f.gate.Mark)
	rule := fmt.Sprintf("nft insert rule %s %s %s ct mark and %s == %s accept", FamilyName(f.Chain.Family), f.Chain.Table, f.Chain.Chain, mark, mark)
	if cmd, ok := f.iptablesChain(); ok {
		rule = fmt.Sprintf("%s -I INPUT -m connmark --mark %s/%s -j ACCEPT", cmd, mark, mark)
	}
	return "accept the connections sesame admitted: `" + rule + "`, or " + open
}

// Check returns the base chains that drop a granted connection to one of ports, one finding
// per chain and port, in the order of rs.Chains.
func Check(rs *Ruleset, g Gate, ports []netport.Port) []Finding {
	c := &checker{rs: rs, gate: g}
	var out []Finding
	for _, ch := range rs.Chains {
		if ch.Hooknum == nil || ch.Table == nil {
			continue
		}
		hook := ""
		switch *ch.Hooknum {
		case *nftables.ChainHookInput:
			hook = "input"
		case *nftables.ChainHookPrerouting:
			hook = "prerouting"
		default:
			continue
		}
		fam := ch.Table.Family
		if fam != nftables.TableFamilyIPv4 && fam != nftables.TableFamilyIPv6 && fam != nftables.TableFamilyINet {
			continue
		}
		if fam == nftables.TableFamilyINet && ch.Table.Name == g.Table {
			continue
		}
		var prio int32
		if ch.Priority != nil {
			prio = int32(*ch.Priority)
		}
		ref := ChainRef{fam, ch.Table.Name, ch.Name}
		var nfprotos []uint8
		switch fam {
		case nftables.TableFamilyIPv4:
			nfprotos = []uint8{unix.NFPROTO_IPV4}
		case nftables.TableFamilyIPv6:
			nfprotos = []uint8{unix.NFPROTO_IPV6}
		default:
			nfprotos = []uint8{unix.NFPROTO_IPV4, unix.NFPROTO_IPV6}
		}
		policyDrop := ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop
		seen := map[netport.Port]bool{}
		for _, port := range ports {
			if seen[port] || (port.Proto != netport.TCP && port.Proto != netport.UDP) {
				continue
			}
			seen[port] = true
			f := Finding{Chain: ref, Hook: hook, Priority: prio, Port: port, gate: g}
			for _, later := range []bool{false, true} {
				if later && ch.Type == nftables.ChainTypeNAT {
					continue // nat chains see only the first packet of a connection
				}
				for _, nfp := range nfprotos {
					p := packet{nfproto: nfp, proto: uint8(port.Proto), port: port.Num}
					st := pstate{}
					if later {
						p.state = ctEstablished
						st.markKnown, st.markVal = g.Mark, g.Mark
					} else {
						p.state = ctNew
						switch {
						case hook == "prerouting" || prio < g.Priority:
							st.markKnown = g.Mark // not set yet
						case prio > g.Priority:
							st.markKnown, st.markVal = g.Mark, g.Mark
						}
					}
					drops, ok := c.dropsAll(ref, p, st, policyDrop)
					if !ok {
						continue
					}
					if later {
						f.Later = true
					} else {
						f.New = true
					}
					for _, d := range drops {
						if !slices.Contains(f.Rules, d) {
							f.Rules = append(f.Rules, d)
						}
					}
				}
			}
			if f.New || f.Later {
				out = append(out, f)
			}
		}
	}
	return out
}

// dropsAll walks a base chain for p and reports the drops reached when every way through the
// chain ends in one (false when a way accepts or cannot be told).
func (c *checker) dropsAll(ref ChainRef, p packet, st pstate, policyDrop bool) ([]string, bool) {
	term, ends := c.walk(ref, p, []pstate{st}, 0)
	var drops []string
	for _, t := range term {
		if t.kind != tDrop {
			return nil, false
		}
		if !slices.Contains(drops, t.rule) {
			drops = append(drops, t.rule)
		}
	}
	if len(ends) > 0 {
		if !policyDrop {
			return nil, false
		}
		drops = append(drops, "policy drop")
	}
	return drops, len(drops) > 0
}

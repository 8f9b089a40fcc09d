package doctor

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/sesame-knock/sesame/internal/netport"
)

// iptCommand is what the check reads of one iptables invocation in a door's command.
type iptCommand struct {
	binary string // "iptables", "ip6tables", "iptables-legacy", ...
	table  string
	append bool // -A (as opposed to -I)
	chain  string
	port   netport.Port
	target string
	text   string
}

// parseIptCommands finds the iptables invocations of a shell command line (split at ;, &&, ||
// and |) that append or insert a rule for one destination port.
func parseIptCommands(cmd string) []iptCommand {
	var out []iptCommand
	for _, part := range splitShell(cmd) {
		f := strings.Fields(part)
		i := slices.IndexFunc(f, func(s string) bool {
			b := path.Base(s)
			return strings.HasPrefix(b, "iptables") || strings.HasPrefix(b, "ip6tables")
		})
		if i < 0 {
			continue
		}
		c := iptCommand{binary: path.Base(f[i]), table: "filter", text: strings.TrimSpace(part)}
		proto := "tcp"
		for j := i + 1; j < len(f); j++ {
			next := ""
			if j+1 < len(f) {
				next = f[j+1]
			}
			switch f[j] {
			case "-t", "--table":
				c.table = next
			case "-A", "--append":
				c.append, c.chain = true, next
			case "-I", "--insert":
				c.chain = next
			case "-p", "--protocol":
				proto = next
			case "--dport", "--destination-port":
				n, err := strconv.ParseUint(next, 10, 16)
				if err == nil {
					c.port.Num = uint16(n)
				}
			case "-j", "--jump":
				c.target = next
			}
		}
		p, err := netport.Parse(proto + "/" + strconv.Itoa(int(c.port.Num)))
		if c.chain == "" || c.port.Num == 0 || err != nil {
			continue
		}
		c.port = p
		out = append(out, c)
	}
	return out
}

func splitShell(s string) []string {
	r := strings.NewReplacer("&&", ";", "||", ";", "|", ";", "\n", ";")
	return strings.Split(r.Replace(s), ";")
}

// dropsPort reports whether an iptables-save rule ("-A INPUT ...") drops or rejects every
// packet to port p whatever its source: a DROP or REJECT whose only conditions are the
// protocol, the destination port (or ports), the input interface, the SYN flag or the
// conntrack state NEW.
func dropsPort(rule string, p netport.Port) bool {
	f := strings.Fields(rule)
	if len(f) < 2 || f[0] != "-A" {
		return false
	}
	target, proto, portOK := "", "", true
	for j := 2; j < len(f); j++ {
		next := ""
		if j+1 < len(f) {
			next = f[j+1]
		}
		switch f[j] {
		case "-j", "--jump":
			target = next
			j++
		case "-p", "--protocol":
			proto = next
			j++
		case "-m", "--match":
			switch next {
			case "tcp", "udp", "multiport", "conntrack", "state":
			default:
				return false
			}
			j++
		case "--dport", "--destination-port":
			portOK = portIn(next, p.Num)
			j++
		case "--dports", "--destination-ports":
			portOK = portIn(next, p.Num)
			j++
		case "--ctstate", "--state":
			if !strings.Contains(next, "NEW") {
				return false
			}
			j++
		case "--reject-with":
			j++
		case "-i", "--in-interface", "--syn":
			if f[j] != "--syn" {
				j++
			}
		default:
			return false // a source, a set, a limit...: may not apply to the knocker
		}
	}
	if target != "DROP" && target != "REJECT" {
		return false
	}
	if proto != "" && proto != p.Proto.String() && proto != "all" {
		return false
	}
	return portOK
}

// portIn reports whether n is in an iptables port list: "22", "22,80", "1000:2000".
func portIn(list string, n uint16) bool {
	for _, item := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(item, ":")
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.ParseUint(hi, 10, 16)
		}
		if err1 == nil && err2 == nil && uint64(n) >= a && uint64(n) <= b {
			return true
		}
	}
	return false
}

// appendAfterDrop checks one command against the live chain: an appended ACCEPT for a port
// that an earlier rule of the chain drops is never reached. It returns the warning's text, or
// "" when the command is fine.
func appendAfterDrop(c iptCommand, live []string, where string) string {
	if !c.append || c.target != "ACCEPT" {
		return ""
	}
	for i, r := range live {
		if dropsPort(r, c.port) {
			return fmt.Sprintf("%q appends (-A) an ACCEPT for %s to %s after %s rule %d (%s): the ACCEPT is never reached",
				c.text, c.port, c.chain, where, i+1, r)
		}
	}
	return ""
}

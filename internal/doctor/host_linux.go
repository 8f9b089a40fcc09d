package doctor

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"

	"github.com/google/nftables"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/firewall/hostcheck"
	"github.com/sesame-knock/sesame/internal/firewall/ipt"
	"github.com/sesame-knock/sesame/internal/firewall/nft"
	"github.com/sesame-knock/sesame/internal/netport"
)

// host is what the doctor reads of the host before it builds anything.
type host struct {
	listeners []listener
	addrs     ifaceAddrs
	ifnames   []string
	ifname    string // the interface clients come in on
	dst       netip.Addr
	forward   bool

	nftText string // nft list ruleset
	nftErr  error
	// iptables-nft-save and ip6tables-nft-save; iptables-legacy-save and ip6tables-legacy-save.
	nft4, nft6       saveTables
	legacy4, legacy6 saveTables
	findings         []hostcheck.Finding
}

// readHost reads the host's listeners, interfaces and rulesets, in the doctor's own namespace.
func readHost(ctx context.Context, cfg *config.Config, protected []netport.Port) *host {
	h := &host{addrs: ifaceAddrs{}}
	for _, f := range []struct {
		file  string
		proto netport.Proto
	}{{"/proc/net/tcp", netport.TCP}, {"/proc/net/tcp6", netport.TCP}, {"/proc/net/udp", netport.UDP}, {"/proc/net/udp6", netport.UDP}} {
		if b, err := os.ReadFile(f.file); err == nil {
			h.listeners = append(h.listeners, parseProcNet(string(b), f.proto)...)
		}
	}
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		h.ifnames = append(h.ifnames, ifc.Name)
		as, _ := ifc.Addrs()
		for _, a := range as {
			if ipn, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
					h.addrs[ip.Unmap()] = ifc.Name
				}
			}
		}
	}
	h.ifname = clientInterface(cfg.Server.Interfaces, ifs)
	var best netip.Addr
	for a, n := range h.addrs {
		if n == h.ifname && a.Is4() && !probeNet.Contains(a) && (!best.IsValid() || a.Less(best)) {
			best = a
		}
	}
	h.dst = probeServer
	if best.IsValid() {
		h.dst = best
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err == nil {
		h.forward = strings.TrimSpace(string(b)) == "1"
	}
	h.nftText, h.nftErr = hostRun(ctx, "nft", "list", "ruleset")
	save := func(name string) saveTables {
		if _, err := exec.LookPath(name); err != nil {
			return parseSave("")
		}
		out, err := hostRun(ctx, name)
		if err != nil {
			return parseSave("")
		}
		return parseSave(out)
	}
	h.nft4, h.nft6 = save("iptables-nft-save"), save("ip6tables-nft-save")
	h.legacy4, h.legacy6 = save("iptables-legacy-save"), save("ip6tables-legacy-save")
	if g, ok := hostcheckGate(cfg.Server.Firewall); ok && len(protected) > 0 {
		if conn, err := nftables.New(); err == nil {
			if rs, err := hostcheck.Read(conn); err == nil {
				h.findings = hostcheck.Check(rs, g, protected)
			}
		}
	}
	return h
}

// hostcheckGate is where the configured backend puts sesame's gate.
func hostcheckGate(kind firewall.Kind) (hostcheck.Gate, bool) {
	switch kind {
	case config.FirewallNftables:
		return hostcheck.Gate{Table: nft.DefaultTable, Priority: nft.ChainPriority, Mark: firewall.ConnMark}, true
	case config.FirewallIptables:
		return hostcheck.Gate{Chain: ipt.DefaultChain, Mark: firewall.ConnMark}, true
	}
	return hostcheck.Gate{}, false
}

// clientInterface picks the interface clients come in on: the first configured one, else the
// interface of the default route, else the first one that is up and not loopback.
func clientInterface(configured []string, ifs []net.Interface) string {
	if len(configured) > 0 {
		return configured[0]
	}
	if f, err := os.Open("/proc/net/route"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) > 2 && fl[1] == "00000000" && fl[0] != "Iface" {
				return fl[0]
			}
		}
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp != 0 && ifc.Flags&net.FlagLoopback == 0 {
			return ifc.Name
		}
	}
	return "eth0"
}

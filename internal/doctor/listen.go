package doctor

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/sesame-knock/sesame/internal/netport"
)

// listener is a socket bound to a local port: a TCP socket in LISTEN state or an unconnected
// UDP socket.
type listener struct {
	port netport.Port
	addr netip.Addr
}

// parseProcNet reads /proc/net/{tcp,tcp6,udp,udp6} text: the listening TCP sockets (state 0A)
// or the UDP sockets bound without a peer (state 07).
func parseProcNet(text string, proto netport.Proto) []listener {
	want := "0A"
	if proto == netport.UDP {
		want = "07"
	}
	var out []listener
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != want {
			continue
		}
		a, port, ok := parseHexAddrPort(f[1])
		if !ok {
			continue
		}
		out = append(out, listener{port: netport.Port{Proto: proto, Num: port}, addr: a})
	}
	return out
}

// parseHexAddrPort reads "0100007F:0016" (IPv4) or the 32-digit IPv6 form: the address in
// host-order 32-bit words, the port in hex.
func parseHexAddrPort(s string) (netip.Addr, uint16, bool) {
	as, ps, ok := strings.Cut(s, ":")
	if !ok {
		return netip.Addr{}, 0, false
	}
	port, err := strconv.ParseUint(ps, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, false
	}
	raw, err := hex.DecodeString(as)
	if err != nil || (len(raw) != 4 && len(raw) != 16) {
		return netip.Addr{}, 0, false
	}
	for i := 0; i < len(raw); i += 4 { // each 32-bit word is in the kernel's (little-endian) order
		w := binary.LittleEndian.Uint32(raw[i:])
		binary.BigEndian.PutUint32(raw[i:], w)
	}
	a, _ := netip.AddrFromSlice(raw)
	return a.Unmap(), uint16(port), true
}

// ifaceAddrs maps each local address to the interface that holds it.
type ifaceAddrs map[netip.Addr]string

// listenCheck is what the check says of one protected port's listeners: the status and text.
func listenCheck(p netport.Port, ls []listener, addrs ifaceAddrs, watched []string) (Status, string, string) {
	var mine []listener
	for _, l := range ls {
		if l.port == p {
			mine = append(mine, l)
		}
	}
	if len(mine) == 0 {
		return Warn, "nothing listens on it: the knock will open a port nobody answers on",
			"start the service, or correct the port in the configuration"
	}
	var names []string
	loopOnly, outside := true, []string{}
	for _, l := range mine {
		names = append(names, l.addr.String())
		if l.addr.IsUnspecified() {
			return OK, "a service listens on " + netip.AddrPortFrom(l.addr, p.Num).String() + " (every address)", ""
		}
		if !l.addr.IsLoopback() {
			loopOnly = false
		}
		if len(watched) > 0 && !l.addr.IsLoopback() {
			if ifn, ok := addrs[l.addr]; ok && !slices.Contains(watched, ifn) {
				outside = append(outside, l.addr.String()+" ("+ifn+")")
			}
		}
	}
	list := strings.Join(names, ", ")
	switch {
	case loopOnly:
		return Warn, "the service listens only on loopback (" + list + "): a granted remote client still gets no answer",
			"bind the service to the address clients connect to (or to every address)"
	case len(outside) == len(mine):
		return Warn, "the service listens only on " + strings.Join(outside, ", ") + ", outside the interfaces sesame watches (" +
				strings.Join(watched, ", ") + "): clients there cannot knock, clients that can knock cannot reach it",
			"add that interface to [server] interfaces, or bind the service to an address on a watched one"
	}
	return OK, "a service listens on " + list, ""
}

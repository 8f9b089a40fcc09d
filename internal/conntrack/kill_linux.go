package conntrack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kill deletes, in the current network namespace, the conntrack entries whose original
// source is src and whose original destination is one of ports (protocol and port), and
// returns how many it deleted. Packets of those connections are then new to the kernel, so a
// gate that drops new connections to the ports drops them: the connections are over. With
// no ports it deletes nothing.
func Kill(ctx context.Context, src netip.Addr, ports []netport.Port) (int, error) {
	return KillAt(ctx, 0, src, ports)
}

// KillAt is Kill in the network namespace open as file descriptor netNS (0: the current one),
// as the firewall backends' Options.NetNS.
func KillAt(ctx context.Context, netNS int, src netip.Addr, ports []netport.Port) (int, error) {
	src = src.Unmap()
	if !src.IsValid() {
		return 0, errors.New("conntrack: kill: no source address")
	}
	if len(ports) == 0 {
		return 0, nil
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("conntrack: kill %s: %w", src, err)
	}
	var h *netlink.Handle
	var err error
	if netNS != 0 {
		h, err = netlink.NewHandleAt(netns.NsHandle(netNS), unix.NETLINK_NETFILTER)
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_NETFILTER)
	}
	if err != nil {
		return 0, fmt.Errorf("conntrack: netlink: %w", err)
	}
	defer h.Close()
	family := netlink.InetFamily(unix.AF_INET)
	if src.Is6() {
		family = netlink.InetFamily(unix.AF_INET6)
	}
	n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, family, filter{newMatch(src, ports)})
	if err != nil {
		return int(n), fmt.Errorf("conntrack: kill %s: %w", src, err)
	}
	return int(n), nil
}

// filter adapts match to the netlink library's filter interface.
type filter struct{ m match }

func (f filter) MatchConntrackFlow(flow *netlink.ConntrackFlow) bool {
	return f.m.matches(flow.Forward.SrcIP, flow.Forward.Protocol, flow.Forward.DstPort)
}

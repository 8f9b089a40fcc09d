//go:build linux

package ipt

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Bans live in two more ipsets, sesame4_ban and sesame6_ban (hash:ip with timeouts), matched at
// the top of the chain so that a banned source gets nothing from a protected port, granted or
// established:
//
//	-A SESAME -p tcp -m tcp --dport 2222 -m set --match-set sesame4_ban src -j DROP   (one per protected port)

const banSetType = "hash:ip"

var _ firewall.Banner = (*Backend)(nil)

// banSet is the ban set beside the grant set named set.
func banSet(set string) string { return set + "_ban" }

// banRules are the chain's first rules: protected ports dropped for banned sources.
func banRules(set string, gate firewall.Gate) [][]string {
	seen := map[netport.Port]bool{}
	var r [][]string
	for _, p := range gate.Protected {
		if seen[p] {
			continue
		}
		seen[p] = true
		r = append(r, []string{"-p", p.Proto.String(), "--dport", strconv.Itoa(int(p.Num)), "-m", "set", "--match-set", banSet(set), "src", "-j", "DROP"})
	}
	return r
}

// ensureBanSet creates the ban set of a family unless it exists (keeping its entries).
func (b *Backend) ensureBanSet(name string, fam uint8) error {
	res, err := b.h.IpsetList(name)
	if err == nil {
		if res.TypeName != banSetType || res.Family != fam || res.Timeout == nil {
			return fmt.Errorf("firewall ipt: ipset %s exists as %s family %d, want %s family %d with timeouts: remove it", name, res.TypeName, res.Family, banSetType, fam)
		}
		return nil
	}
	timeout := uint32(setDefaultTimeout)
	if err := b.h.IpsetCreate(name, banSetType, netlink.IpsetCreateOptions{Family: fam, Timeout: &timeout}); err != nil {
		return fmt.Errorf("firewall ipt: create ipset %s: %w", name, err)
	}
	return nil
}

// Ban adds or refreshes the ban of src (whole seconds, rounded up).
func (b *Backend) Ban(ctx context.Context, src netip.Addr, dur time.Duration) error {
	if err := firewall.CheckBan(src, dur, true); err != nil {
		return fmt.Errorf("firewall ipt: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	set := banSet(b.setFor(src))
	t := seconds(dur)
	e := &netlink.IPSetEntry{IP: net.IP(src.Unmap().AsSlice()), Timeout: &t, Replace: true}
	if err := b.h.IpsetAdd(set, e); err != nil {
		return fmt.Errorf("firewall ipt: ban %s: %w", src, setError(set, err))
	}
	return nil
}

// Unban removes the ban of src; an absent one is not an error.
func (b *Backend) Unban(ctx context.Context, src netip.Addr) error {
	if err := firewall.CheckBan(src, 0, false); err != nil {
		return fmt.Errorf("firewall ipt: %w", err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errClosed
	}
	set := banSet(b.setFor(src))
	if err := b.h.IpsetDel(set, &netlink.IPSetEntry{IP: net.IP(src.Unmap().AsSlice())}); err != nil && !isAbsent(err) {
		return fmt.Errorf("firewall ipt: unban %s: %w", src, err)
	}
	return nil
}

// ListBans returns the live bans with whole seconds left.
func (b *Backend) ListBans(ctx context.Context) ([]firewall.LiveBan, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, errClosed
	}
	var out []firewall.LiveBan
	for _, set := range []string{banSet(b.set4), banSet(b.set6)} {
		res, err := b.h.IpsetList(set)
		if err != nil {
			if isAbsent(err) {
				continue
			}
			return nil, fmt.Errorf("firewall ipt: list %s: %w", set, err)
		}
		for _, e := range res.Entries {
			a, ok := netip.AddrFromSlice(e.IP)
			if !ok {
				continue
			}
			lb := firewall.LiveBan{Src: a.Unmap()}
			if e.Timeout != nil {
				lb.Remaining = time.Duration(*e.Timeout) * time.Second
			}
			out = append(out, lb)
		}
	}
	return out, nil
}

//go:build linux

package nft

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/sesame-knock/sesame/internal/firewall"
)

// Bans live in two sets of source addresses with timeouts:
//
//	set bans4 { type ipv4_addr; flags timeout; }
//	set bans6 { type ipv6_addr; flags timeout; }
//
// matched in the gate chain before "ct state established,related accept", so a banned source
// gets nothing from a protected port, not even on a connection it had before the ban:
//
//	meta nfproto ipv4 ip saddr @bans4 meta l4proto . th dport @protected drop
//	meta nfproto ipv6 ip6 saddr @bans6 meta l4proto . th dport @protected drop

// banObjects returns the ban set descriptions of table t.
func banObjects(t *nftables.Table) (b4, b6 *nftables.Set) {
	b4 = &nftables.Set{Table: t, Name: Bans4Set, KeyType: nftables.TypeIPAddr, HasTimeout: true}
	b6 = &nftables.Set{Table: t, Name: Bans6Set, KeyType: nftables.TypeIP6Addr, HasTimeout: true}
	return b4, b6
}

// BanRuleExprs returns the two ban rules of the gate chain.
func BanRuleExprs() [][]expr.Any {
	rule := func(nfproto byte, off, alen uint32, set string) []expr.Any {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: alen},
			&expr.Lookup{SourceRegister: 1, SetName: set},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: ProtectedSet},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}
	}
	return [][]expr.Any{
		rule(unix.NFPROTO_IPV4, 12, 4, Bans4Set),
		rule(unix.NFPROTO_IPV6, 8, 16, Bans6Set),
	}
}

func (b *Backend) banSet(a netip.Addr) *nftables.Set {
	if a.Unmap().Is4() {
		return b.bans4
	}
	return b.bans6
}

// Ban adds or refreshes the ban of src: the element is destroyed (if present) and added again
// with dur, in one batch.
func (b *Backend) Ban(ctx context.Context, src netip.Addr, dur time.Duration) error {
	if err := firewall.CheckBan(src, dur, true); err != nil {
		return fmt.Errorf("firewall nft: %w", err)
	}
	if err := b.lock(ctx); err != nil {
		return err
	}
	defer b.mu.Unlock()
	s, k := b.banSet(src), src.Unmap().AsSlice()
	if err := b.conn.SetDestroyElements(s, []nftables.SetElement{{Key: k}}); err != nil {
		b.conn.Flush()
		return fmt.Errorf("firewall nft: ban: %w", err)
	}
	if err := b.conn.SetAddElements(s, []nftables.SetElement{{Key: k, Timeout: dur}}); err != nil {
		b.conn.Flush()
		return fmt.Errorf("firewall nft: ban: %w", err)
	}
	if err := b.conn.Flush(); err != nil {
		return b.opError("ban", err)
	}
	return nil
}

// Unban removes the ban of src; an absent ban is not an error.
func (b *Backend) Unban(ctx context.Context, src netip.Addr) error {
	if err := firewall.CheckBan(src, 0, false); err != nil {
		return fmt.Errorf("firewall nft: %w", err)
	}
	if err := b.lock(ctx); err != nil {
		return err
	}
	defer b.mu.Unlock()
	if err := b.conn.SetDestroyElements(b.banSet(src), []nftables.SetElement{{Key: src.Unmap().AsSlice()}}); err != nil {
		b.conn.Flush()
		return fmt.Errorf("firewall nft: unban: %w", err)
	}
	if err := b.conn.Flush(); err != nil {
		return b.opError("unban", err)
	}
	return nil
}

// ListBans returns the live bans with the time they have left.
func (b *Backend) ListBans(ctx context.Context) ([]firewall.LiveBan, error) {
	if err := b.lock(ctx); err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	var out []firewall.LiveBan
	for _, s := range []*nftables.Set{b.bans4, b.bans6} {
		elems, err := b.conn.GetSetElements(s)
		if err != nil {
			return nil, b.opError("list bans", err)
		}
		for _, e := range elems {
			if e.Timeout != 0 && e.Expires == 0 {
				continue
			}
			a, ok := netip.AddrFromSlice(e.Key)
			if !ok {
				return nil, fmt.Errorf("firewall nft: list %s: key of %d bytes", s.Name, len(e.Key))
			}
			out = append(out, firewall.LiveBan{Src: a, Remaining: e.Expires})
		}
	}
	return out, nil
}

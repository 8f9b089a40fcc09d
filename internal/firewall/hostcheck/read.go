//go:build linux

package hostcheck

import (
	"fmt"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Read reads the chains of the ip, ip6 and inet tables, their rules, and the sets their
// lookups name, over an nftables connection.
func Read(conn *nftables.Conn) (*Ruleset, error) {
	rs := &Ruleset{Rules: map[ChainRef][]*nftables.Rule{}, Sets: map[SetRef]Set{}}
	chains, err := conn.ListChains()
	if err != nil {
		return nil, fmt.Errorf("hostcheck: list chains: %w", err)
	}
	tableSets := map[SetRef]*nftables.Set{}
	readSets := map[ChainRef]bool{} // tables whose sets are listed (Chain empty)
	for _, ch := range chains {
		if ch.Table == nil {
			continue
		}
		fam := ch.Table.Family
		if fam != nftables.TableFamilyIPv4 && fam != nftables.TableFamilyIPv6 && fam != nftables.TableFamilyINet {
			continue
		}
		rules, err := conn.GetRules(ch.Table, ch)
		if err != nil {
			return nil, fmt.Errorf("hostcheck: rules of %s %s %s: %w", FamilyName(fam), ch.Table.Name, ch.Name, err)
		}
		rs.Chains = append(rs.Chains, ch)
		rs.Rules[ChainRef{fam, ch.Table.Name, ch.Name}] = rules
		for _, r := range rules {
			for _, x := range r.Exprs {
				l, ok := x.(*expr.Lookup)
				if !ok {
					continue
				}
				ref := SetRef{fam, ch.Table.Name, l.SetName}
				if _, done := rs.Sets[ref]; done {
					continue
				}
				tk := ChainRef{Family: fam, Table: ch.Table.Name}
				if !readSets[tk] {
					readSets[tk] = true
					sets, err := conn.GetSets(ch.Table)
					if err != nil {
						continue // lookups of this table's sets stay "may match"
					}
					for _, s := range sets {
						tableSets[SetRef{fam, ch.Table.Name, s.Name}] = s
					}
				}
				s, ok := tableSets[ref]
				if !ok {
					continue
				}
				els, err := conn.GetSetElements(s)
				if err != nil {
					continue
				}
				rs.Sets[ref] = Set{Interval: s.Interval, Elements: els}
			}
		}
	}
	return rs, nil
}

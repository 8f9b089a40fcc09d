package awssg

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// checkForeign refuses a gate whose protected ports a rule that is not sesame's already opens:
// the gate could not hold.
func (b *Backend) checkForeign(ctx context.Context, gate firewall.Gate) error {
	if len(gate.Protected) == 0 {
		return nil
	}
	rules, err := b.describe(ctx, []types.Filter{{Name: aws.String("group-id"), Values: b.o.Groups}})
	if err != nil {
		return err
	}
	for _, r := range rules {
		if aws.ToBool(r.IsEgress) || tag(r, TagOwner) != "" {
			continue
		}
		for _, p := range gate.Protected {
			if covers(r, p) {
				return fmt.Errorf("%w: rule %s of %s already allows %s from %s: remove it, sesame's grants are the only way in", ErrCannotHold,
					aws.ToString(r.SecurityGroupRuleId), aws.ToString(r.GroupId), p, source(r))
			}
		}
	}
	return nil
}

func source(r types.SecurityGroupRule) string {
	switch {
	case r.CidrIpv4 != nil:
		return *r.CidrIpv4
	case r.CidrIpv6 != nil:
		return *r.CidrIpv6
	case r.PrefixListId != nil:
		return "prefix list " + *r.PrefixListId
	case r.ReferencedGroupInfo != nil:
		return "security group " + aws.ToString(r.ReferencedGroupInfo.GroupId)
	}
	return "?"
}

// covers reports whether rule r allows port p (to some source).
func covers(r types.SecurityGroupRule, p netport.Port) bool {
	proto := aws.ToString(r.IpProtocol)
	if proto == "-1" || proto == "all" {
		return true
	}
	want := "tcp"
	if p.Proto == netport.UDP {
		want = "udp"
	}
	if proto != want && proto != fmt.Sprint(int(p.Proto)) {
		return false
	}
	from, to := aws.ToInt32(r.FromPort), aws.ToInt32(r.ToPort)
	return from == -1 || (int32(p.Num) >= from && int32(p.Num) <= to)
}

func tag(r types.SecurityGroupRule, k string) string {
	for _, t := range r.Tags {
		if aws.ToString(t.Key) == k {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

// parseRule reads the grant a rule of sesame's holds.
func parseRule(r types.SecurityGroupRule) (key, time.Time, error) {
	exp, err := time.Parse(time.RFC3339, tag(r, TagExpires))
	if err != nil {
		return key{}, time.Time{}, fmt.Errorf("tag %s: %w", TagExpires, err)
	}
	var pfx netip.Prefix
	switch {
	case r.CidrIpv4 != nil:
		pfx, err = netip.ParsePrefix(*r.CidrIpv4)
	case r.CidrIpv6 != nil:
		pfx, err = netip.ParsePrefix(*r.CidrIpv6)
	default:
		err = errors.New("no CIDR")
	}
	if err != nil || pfx.Bits() != pfx.Addr().BitLen() {
		return key{}, time.Time{}, fmt.Errorf("source is not one address (%v)", err)
	}
	var proto netport.Proto
	switch aws.ToString(r.IpProtocol) {
	case "tcp":
		proto = netport.TCP
	case "udp":
		proto = netport.UDP
	default:
		return key{}, time.Time{}, fmt.Errorf("protocol %q", aws.ToString(r.IpProtocol))
	}
	from, to := aws.ToInt32(r.FromPort), aws.ToInt32(r.ToPort)
	if from != to || from < 1 || from > 65535 || aws.ToBool(r.IsEgress) {
		return key{}, time.Time{}, fmt.Errorf("not one inbound port (%d-%d)", from, to)
	}
	return key{pfx.Addr(), netport.Port{Proto: proto, Num: uint16(from)}}, exp, nil
}

// adopt reads this owner's rules: rules of expired grants (and rules sesame cannot read) are
// revoked; unexpired ones the backend does not know are adopted when all is true (at start),
// else left to the next start. It is the start-up cleanup and the periodic sweep.
func (b *Backend) adopt(ctx context.Context, all bool) error {
	rules, err := b.describe(ctx, []types.Filter{
		{Name: aws.String("group-id"), Values: b.o.Groups},
		{Name: aws.String("tag:" + TagOwner), Values: []string{b.o.Owner}},
	})
	if err != nil {
		return err
	}
	now := b.o.Now()
	gone := map[string][]string{} // group → rule ids
	b.mu.Lock()
	known := map[string]bool{}
	for _, e := range b.grants {
		for _, id := range e.rules {
			known[id] = true
		}
	}
	adopted := 0
	for _, r := range rules {
		id, g := aws.ToString(r.SecurityGroupRuleId), aws.ToString(r.GroupId)
		if known[id] {
			continue
		}
		k, exp, err := parseRule(r)
		if err != nil {
			b.log.Warn("revoking a sesame-tagged rule sesame cannot read", "group", g, "rule", id, "err", err)
			gone[g] = append(gone[g], id)
			continue
		}
		if !now.Before(exp) {
			gone[g] = append(gone[g], id)
			continue
		}
		if !all {
			continue
		}
		e := b.grants[k]
		if e == nil {
			e = &entry{rules: map[string]string{}}
			b.grants[k] = e
		}
		if exp.After(e.expires) {
			e.expires = exp
		}
		if old, ok := e.rules[g]; ok && old != "" {
			gone[g] = append(gone[g], id) // a second rule for the same grant
			continue
		}
		e.rules[g] = id
		adopted++
	}
	b.stats.Adopted += uint64(adopted)
	b.mu.Unlock()
	if adopted > 0 {
		b.log.Info("adopted grants left from before a restart", "rules", adopted)
	}
	n := 0
	for g, ids := range gone {
		done, err := b.revokeIDs(ctx, g, ids)
		n += done
		if err != nil {
			return err
		}
	}
	if n > 0 {
		b.mu.Lock()
		b.stats.Cleaned += uint64(n)
		b.mu.Unlock()
		b.log.Info("revoked expired sesame rules left by an earlier run", "rules", n)
	}
	return nil
}

// describe lists the rules that match filters, every page.
func (b *Backend) describe(ctx context.Context, filters []types.Filter) ([]types.SecurityGroupRule, error) {
	var out []types.SecurityGroupRule
	var token *string
	for page := 0; page < 1000; page++ {
		var resp *ec2.DescribeSecurityGroupRulesOutput
		err := b.call(ctx, "DescribeSecurityGroupRules", func(ctx context.Context) error {
			var err error
			resp, err = b.o.Client.DescribeSecurityGroupRules(ctx, &ec2.DescribeSecurityGroupRulesInput{Filters: filters, MaxResults: aws.Int32(1000), NextToken: token})
			return err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, resp.SecurityGroupRules...)
		if aws.ToString(resp.NextToken) == "" {
			return out, nil
		}
		token = resp.NextToken
	}
	return nil, errors.New("aws-sg: DescribeSecurityGroupRules: more than 1000 pages")
}

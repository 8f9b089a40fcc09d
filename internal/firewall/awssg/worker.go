package awssg

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/sesame-knock/sesame/internal/netport"
)

// run is the worker: it reconciles EC2 with the wanted state when woken and every Tick, and
// sweeps every Sweep.
func (b *Backend) run(ctx context.Context) {
	defer close(b.done)
	t := time.NewTimer(b.o.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.kick:
		case <-t.C:
		}
		b.reconcile(ctx)
		t.Reset(b.nextWake())
		if now := b.o.Now(); now.Sub(b.sweep) >= b.o.Sweep {
			b.sweep = now
			b.retryLog.LogReport(b.log, "aws-sg retry")
			if err := b.adopt(ctx, false); err != nil && ctx.Err() == nil {
				b.log.Warn("periodic cleanup failed; trying again next sweep", "err", err)
			}
		}
	}
}

// nextWake is how long the worker may sleep: until the next grant ends, at most Tick.
func (b *Backend) nextWake() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	d, now := b.o.Tick, b.o.Now()
	for _, e := range b.grants {
		if !e.expires.IsZero() {
			d = min(d, max(e.expires.Sub(now), time.Millisecond))
		}
	}
	return d
}

type todo struct {
	k       key
	expires time.Time
	group   string
}

// reconcile makes the rules of wanted grants that lack them and revokes those of grants that
// ended or were revoked. It holds the lock only between EC2 calls.
func (b *Backend) reconcile(ctx context.Context) {
	now := b.o.Now()
	var add []todo
	revoke := map[string][]string{}
	b.mu.Lock()
	for k, e := range b.grants {
		if !e.expires.IsZero() && !now.Before(e.expires) {
			e.expires = time.Time{}
		}
		if e.expires.IsZero() {
			for g, id := range e.rules {
				if id == "" {
					delete(e.rules, g)
					continue
				}
				revoke[g] = append(revoke[g], id)
			}
			if len(e.rules) == 0 {
				delete(b.grants, k)
			}
			continue
		}
		for _, g := range b.o.Groups {
			if _, ok := e.rules[g]; !ok {
				add = append(add, todo{k, e.expires, g})
			}
		}
	}
	b.mu.Unlock()
	for g, ids := range revoke {
		if _, err := b.revokeIDs(ctx, g, ids); err != nil && ctx.Err() == nil && b.retryLog.Allow() {
			b.log.Warn("revoke failed; trying again next tick", "group", g, "rules", len(ids), "err", err)
		}
	}
	for _, t := range add {
		if ctx.Err() != nil {
			return
		}
		b.authorize(ctx, t)
	}
}

// authorize makes the rule of one grant in one group.
func (b *Backend) authorize(ctx context.Context, t todo) {
	ip := types.IpPermission{IpProtocol: aws.String(protoName(t.k.port)), FromPort: aws.Int32(int32(t.k.port.Num)), ToPort: aws.Int32(int32(t.k.port.Num))}
	cidr := netip.PrefixFrom(t.k.src, t.k.src.BitLen()).String()
	if t.k.src.Is4() {
		ip.IpRanges = []types.IpRange{{CidrIp: aws.String(cidr), Description: aws.String("sesame grant")}}
	} else {
		ip.Ipv6Ranges = []types.Ipv6Range{{CidrIpv6: aws.String(cidr), Description: aws.String("sesame grant")}}
	}
	in := &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId:       aws.String(t.group),
		IpPermissions: []types.IpPermission{ip},
		TagSpecifications: []types.TagSpecification{{
			ResourceType: types.ResourceTypeSecurityGroupRule,
			Tags: []types.Tag{
				{Key: aws.String(TagOwner), Value: aws.String(b.o.Owner)},
				{Key: aws.String(TagExpires), Value: aws.String(t.expires.UTC().Format(time.RFC3339))},
			},
		}},
	}
	var id string
	err := b.call(ctx, "AuthorizeSecurityGroupIngress", func(ctx context.Context) error {
		out, err := b.o.Client.AuthorizeSecurityGroupIngress(ctx, in)
		if err == nil && len(out.SecurityGroupRules) > 0 {
			id = aws.ToString(out.SecurityGroupRules[0].SecurityGroupRuleId)
		}
		return err
	})
	if code(err) == "InvalidPermission.Duplicate" {
		// Made by an earlier call whose answer was lost, or a rule that is not sesame's.
		id, err = b.findRule(ctx, t)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.grants[t.k]
	switch {
	case err == nil:
		b.stats.Made++
		if e == nil { // gone meanwhile: not wanted, so the next pass revokes the rule
			e = &entry{rules: map[string]string{}}
			b.grants[t.k] = e
		}
		e.rules[t.group] = id
	case retryable(err) || ctx.Err() != nil:
		if !b.retryLog.Allow() {
			break
		}
		b.log.Warn("grant not made yet; trying again next tick", "src", t.k.src, "port", t.k.port.String(), "group", t.group, "err", err)
	default:
		b.stats.Failed++
		b.log.Error("grant refused by EC2", "src", t.k.src, "port", t.k.port.String(), "group", t.group, "err", err)
		if e != nil {
			e.expires = time.Time{} // revoke what was made in other groups
		}
	}
}

// findRule finds the rule that already allows t's grant in t's group: sesame's (its id) or
// another's (the empty id: it covers the grant, sesame never revokes it).
func (b *Backend) findRule(ctx context.Context, t todo) (string, error) {
	rules, err := b.describe(ctx, []types.Filter{{Name: aws.String("group-id"), Values: []string{t.group}}})
	if err != nil {
		return "", err
	}
	for _, r := range rules {
		k, _, perr := parseRule(r)
		if perr != nil && tag(r, TagOwner) != "" {
			continue
		}
		if perr == nil && k == t.k || perr != nil && covers(r, t.k.port) && source(r) == netip.PrefixFrom(t.k.src, t.k.src.BitLen()).String() {
			if tag(r, TagOwner) == b.o.Owner {
				return aws.ToString(r.SecurityGroupRuleId), nil
			}
			b.log.Warn("grant already allowed by a rule that is not this host's", "src", t.k.src, "port", t.k.port.String(), "group", t.group, "rule", aws.ToString(r.SecurityGroupRuleId))
			return "", nil
		}
	}
	return "", fmt.Errorf("aws-sg: EC2 says the rule for %s exists in %s, but it is not listed", t.k, t.group)
}

func protoName(p netport.Port) string {
	if p.Proto == netport.UDP {
		return "udp"
	}
	return "tcp"
}

// revokeIDs revokes rules of group by id and returns how many went. EC2 refuses the whole call
// when one id is gone, so then it goes one by one; a gone rule counts as revoked.
func (b *Backend) revokeIDs(ctx context.Context, group string, ids []string) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	err := b.revokeCall(ctx, group, ids)
	if err == nil {
		b.forget(group, ids)
		return len(ids), nil
	}
	if code(err) != "InvalidSecurityGroupRuleId.NotFound" || len(ids) == 1 {
		if code(err) == "InvalidSecurityGroupRuleId.NotFound" {
			b.forget(group, ids)
			return 1, nil
		}
		return 0, err
	}
	n := 0
	for _, id := range ids {
		err := b.revokeCall(ctx, group, []string{id})
		if err != nil && code(err) != "InvalidSecurityGroupRuleId.NotFound" {
			return n, err
		}
		b.forget(group, []string{id})
		n++
	}
	return n, nil
}

func (b *Backend) revokeCall(ctx context.Context, group string, ids []string) error {
	return b.call(ctx, "RevokeSecurityGroupIngress", func(ctx context.Context) error {
		_, err := b.o.Client.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: aws.String(group), SecurityGroupRuleIds: ids})
		return err
	})
}

// forget drops revoked rule ids from the grants, and grants left with no rule and not wanted.
func (b *Backend) forget(group string, ids []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, e := range b.grants {
		if id, ok := e.rules[group]; ok && slices.Contains(ids, id) {
			delete(e.rules, group)
			b.stats.Revoked++
			if e.expires.IsZero() && len(e.rules) == 0 {
				delete(b.grants, k)
			}
		}
	}
}

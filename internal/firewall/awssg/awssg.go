// Package awssg is the firewall backend that keeps grants as ingress rules of AWS security groups.
//
// A grant is one ingress rule per configured security group, for the source /32 or /128 and the
// protocol and port, made with AuthorizeSecurityGroupIngress and tagged at creation with
// sesame:owner (this host) and sesame:expires (RFC 3339, UTC). There are no kernel timeouts:
// sesame revokes each rule itself (RevokeSecurityGroupIngress by rule id) when its grant ends,
// from a worker that wakes when the next grant ends by the injected clock, and at least every
// Tick. At the first Apply, and every Sweep after, DescribeSecurityGroupRules finds this owner's
// tagged rules: expired ones (left by a crash) are revoked, unexpired ones are adopted at the
// first Apply, so grants survive a restart.
//
// The packet path never waits for AWS: Grant and Revoke change the backend's wanted state in
// memory and wake the worker. That state is bounded by MaxRules grants; a grant past it is
// refused with ErrBudget, counted and logged. A grant accepted is made by the worker, retried
// (throttling and 5xx with bounded exponential backoff and jitter, each call under a deadline)
// until it is made or its time is up; one EC2 refuses for good is logged and counted as failed.
//
// A security group only allows: it cannot answer with a reset (stealth closed), has no deny
// rule (bans), and sees every packet before the host, so the knock and SPA ports must be
// allowed in it for the host's capture to see them. See docs/CLOUD.md.
package awssg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/lograte"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Tag keys sesame puts on every rule it makes.
const (
	TagOwner   = "sesame:owner"
	TagExpires = "sesame:expires"
)

// Defaults of Options.
const (
	DefaultMaxRules    = 50 // of EC2's default quota of 60 inbound rules per group
	DefaultTick        = time.Second
	DefaultSweep       = 5 * time.Minute
	DefaultCallTimeout = 20 * time.Second
	DefaultMaxAttempts = 6
	DefaultBaseBackoff = 200 * time.Millisecond
	DefaultMaxBackoff  = 5 * time.Second
)

// ErrBudget is returned by Grant when the grants would exceed MaxRules.
var ErrBudget = errors.New("aws-sg: rule budget full")

// ErrCannotHold is returned by Apply for a gate a security group cannot enforce.
var ErrCannotHold = errors.New("aws-sg: a security group cannot hold this gate")

// API is the part of the EC2 client the backend calls; *ec2.Client has it.
type API interface {
	AuthorizeSecurityGroupIngress(context.Context, *ec2.AuthorizeSecurityGroupIngressInput, ...func(*ec2.Options)) (*ec2.AuthorizeSecurityGroupIngressOutput, error)
	RevokeSecurityGroupIngress(context.Context, *ec2.RevokeSecurityGroupIngressInput, ...func(*ec2.Options)) (*ec2.RevokeSecurityGroupIngressOutput, error)
	DescribeSecurityGroupRules(context.Context, *ec2.DescribeSecurityGroupRulesInput, ...func(*ec2.Options)) (*ec2.DescribeSecurityGroupRulesOutput, error)
}

// Options configure a Backend. Groups and Client are required; zero durations and counts take
// the defaults.
type Options struct {
	// Groups are the security group ids every grant goes into.
	Groups []string
	// Client calls EC2 (NewClient builds one).
	Client API
	// Owner tags this host's rules and selects them at cleanup; empty is the host name.
	Owner string
	// MaxRules bounds the grants held at once (each is one rule in every group).
	MaxRules int
	// Now is the clock (time.Now when nil); Tick how often the worker checks expiries; Sweep
	// how often it looks for expired rules it does not know.
	Now   func() time.Time
	Tick  time.Duration
	Sweep time.Duration
	// CallTimeout bounds one EC2 call with its retries; MaxAttempts, BaseBackoff and MaxBackoff
	// shape the retries of throttled and 5xx answers.
	CallTimeout             time.Duration
	MaxAttempts             int
	BaseBackoff, MaxBackoff time.Duration
	// Log gets the backend's lines (slog.Default when nil).
	Log *slog.Logger
}

type key struct {
	src  netip.Addr
	port netport.Port
}

func (k key) String() string { return k.src.String() + " " + k.port.String() }

// entry is one grant: wanted until expires (zero: to be revoked), made as rules (group → rule
// id; an empty id is a rule that is not sesame's, which covers the grant and is never revoked).
type entry struct {
	expires time.Time
	rules   map[string]string
}

// Stats counts what the backend did.
type Stats struct {
	Made, Revoked, Cleaned, Adopted uint64 // rules made, revoked, crash leftovers revoked, adopted at start
	Refused                         uint64 // grants refused: budget full
	Failed                          uint64 // grants EC2 refused for good
	Retries, Throttled              uint64 // calls retried, of them for throttling
}

// Backend is the aws-sg firewall.Backend. It is safe for concurrent use.
type Backend struct {
	o     Options
	log   *slog.Logger
	kick  chan struct{}
	stop  context.CancelFunc
	done  chan struct{}
	jmu   sync.Mutex // jitter source
	rng   *rand.Rand
	sweep time.Time // last sweep, by o.Now
	// retryLog bounds the lines about calls to be tried again (a long throttling would write
	// one per grant and group every tick); Sweep reports what it held back.
	retryLog *lograte.Budget

	mu      sync.Mutex
	grants  map[key]*entry
	gate    firewall.Gate
	started bool
	closed  bool
	stats   Stats
}

var _ firewall.Backend = (*Backend)(nil)

// New returns a backend; it calls EC2 only from Apply on.
func New(o Options) (*Backend, error) {
	if o.Client == nil {
		return nil, errors.New("aws-sg: no EC2 client")
	}
	if len(o.Groups) == 0 {
		return nil, errors.New("aws-sg: no security group")
	}
	for _, g := range o.Groups {
		if err := CheckGroupID(g); err != nil {
			return nil, err
		}
	}
	if o.Owner == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, fmt.Errorf("aws-sg: no owner given and no host name: %v", err)
		}
		o.Owner = h
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.Tick, DefaultTick)
	def(&o.Sweep, DefaultSweep)
	def(&o.CallTimeout, DefaultCallTimeout)
	def(&o.BaseBackoff, DefaultBaseBackoff)
	def(&o.MaxBackoff, DefaultMaxBackoff)
	if o.MaxRules <= 0 {
		o.MaxRules = DefaultMaxRules
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	return &Backend{
		o: o, log: log.With("firewall", "aws-sg"), kick: make(chan struct{}, 1), grants: map[key]*entry{},
		rng:      rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x5e5a3e)),
		retryLog: lograte.NewBudget(1, 10, time.Minute, nil),
	}, nil
}

// CheckGroupID checks the form of a security group id: sg- and 8 or 17 hex digits.
func CheckGroupID(g string) error {
	h, ok := strings.CutPrefix(g, "sg-")
	if !ok || (len(h) != 8 && len(h) != 17) || strings.Trim(h, "0123456789abcdef") != "" {
		return fmt.Errorf("aws-sg: %q is not a security group id (sg- and 8 or 17 hex digits)", g)
	}
	return nil
}

// Stats returns the counters.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

// Apply checks that a security group can hold gate and, the first time, cleans up and adopts
// this owner's rules left from before and starts the worker.
func (b *Backend) Apply(ctx context.Context, gate firewall.Gate) error {
	if err := firewall.CheckGate(gate); err != nil {
		return err
	}
	switch {
	case gate.Stealth == firewall.StealthClosed:
		return fmt.Errorf("%w: stealth %q (a security group drops what it does not allow, it never answers with a reset): set [server] stealth = %q", ErrCannotHold, gate.Stealth, firewall.StealthOff)
	case gate.Stealth == firewall.StealthDark || len(gate.Allow) > 0:
		return fmt.Errorf("%w: stealth %q and allow (a security group already drops every port it does not allow: manage those rules in AWS): set [server] stealth = %q", ErrCannotHold, gate.Stealth, firewall.StealthOff)
	}
	b.mu.Lock()
	closed, started := b.closed, b.started
	b.mu.Unlock()
	if closed {
		return errors.New("aws-sg: backend closed")
	}
	if err := b.checkForeign(ctx, gate); err != nil {
		return err
	}
	if !started {
		if err := b.adopt(ctx, true); err != nil {
			return err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gate = firewall.Gate{Protected: slices.Clone(gate.Protected), Stealth: gate.Stealth}
	if !b.started && !b.closed {
		b.started = true
		wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		b.stop, b.done = cancel, make(chan struct{})
		b.sweep = b.o.Now()
		go b.run(wctx)
	}
	return nil
}

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

// Grant adds or refreshes grants in the wanted state, all or none, and wakes the worker; it
// does not wait for EC2. Grants past MaxRules are refused with ErrBudget.
func (b *Backend) Grant(ctx context.Context, grants ...firewall.Grant) error {
	if err := firewall.CheckGrants(grants, true); err != nil {
		return err
	}
	if len(grants) == 0 {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errors.New("aws-sg: backend closed")
	}
	var fresh []key
	for _, g := range grants {
		k := key{g.Src.Unmap(), g.Port}
		if b.grants[k] == nil && !slices.Contains(fresh, k) {
			fresh = append(fresh, k)
		}
	}
	if n := len(b.grants) + len(fresh); n > b.o.MaxRules {
		b.stats.Refused++
		b.log.Warn("grant refused: rule budget full", "src", grants[0].Src, "port", grants[0].Port.String(), "held", len(b.grants), "max_rules", b.o.MaxRules)
		return fmt.Errorf("%w: %d grants held, max_rules %d: grant %s refused", ErrBudget, len(b.grants), b.o.MaxRules, grants[0])
	}
	now := b.o.Now()
	for _, g := range grants {
		k := key{g.Src.Unmap(), g.Port}
		e := b.grants[k]
		if e == nil {
			e = &entry{rules: map[string]string{}}
			b.grants[k] = e
		}
		e.expires = now.Add(g.Timeout)
	}
	b.wake()
	return nil
}

func (b *Backend) wake() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// Revoke marks grants to be revoked and wakes the worker; it does not wait for EC2.
func (b *Backend) Revoke(ctx context.Context, grants ...firewall.Grant) error {
	if err := firewall.CheckGrants(grants, false); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, g := range grants {
		if e := b.grants[key{g.Src.Unmap(), g.Port}]; e != nil {
			e.expires = time.Time{}
		}
	}
	b.wake()
	return nil
}

// List returns the grants wanted now with the time they have left, made in EC2 or still on
// their way there.
func (b *Backend) List(ctx context.Context) ([]firewall.LiveGrant, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.o.Now()
	var out []firewall.LiveGrant
	for k, e := range b.grants {
		if now.Before(e.expires) {
			out = append(out, firewall.LiveGrant{Src: k.src, Port: k.port, Remaining: e.expires.Sub(now)})
		}
	}
	slices.SortFunc(out, func(x, y firewall.LiveGrant) int {
		if c := x.Src.Compare(y.Src); c != 0 {
			return c
		}
		return int(x.Port.Proto)<<16 + int(x.Port.Num) - (int(y.Port.Proto)<<16 + int(y.Port.Num))
	})
	return out, nil
}

// Close stops the worker. With removeRules false it first makes the grants still on their way
// and revokes the ones due, and leaves the live rules in EC2 (their tags say when they end;
// the next start revokes them if that has passed); with true it revokes every rule of this
// owner in the groups.
func (b *Backend) Close(ctx context.Context, removeRules bool) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	stop, done := b.stop, b.done
	b.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	if !removeRules {
		b.reconcile(ctx)
		b.mu.Lock()
		unmade := 0
		for _, e := range b.grants {
			if !e.expires.IsZero() && len(e.rules) < len(b.o.Groups) {
				unmade++
			}
		}
		b.mu.Unlock()
		if unmade > 0 {
			b.log.Error("stopping with grants EC2 has not taken yet: they are lost", "grants", unmade)
			return fmt.Errorf("aws-sg: %d grants not made in EC2 before stop", unmade)
		}
		return nil
	}
	rules, err := b.describe(ctx, []types.Filter{
		{Name: aws.String("group-id"), Values: b.o.Groups},
		{Name: aws.String("tag:" + TagOwner), Values: []string{b.o.Owner}},
	})
	if err != nil {
		return err
	}
	byGroup := map[string][]string{}
	for _, r := range rules {
		byGroup[aws.ToString(r.GroupId)] = append(byGroup[aws.ToString(r.GroupId)], aws.ToString(r.SecurityGroupRuleId))
	}
	for g, ids := range byGroup {
		if _, err := b.revokeIDs(ctx, g, ids); err != nil {
			return err
		}
	}
	b.mu.Lock()
	b.grants = map[key]*entry{}
	b.mu.Unlock()
	return nil
}

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

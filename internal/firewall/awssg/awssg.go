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

package awssg

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/firewall/awssg/ec2test"
	"github.com/sesame-knock/sesame/internal/firewall/firewalltest"
	"github.com/sesame-knock/sesame/internal/netport"
)

const (
	sg1   = "sg-0123456789abcdef0"
	sg2   = "sg-0fedcba987654321f"
	owner = "gw1"
)

var (
	ssh  = netport.Port{Proto: netport.TCP, Num: 22}
	dns  = netport.Port{Proto: netport.UDP, Num: 53}
	cli4 = netip.MustParseAddr("198.18.0.2")
	cli6 = netip.MustParseAddr("fd5e:5a3e::2")
)

// newDouble starts the EC2 double with groups, stopped at the end of the test.
func newDouble(t *testing.T, groups ...string) *ec2test.Server {
	t.Helper()
	s := ec2test.New(groups...)
	t.Cleanup(s.Close)
	return s
}

// newBackend returns a backend on the real SDK pointed at srv, with test credentials, fast
// ticks and short backoffs; mod changes the options first.
func newBackend(t *testing.T, srv *ec2test.Server, mod func(*Options)) *Backend {
	t.Helper()
	c, err := NewClient(context.Background(), ec2test.Region, srv.URL(),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(ec2test.AccessKeyID, ec2test.SecretAccessKey, "")))
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Groups: []string{sg1}, Client: c, Owner: owner, Tick: 10 * time.Millisecond, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	if mod != nil {
		mod(&o)
	}
	b, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background(), false) })
	return b
}

// ruleFor returns the rules of group that allow exactly src to port.
func ruleFor(srv *ec2test.Server, group string, src netip.Addr, port netport.Port) []ec2test.Rule {
	var out []ec2test.Rule
	for _, r := range srv.Rules(group) {
		if r.CIDR == netip.PrefixFrom(src, src.BitLen()).String() && r.Proto == protoName(port) && r.FromPort == int32(port.Num) && r.ToPort == int32(port.Num) {
			out = append(out, r)
		}
	}
	return out
}

// waitFor polls cond for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var gate = firewall.Gate{Protected: []netport.Port{ssh}, Stealth: firewall.StealthOff}

func TestGrantIsTaggedRule(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  netip.Addr
		port netport.Port
		cidr string
	}{
		{"IPv4 tcp", cli4, ssh, "198.18.0.2/32"},
		{"IPv6 udp", cli6, dns, "fd5e:5a3e::2/128"},
		{"IPv4-mapped", netip.MustParseAddr("::ffff:198.18.0.9"), ssh, "198.18.0.9/32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newDouble(t, sg1, sg2)
			clock := firewalltest.NewClock(time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC))
			b := newBackend(t, srv, func(o *Options) { o.Groups = []string{sg1, sg2}; o.Now = clock.Now })
			if err := b.Apply(context.Background(), gate); err != nil {
				t.Fatal(err)
			}
			if err := b.Grant(context.Background(), firewall.Grant{Src: tc.src, Port: tc.port, Timeout: 90 * time.Second}); err != nil {
				t.Fatal(err)
			}
			for _, g := range []string{sg1, sg2} {
				waitFor(t, 5*time.Second, "rule in "+g, func() bool { return len(srv.Rules(g)) == 1 })
				r := srv.Rules(g)[0]
				if r.CIDR != tc.cidr || r.Proto != protoName(tc.port) || r.FromPort != int32(tc.port.Num) || r.ToPort != int32(tc.port.Num) {
					t.Errorf("%s: rule %+v, want %s %s/%d", g, r, tc.cidr, protoName(tc.port), tc.port.Num)
				}
				if r.Tags[TagOwner] != owner || r.Tags[TagExpires] != "2026-12-02T01:01:30Z" {
					t.Errorf("%s: tags %v, want owner %s and expiry 2026-12-02T01:01:30Z", g, r.Tags, owner)
				}
			}
			if srv.Unsigned() != 0 {
				t.Errorf("%d requests were not signed with the test credentials", srv.Unsigned())
			}
		})
	}
}

// TestExpiryRevokesOnTime: the rule goes when the injected clock passes its grant's end, and
// not before.
func TestExpiryRevokesOnTime(t *testing.T) {
	srv := newDouble(t, sg1)
	clock := firewalltest.NewClock(time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC))
	b := newBackend(t, srv, func(o *Options) { o.Now = clock.Now })
	ctx := context.Background()
	if err := b.Apply(ctx, gate); err != nil {
		t.Fatal(err)
	}
	if err := b.Grant(ctx, firewall.Grant{Src: cli4, Port: ssh, Timeout: 30 * time.Second}, firewall.Grant{Src: cli6, Port: ssh, Timeout: 60 * time.Second}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "both rules made", func() bool { return len(srv.Rules(sg1)) == 2 })
	clock.Advance(29 * time.Second)
	time.Sleep(100 * time.Millisecond) // ten ticks
	if len(ruleFor(srv, sg1, cli4, ssh)) != 1 {
		t.Fatalf("rule of the 30s grant gone after 29s: %+v", srv.Rules(sg1))
	}
	clock.Advance(time.Second)
	waitFor(t, 5*time.Second, "30s grant revoked at 30s", func() bool { return len(ruleFor(srv, sg1, cli4, ssh)) == 0 })
	if len(ruleFor(srv, sg1, cli6, ssh)) != 1 {
		t.Fatalf("rule of the 60s grant gone at 30s: %+v", srv.Rules(sg1))
	}
	if l, _ := b.List(ctx); len(l) != 1 || l[0].Src != cli6 || l[0].Remaining != 30*time.Second {
		t.Fatalf("List = %+v, want the IPv6 grant with 30s left", l)
	}
	clock.Advance(30 * time.Second)
	waitFor(t, 5*time.Second, "60s grant revoked", func() bool { return len(srv.Rules(sg1)) == 0 })
	waitFor(t, 5*time.Second, "2 made, 2 revoked", func() bool { s := b.Stats(); return s.Made == 2 && s.Revoked == 2 })
}

// TestCrashLeftovers: at start, this owner's expired and unreadable rules are revoked, its live
// ones adopted; other owners' and the admin's rules are left alone; the periodic sweep revokes
// leftovers that expire later.
func TestCrashLeftovers(t *testing.T) {
	srv := newDouble(t, sg1)
	start := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	clock := firewalltest.NewClock(start)
	rfc := func(d time.Duration) string { return start.Add(d).Format(time.RFC3339) }
	rule := func(cidr string, port int32, tags map[string]string) ec2test.Rule {
		return ec2test.Rule{GroupID: sg1, Proto: "tcp", FromPort: port, ToPort: port, CIDR: cidr, Tags: tags}
	}
	expired := srv.AddRule(rule("198.18.0.10/32", 22, map[string]string{TagOwner: owner, TagExpires: rfc(-time.Minute)}))
	live := srv.AddRule(rule("198.18.0.11/32", 22, map[string]string{TagOwner: owner, TagExpires: rfc(10 * time.Minute)}))
	unreadable := srv.AddRule(rule("198.18.0.0/24", 22, map[string]string{TagOwner: owner, TagExpires: rfc(10 * time.Minute)}))
	badTag := srv.AddRule(rule("198.18.0.12/32", 22, map[string]string{TagOwner: owner, TagExpires: "soon"}))
	otherHost := srv.AddRule(rule("198.18.0.13/32", 22, map[string]string{TagOwner: "gw2", TagExpires: rfc(-time.Minute)}))
	admin := srv.AddRule(rule("0.0.0.0/0", 443, nil))
	later := srv.AddRule(rule("198.18.0.14/32", 22, map[string]string{TagOwner: owner, TagExpires: rfc(time.Hour)}))

	b := newBackend(t, srv, func(o *Options) { o.Now = clock.Now; o.Sweep = 10 * time.Minute })
	ctx := context.Background()
	if err := b.Apply(ctx, gate); err != nil {
		t.Fatal(err)
	}
	ids := func() []string {
		var out []string
		for _, r := range srv.Rules(sg1) {
			out = append(out, r.ID)
		}
		return out
	}
	if got, want := ids(), []string{live, otherHost, admin, later}; !slices.Equal(got, want) {
		t.Fatalf("rules after start = %v, want %v (gone: expired %s, unreadable %s, bad tag %s)", got, want, expired, unreadable, badTag)
	}
	l, _ := b.List(ctx)
	if len(l) != 2 || l[0].Src != netip.MustParseAddr("198.18.0.11") || l[0].Remaining != 10*time.Minute || l[1].Remaining != time.Hour {
		t.Fatalf("List after start = %+v, want the adopted grants of .11 (10m) and .14 (1h)", l)
	}
	if s := b.Stats(); s.Cleaned != 3 || s.Adopted != 2 {
		t.Fatalf("stats %+v, want 3 cleaned, 2 adopted", s)
	}
	// The adopted grant ends on time like one made here.
	clock.Advance(10 * time.Minute)
	waitFor(t, 5*time.Second, "adopted grant revoked", func() bool { return !slices.Contains(ids(), live) })
	// A leftover appearing now (another process of this owner crashed) goes at the next sweep.
	leftover := srv.AddRule(rule("198.18.0.15/32", 22, map[string]string{TagOwner: owner, TagExpires: rfc(5 * time.Minute)}))
	time.Sleep(50 * time.Millisecond)
	if !slices.Contains(ids(), leftover) {
		t.Fatal("leftover revoked before the sweep was due")
	}
	clock.Advance(10 * time.Minute)
	waitFor(t, 5*time.Second, "sweep revoked the leftover", func() bool { return !slices.Contains(ids(), leftover) })
	if got, want := ids(), []string{otherHost, admin, later}; !slices.Equal(got, want) {
		t.Fatalf("rules after the sweep = %v, want %v", got, want)
	}
}

func TestBudget(t *testing.T) {
	srv := newDouble(t, sg1)
	b := newBackend(t, srv, func(o *Options) { o.MaxRules = 2 })
	ctx := context.Background()
	if err := b.Apply(ctx, gate); err != nil {
		t.Fatal(err)
	}
	g := func(last byte, p netport.Port) firewall.Grant {
		return firewall.Grant{Src: netip.AddrFrom4([4]byte{198, 18, 0, last}), Port: p, Timeout: time.Minute}
	}
	if err := b.Grant(ctx, g(2, ssh), g(3, ssh)); err != nil {
		t.Fatal(err)
	}
	err := b.Grant(ctx, g(4, ssh))
	if !errors.Is(err, ErrBudget) {
		t.Fatalf("third grant: %v, want ErrBudget", err)
	}
	if err := b.Grant(ctx, g(2, ssh)); err != nil {
		t.Fatalf("refresh with the budget full: %v", err)
	}
	if err := b.Grant(ctx, g(2, ssh), g(5, ssh)); !errors.Is(err, ErrBudget) {
		t.Fatalf("refresh plus a new grant: %v, want ErrBudget", err)
	}
	waitFor(t, 5*time.Second, "two rules", func() bool { return len(srv.Rules(sg1)) == 2 })
	if l, _ := b.List(ctx); len(l) != 2 {
		t.Fatalf("List = %+v, want the two grants in the budget (all or none)", l)
	}
	if s := b.Stats(); s.Refused != 2 {
		t.Fatalf("refused %d, want 2", s.Refused)
	}
	// A revoked grant frees its place once its rule is gone.
	if err := b.Revoke(ctx, g(3, ssh)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "revoked", func() bool { return len(srv.Rules(sg1)) == 1 })
	waitFor(t, 5*time.Second, "room again", func() bool { return b.Grant(ctx, g(4, ssh)) == nil })
	waitFor(t, 5*time.Second, "new rule", func() bool { return len(ruleFor(srv, sg1, g(4, ssh).Src, ssh)) == 1 })
}

// TestQuotaRefusal: EC2's own refusal (the group is full of other rules) is a failed grant,
// counted, and the grant is dropped from the wanted state, not retried forever.
func TestQuotaRefusal(t *testing.T) {
	srv := newDouble(t, sg1)
	srv.SetRuleLimit(1)
	b := newBackend(t, srv, nil)
	ctx := context.Background()
	if err := b.Apply(ctx, gate); err != nil {
		t.Fatal(err)
	}
	if err := b.Grant(ctx, firewall.Grant{Src: cli4, Port: ssh, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "first rule", func() bool { return len(srv.Rules(sg1)) == 1 })
	if err := b.Grant(ctx, firewall.Grant{Src: cli6, Port: ssh, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "refusal counted", func() bool { return b.Stats().Failed == 1 })
	waitFor(t, 5*time.Second, "refused grant dropped", func() bool { l, _ := b.List(ctx); return len(l) == 1 })
}

// TestThrottlingRetried: RequestLimitExceeded and 5xx answers are retried with backoff; a
// grant still throttled past MaxAttempts is made at a later tick, not lost.
func TestThrottlingRetried(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		throttle, fail5xx     int
		wantCalls, wantThrott int
	}{
		{"throttled 3 times", 3, 0, 4, 3},
		{"500 twice", 0, 2, 3, 0},
		{"throttled past MaxAttempts", 7, 0, 8, 6}, // two rounds of 4 tries: 3 + 3 retries
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newDouble(t, sg1)
			b := newBackend(t, srv, func(o *Options) { o.MaxAttempts = 4 })
			ctx := context.Background()
			if err := b.Apply(ctx, gate); err != nil {
				t.Fatal(err)
			}
			srv.Throttle(tc.throttle)
			srv.Fail5xx(tc.fail5xx)
			if err := b.Grant(ctx, firewall.Grant{Src: cli4, Port: ssh, Timeout: time.Minute}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "rule made", func() bool { return len(srv.Rules(sg1)) == 1 && b.Stats().Made == 1 })
			if n := srv.Calls("AuthorizeSecurityGroupIngress"); n != tc.wantCalls {
				t.Errorf("authorize calls %d, want %d", n, tc.wantCalls)
			}
			if s := b.Stats(); int(s.Throttled) != tc.wantThrott || s.Made != 1 || s.Failed != 0 {
				t.Errorf("stats %+v, want %d throttled, 1 made, none failed", s, tc.wantThrott)
			}
		})
	}
	t.Run("at start", func(t *testing.T) {
		srv := newDouble(t, sg1)
		srv.Throttle(2)
		b := newBackend(t, srv, nil)
		if err := b.Apply(context.Background(), gate); err != nil {
			t.Fatalf("Apply with two throttled describes: %v", err)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		srv := newDouble(t, sg1)
		srv.Throttle(1000)
		b := newBackend(t, srv, func(o *Options) { o.MaxAttempts = 1000; o.CallTimeout = 200 * time.Millisecond })
		t0 := time.Now()
		err := b.Apply(context.Background(), gate)
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 2*time.Second {
			t.Fatalf("Apply throttled for good: %v after %s, want the call deadline within 2s", err, time.Since(t0))
		}
	})
}

// TestGrantDoesNotWait: the packet path's Grant returns at once while EC2 throttles.
func TestGrantDoesNotWait(t *testing.T) {
	srv := newDouble(t, sg1)
	b := newBackend(t, srv, func(o *Options) { o.BaseBackoff, o.MaxBackoff = 200*time.Millisecond, 200*time.Millisecond })
	ctx := context.Background()
	if err := b.Apply(ctx, gate); err != nil {
		t.Fatal(err)
	}
	srv.Throttle(1000)
	time.Sleep(20 * time.Millisecond)
	for i := range 20 {
		t0 := time.Now()
		if err := b.Grant(ctx, firewall.Grant{Src: netip.AddrFrom4([4]byte{198, 18, 1, byte(i)}), Port: ssh, Timeout: time.Minute}); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d > 50*time.Millisecond {
			t.Fatalf("Grant %d took %s while EC2 throttles", i, d)
		}
	}
	if l, _ := b.List(ctx); len(l) != 20 {
		t.Fatalf("List = %d grants, want 20 on their way", len(l))
	}
	srv.Throttle(0)
	waitFor(t, 20*time.Second, "all 20 made after the throttling ends", func() bool { return len(srv.Rules(sg1)) == 20 })
}

// TestLostAnswer: a rule that exists already (a call whose answer was lost) is adopted, not
// duplicated; one that is not sesame's covers the grant and is never revoked.
func TestLostAnswer(t *testing.T) {
	srv := newDouble(t, sg1)
	b := newBackend(t, srv, nil)
	ctx := context.Background()
	if err := b.Apply(ctx, gate); err != nil {
		t.Fatal(err)
	}
	mine := srv.AddRule(ec2test.Rule{GroupID: sg1, Proto: "tcp", FromPort: 22, ToPort: 22, CIDR: "198.18.0.2/32", Tags: map[string]string{TagOwner: owner, TagExpires: "2099-01-01T00:00:00Z"}})
	if err := b.Grant(ctx, firewall.Grant{Src: cli4, Port: ssh, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "adopted", func() bool { return b.Stats().Made == 1 })
	if r := srv.Rules(sg1); len(r) != 1 || r[0].ID != mine {
		t.Fatalf("rules %+v, want only %s", r, mine)
	}
	if err := b.Revoke(ctx, firewall.Grant{Src: cli4, Port: ssh}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "revoked", func() bool { return len(srv.Rules(sg1)) == 0 })
}

func TestApplyRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule *ec2test.Rule
		gate firewall.Gate
	}{
		{"stealth closed", nil, firewall.Gate{Protected: []netport.Port{ssh}, Stealth: firewall.StealthClosed}},
		{"stealth dark", nil, firewall.Gate{Protected: []netport.Port{ssh}, Stealth: firewall.StealthDark}},
		{"open to the world", &ec2test.Rule{GroupID: sg1, Proto: "tcp", FromPort: 22, ToPort: 22, CIDR: "0.0.0.0/0"}, gate},
		{"port range", &ec2test.Rule{GroupID: sg1, Proto: "tcp", FromPort: 1, ToPort: 1024, CIDR: "203.0.113.0/24"}, gate},
		{"all protocols", &ec2test.Rule{GroupID: sg1, Proto: "-1", FromPort: -1, ToPort: -1, CIDR: "::/0"}, gate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newDouble(t, sg1)
			if tc.rule != nil {
				srv.AddRule(*tc.rule)
			}
			b := newBackend(t, srv, nil)
			if err := b.Apply(context.Background(), tc.gate); !errors.Is(err, ErrCannotHold) {
				t.Fatalf("Apply: %v, want ErrCannotHold", err)
			}
		})
	}
	t.Run("other port allowed", func(t *testing.T) {
		srv := newDouble(t, sg1)
		srv.AddRule(ec2test.Rule{GroupID: sg1, Proto: "udp", FromPort: 62201, ToPort: 62201, CIDR: "0.0.0.0/0"})
		b := newBackend(t, srv, nil)
		if err := b.Apply(context.Background(), gate); err != nil {
			t.Fatalf("Apply with only the SPA port open: %v", err)
		}
	})
}

func TestNewChecks(t *testing.T) {
	srv := newDouble(t)
	c, _ := NewClient(context.Background(), ec2test.Region, srv.URL())
	for _, tc := range []struct {
		name string
		o    Options
	}{
		{"no client", Options{Groups: []string{sg1}}},
		{"no group", Options{Client: c}},
		{"bad group", Options{Client: c, Groups: []string{"sg-xyz"}}},
		{"group name", Options{Client: c, Groups: []string{"default"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.o); err == nil {
				t.Fatal("New accepted it")
			}
		})
	}
}

// TestCloseMakesPending: Close(false) makes the grants still on their way, and says so when
// EC2 would not take them before its deadline: an accepted grant is never dropped silently.
func TestCloseMakesPending(t *testing.T) {
	srv := newDouble(t, sg1)
	b := newBackend(t, srv, func(o *Options) { o.Tick = time.Hour })
	ctx := context.Background()
	if err := b.Apply(ctx, gate); err != nil {
		t.Fatal(err)
	}
	srv.Throttle(1000)
	if err := b.Grant(ctx, firewall.Grant{Src: cli4, Port: ssh, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	srv.Throttle(0)
	if err := b.Grant(ctx, firewall.Grant{Src: cli6, Port: ssh, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx, false); err != nil {
		t.Fatalf("Close(false): %v", err)
	}
	if len(srv.Rules(sg1)) != 2 {
		t.Fatalf("rules after Close(false) = %+v, want both grants made", srv.Rules(sg1))
	}

	b2 := newBackend(t, srv, func(o *Options) { o.Owner = "gw2"; o.Tick = time.Hour })
	if err := b2.Apply(ctx, firewall.Gate{Stealth: firewall.StealthOff}); err != nil {
		t.Fatal(err)
	}
	srv.Throttle(1 << 20)
	if err := b2.Grant(ctx, firewall.Grant{Src: netip.MustParseAddr("198.18.0.7"), Port: ssh, Timeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := b2.Close(cctx, false); err == nil {
		t.Fatal("Close(false) with a grant EC2 never took: no error")
	}
}

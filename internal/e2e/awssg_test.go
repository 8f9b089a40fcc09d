//go:build linux

package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall/awssg/ec2test"
	"github.com/sesame-knock/sesame/internal/netnsbed"
)

const awsGroup = "sg-0e2e0000000000001"

const awsConfig = `[server]
firewall = "aws-sg"
stealth = "off"
state_dir = "STATE_DIR"

[firewall.aws]
region = "us-east-1"
security_groups = ["%s"]
endpoint = "%s"
owner = "e2e-gw"

[[door]]
name = "ssh"
sequence = ["7000/tcp", "8000/udp", "9000/tcp"]
sequence_timeout = "5s"
open = ["tcp/2222"]
open_for = "2s"
`

// TestIntegrationAWSSGKnock runs sesame server with firewall aws-sg against the EC2 double,
// reached through the real SDK with credentials from the environment (the standard chain): a
// crash leftover is revoked at start, and a knock from each family's client becomes an ingress
// rule for its /32 or /128 and tcp/2222, revoked after open_for. The double is not a firewall:
// what this shows is the rules, not packets passing.
func TestIntegrationAWSSGKnock(t *testing.T) {
	bed := skipUnlessRoot(t)
	var l net.Listener
	if err := netnsbed.Do(bed.Server, func() (err error) {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := ec2test.NewOn(l, awsGroup)
	t.Cleanup(srv.Close)
	leftover := srv.AddRule(ec2test.Rule{GroupID: awsGroup, Proto: "tcp", FromPort: 2222, ToPort: 2222, CIDR: "198.18.0.99/32",
		Tags: map[string]string{"sesame:owner": "e2e-gw", "sesame:expires": time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)}})
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": ec2test.AccessKeyID, "AWS_SECRET_ACCESS_KEY": ec2test.SecretAccessKey,
		"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_PROFILE": "", "AWS_SESSION_TOKEN": "",
	} {
		t.Setenv(k, v)
	}
	startSesame(t, bed, fmt.Sprintf(awsConfig, awsGroup, "http://"+l.Addr().String()))
	if slices.ContainsFunc(srv.Rules(awsGroup), func(r ec2test.Rule) bool { return r.ID == leftover }) {
		t.Fatalf("expired leftover rule %s still there after start", leftover)
	}
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			cidr := netip.PrefixFrom(fam.client, fam.client.BitLen()).String()
			rule := func() (ec2test.Rule, bool) {
				for _, r := range srv.Rules(awsGroup) {
					if r.CIDR == cidr {
						return r, true
					}
				}
				return ec2test.Rule{}, false
			}
			knockFrom(t, bed, fam.client, fam.server, seq...)
			t0 := time.Now()
			if !waitFor(5*time.Second, func() bool { _, ok := rule(); return ok }) {
				t.Fatalf("no ingress rule for %s after the knock; rules %+v", cidr, srv.Rules(awsGroup))
			}
			made := time.Since(t0)
			r, _ := rule()
			exp, err := time.Parse(time.RFC3339, r.Tags["sesame:expires"])
			if r.Proto != "tcp" || r.FromPort != 2222 || r.ToPort != 2222 || r.Tags["sesame:owner"] != "e2e-gw" || err != nil ||
				exp.Before(t0.Add(time.Second)) || exp.After(t0.Add(3*time.Second)) {
				t.Fatalf("rule %+v: want tcp 2222-2222, owner e2e-gw, expiry about 2s from the knock (%v)", r, err)
			}
			if !waitFor(5*time.Second, func() bool { _, ok := rule(); return !ok }) {
				t.Fatalf("rule for %s still there 5s after it was made (open_for 2s)", cidr)
			}
			gone := time.Since(t0)
			if gone < 2*time.Second {
				t.Fatalf("rule revoked %s after the knock, before open_for", gone)
			}
			t.Logf("%s: rule made %s after the knock, revoked after %s (open_for 2s)", fam.name, made.Round(time.Millisecond), gone.Round(time.Millisecond))
		})
	}
	if srv.Unsigned() != 0 {
		t.Errorf("%d requests not signed with the environment's credentials", srv.Unsigned())
	}
}

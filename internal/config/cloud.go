package config

import (
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/sesame-knock/sesame/internal/firewall"
)

// AWS is the [firewall.aws] section: where firewall aws-sg keeps grants (docs/CLOUD.md).
// Credentials are never here: the AWS SDK's standard chain finds them.
type AWS struct {
	// Region is the AWS region of the security groups.
	Region string
	// SecurityGroups are the ids (sg-…) every grant is made in.
	SecurityGroups []string
	// Endpoint, when set, replaces EC2's endpoint (a VPC interface endpoint, a test double).
	Endpoint string
	// MaxRules bounds the grants held at once, each one rule per group (0: the default,
	// DefaultAWSMaxRules).
	MaxRules int
	// Owner tags this host's rules (empty: the host name).
	Owner string
}

// DefaultAWSMaxRules is [firewall.aws] max_rules when it is not set: EC2's default quota is 60
// inbound rules per group, and the group needs a few of its own (the knock and SPA ports).
const DefaultAWSMaxRules = 50

// MaxAWSRules bounds max_rules: EC2's quota can be raised to 1000 rules per group.
const MaxAWSRules = 1000

var atAWS = place{table: toml.Key{"firewall", "aws"}, index: -1}

type tomlAWS struct {
	Region         field[string]   `toml:"region"`
	SecurityGroups field[[]string] `toml:"security_groups"`
	Endpoint       field[string]   `toml:"endpoint"`
	MaxRules       field[int]      `toml:"max_rules"`
	Owner          field[string]   `toml:"owner"`
}

// awsSecretKeys are keys that would hold credentials.
var awsSecretKeys = []string{"access_key", "access_key_id", "secret_key", "secret_access_key", "session_token", "aws_access_key_id", "aws_secret_access_key", "aws_session_token"}

// firewallAWS decodes the [firewall] table, whose only section is [firewall.aws].
func (d *decoder) firewallAWS(v toml.Primitive, cfg *Config) error {
	var raw any
	if err := d.md.PrimitiveDecode(v, &raw); err != nil {
		return err
	}
	m, ok := raw.(map[string]any)
	if !ok {
		return problem(place{index: -1}, "", "firewall", "want a table ([firewall.aws]), got %s", typeName(raw))
	}
	for k := range m {
		if k != "aws" {
			return &Error{Section: "firewall", Err: fmt.Errorf("unknown key %q (want [firewall.aws])", k), at: place{table: toml.Key{"firewall"}, index: -1, key: toml.Key{k}}}
		}
	}
	var top struct {
		AWS toml.Primitive `toml:"aws"`
	}
	if err := d.md.PrimitiveDecode(v, &top); err != nil {
		return err
	}
	var f tomlAWS
	r, err := d.table(top.AWS, atAWS, &f)
	switch {
	case err != nil:
		return err
	case r.notTable != "":
		return problem(atFirewall, "firewall", "aws", "want a table, got %s", r.notTable)
	case r.unknown != "" && slices.Contains(awsSecretKeys, strings.ToLower(r.unknown)):
		return problem(atAWS, "firewall.aws", r.unknown, "credentials do not belong in sesame's configuration: the AWS SDK finds them (environment, ~/.aws files, the instance role); see docs/CLOUD.md")
	case r.unknown != "":
		return unknownKey(atAWS, "firewall.aws", r.unknown, "")
	case r.badKey != "":
		return problem(atAWS, "firewall.aws", r.badKey, "%w", r.badErr)
	}
	cfg.AWS = &AWS{Region: f.Region.v, SecurityGroups: f.SecurityGroups.v, Endpoint: f.Endpoint.v, MaxRules: f.MaxRules.v, Owner: f.Owner.v}
	if f.MaxRules.set && f.MaxRules.v == 0 {
		return problem(atAWS, "firewall.aws", "max_rules", "must be more than 0 (leave it out for the default: %d)", DefaultAWSMaxRules)
	}
	return nil
}

var atFirewall = place{table: toml.Key{"firewall"}, index: -1}

// validateAWS checks [firewall.aws] when firewall is aws-sg, and what a security group cannot
// hold: a stealth gate (it never resets and already drops what it does not allow) and bans (it
// has no deny rules).
func (c *Config) validateAWS() error {
	if c.Server.Firewall != firewall.AWSSG {
		return nil
	}
	a := c.AWS
	if a == nil {
		return problem(atServer, "server", "firewall", "aws-sg needs a [firewall.aws] section with region and security_groups")
	}
	if a.Region == "" {
		return problem(atAWS, "firewall.aws", "region", "must be set (e.g. \"eu-west-1\")")
	}
	if len(a.SecurityGroups) == 0 {
		return problem(atAWS, "firewall.aws", "security_groups", "name at least one security group id (sg-…)")
	}
	for i, g := range a.SecurityGroups {
		h, ok := strings.CutPrefix(g, "sg-")
		if !ok || (len(h) != 8 && len(h) != 17) || strings.Trim(h, "0123456789abcdef") != "" {
			return problem(atAWS, "firewall.aws", "security_groups", "%q is not a security group id (sg- and 8 or 17 hex digits)", g)
		}
		if slices.Contains(a.SecurityGroups[:i], g) {
			return problem(atAWS, "firewall.aws", "security_groups", "%q is listed twice", g)
		}
	}
	if a.Endpoint != "" {
		u, err := url.Parse(a.Endpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			return problem(atAWS, "firewall.aws", "endpoint", "%q is not an http(s) URL without credentials", a.Endpoint)
		}
	}
	if a.MaxRules < 0 || a.MaxRules > MaxAWSRules {
		return problem(atAWS, "firewall.aws", "max_rules", "%d is out of range 1-%d", a.MaxRules, MaxAWSRules)
	}
	if a.MaxRules == 0 {
		a.MaxRules = DefaultAWSMaxRules
	}
	if c.Server.Stealth != firewall.StealthOff {
		return problem(atServer, "server", "stealth", "firewall aws-sg cannot hold stealth %q (a security group drops what it does not allow and never answers with a reset): set stealth = \"off\"", c.Server.Stealth)
	}
	if c.Scan != nil {
		return problem(place{table: toml.Key{"scan"}, index: -1}, "scan", "", "firewall aws-sg cannot ban (a security group has no deny rules): remove [scan] or use nftables or iptables")
	}
	for i, d := range c.Decoys {
		if d.BanFor > 0 {
			return problem(place{table: toml.Key{"decoy"}, index: i}, fmt.Sprintf("decoy #%d", i+1), "ban_for", "firewall aws-sg cannot ban (a security group has no deny rules): set ban_for = \"0s\" to only alert, or use nftables or iptables")
		}
	}
	return nil
}

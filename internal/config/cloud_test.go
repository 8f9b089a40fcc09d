package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const awsDoor = "[[door]]\nname = \"ssh\"\nsequence = [\"7000\", \"8000\"]\nopen = [\"tcp/22\"]\n"

func TestAWS(t *testing.T) {
	src := "[server]\nfirewall = \"aws-sg\"\nstealth = \"off\"\n[firewall.aws]\nregion = \"eu-west-1\"\nsecurity_groups = [\"sg-0123456789abcdef0\", \"sg-01234567\"]\nendpoint = \"https://vpce-1.ec2.eu-west-1.vpce.amazonaws.com\"\nmax_rules = 20\nowner = \"gw1\"\n" + awsDoor
	cfg, err := Parse("s.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.AWS
	if a == nil || a.Region != "eu-west-1" || !slices.Equal(a.SecurityGroups, []string{"sg-0123456789abcdef0", "sg-01234567"}) ||
		a.Endpoint != "https://vpce-1.ec2.eu-west-1.vpce.amazonaws.com" || a.MaxRules != 20 || a.Owner != "gw1" || cfg.Server.Firewall != FirewallAWSSG {
		t.Fatalf("AWS = %+v, firewall %s", a, cfg.Server.Firewall)
	}
	cfg, err = Parse("s.toml", []byte("[server]\nfirewall = \"aws-sg\"\nstealth = \"off\"\n[firewall.aws]\nregion = \"eu-west-1\"\nsecurity_groups = [\"sg-01234567\"]\n"+awsDoor))
	if err != nil || cfg.AWS.MaxRules != DefaultAWSMaxRules {
		t.Fatalf("default max_rules: %+v, %v", cfg.AWS, err)
	}
}

func TestAWSErrors(t *testing.T) {
	const head = "[server]\nfirewall = \"aws-sg\"\nstealth = \"off\"\n"
	const sec = "[firewall.aws]\nregion = \"eu-west-1\"\nsecurity_groups = [\"sg-01234567\"]\n"
	for _, tc := range []struct {
		name, src, want string
	}{
		{"no section", head + awsDoor, `server: firewall: aws-sg needs a [firewall.aws] section`},
		{"no region", head + "[firewall.aws]\nsecurity_groups = [\"sg-01234567\"]\n" + awsDoor, `firewall.aws: region: must be set`},
		{"no groups", head + "[firewall.aws]\nregion = \"eu-west-1\"\n" + awsDoor, `firewall.aws: security_groups: name at least one`},
		{"group name", head + "[firewall.aws]\nregion = \"r\"\nsecurity_groups = [\"default\"]\n" + awsDoor, `"default" is not a security group id`},
		{"group twice", head + "[firewall.aws]\nregion = \"r\"\nsecurity_groups = [\"sg-01234567\", \"sg-01234567\"]\n" + awsDoor, `"sg-01234567" is listed twice`},
		{"groups type", head + "[firewall.aws]\nregion = \"r\"\nsecurity_groups = \"sg-01234567\"\n" + awsDoor, `s.toml:6: firewall.aws: security_groups: want`},
		{"endpoint", head + sec + "endpoint = \"ftp://x\"\n" + awsDoor, `firewall.aws: endpoint: "ftp://x" is not an http(s) URL`},
		{"endpoint user", head + sec + "endpoint = \"https://u:p@x\"\n" + awsDoor, `is not an http(s) URL without credentials`},
		{"max_rules 0", head + sec + "max_rules = 0\n" + awsDoor, `firewall.aws: max_rules: must be more than 0`},
		{"max_rules big", head + sec + "max_rules = 5000\n" + awsDoor, `firewall.aws: max_rules: 5000 is out of range 1-1000`},
		{"secret", head + sec + "secret_access_key = \"x\"\n" + awsDoor, `s.toml:7: firewall.aws: secret_access_key: credentials do not belong in sesame's configuration`},
		{"unknown key", head + sec + "zone = \"a\"\n" + awsDoor, `s.toml:7: firewall.aws: unknown key "zone"`},
		{"unknown firewall table", head + "[firewall.gcp]\nx = 1\n" + awsDoor, `firewall: unknown key "gcp" (want [firewall.aws])`},
		{"firewall not a table", "firewall = 1\n" + awsDoor, `firewall: want a table ([firewall.aws]), got an integer`},
		{"stealth default", "[server]\nfirewall = \"aws-sg\"\n" + sec + awsDoor, `server: stealth: firewall aws-sg cannot hold stealth "closed"`},
		{"stealth dark", "[server]\nfirewall = \"aws-sg\"\nstealth = \"dark\"\n" + sec + awsDoor, `cannot hold stealth "dark"`},
		{"scan", head + sec + awsDoor + "[scan]\n", `scan: firewall aws-sg cannot ban`},
		{"decoy ban", head + sec + awsDoor + "[[decoy]]\nports = [\"tcp/23\"]\n", `decoy #1: ban_for: firewall aws-sg cannot ban`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("s.toml", []byte(tc.src))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %q\nwant it to contain %q", err, tc.want)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("err %v is not a *Error", err)
			}
		})
	}
	// A decoy that only alerts is fine.
	if _, err := Parse("s.toml", []byte(head+sec+awsDoor+"[[decoy]]\nports = [\"tcp/23\"]\nban_for = \"0s\"\n")); err != nil {
		t.Errorf("alert-only decoy: %v", err)
	}
}

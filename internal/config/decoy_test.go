package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

const decoyDoor = "[[door]]\nname = \"d\"\nsequence = [\"7000/tcp\", \"8000/tcp\"]\nopen = [\"tcp/22\"]\n"

func TestDecoySections(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "hook.secret")
	if err := os.WriteFile(secret, []byte("0123456789abcdef-webhook\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose.secret")
	if err := os.WriteFile(loose, []byte("0123456789abcdef-webhook\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(loose, 0o644)
	good := decoyDoor + `[server]
never_ban = ["198.18.0.0/24", "fd5e:5a3e::1"]
[[decoy]]
ports = ["tcp/2323", "udp/161"]
ban_for = "2h"
banner = "Evidence Server\r\n"
[[decoy]]
ports = ["tcp/3389"]
alert = false
[alert]
url = "http://198.18.0.1:8080/hook"
secret_file = "hook.secret"
interval = "30s"
[scan]
window = "5s"
threshold = 20
ban_for = ["1m", "10m"]
`
	cfg, err := Parse(filepath.Join(dir, "sesame.toml"), []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	wantDecoys := []Decoy{
		{Ports: []netport.Port{{Proto: netport.TCP, Num: 2323}, {Proto: netport.UDP, Num: 161}}, BanFor: 2 * time.Hour, Banner: "Evidence Server\r\n", Alert: true},
		{Ports: []netport.Port{{Proto: netport.TCP, Num: 3389}}, BanFor: DefaultDecoyBanFor},
	}
	if !reflect.DeepEqual(cfg.Decoys, wantDecoys) {
		t.Errorf("decoys = %+v", cfg.Decoys)
	}
	if cfg.Alert.URL != "http://198.18.0.1:8080/hook" || string(cfg.Alert.Secret) != "0123456789abcdef-webhook" || cfg.Alert.Interval != 30*time.Second {
		t.Errorf("alert = %+v", cfg.Alert)
	}
	if s := cfg.Scan; s == nil || s.Window != 5*time.Second || s.Threshold != 20 || !reflect.DeepEqual(s.BanFor, []time.Duration{time.Minute, 10 * time.Minute}) || s.Forget != DefaultScanForget {
		t.Errorf("scan = %+v", cfg.Scan)
	}
	for _, tc := range []struct {
		addr string
		want bool
	}{{"198.18.0.9", true}, {"198.18.1.9", false}, {"fd5e:5a3e::1", true}, {"::ffff:198.18.0.2", true}, {"fd5e:5a3e::2", false}} {
		if got := cfg.Server.NeverBanned(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("NeverBanned(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}

	for _, tc := range []struct {
		name, text, want string
		line             int
	}{
		{"no ports", "[[decoy]]\nban_for = \"1h\"\n", "ports: at least one port is required", 1},
		{"bad port", "[[decoy]]\nports = [\"icmp\"]\n", "ports", 2},
		{"dup port", "[[decoy]]\nports = [\"tcp/23\"]\n[[decoy]]\nports = [\"tcp/23\"]\n", "already a port of decoy #1", 4},
		{"unknown", "[[decoy]]\nports = [\"tcp/23\"]\nbanfor = \"1h\"\n", `unknown key "banfor"`, 3},
		{"ban too long", "[[decoy]]\nports = [\"tcp/23\"]\nban_for = \"1000h\"\n", "more than", 3},
		{"alert no secret", "[alert]\nurl = \"http://x/\"\n", "secret_file: is required", 1},
		{"alert loose secret", "[alert]\nurl = \"http://x/\"\nsecret_file = \"loose.secret\"\n", "secret_file", 3},
		{"alert bad url", "[alert]\nurl = \"ftp://x/\"\nsecret_file = \"hook.secret\"\n", "not an http", 2},
		{"alert secret inline", "[alert]\nurl = \"http://x/\"\nsecret = \"s\"\n", `unknown key "secret"`, 3},
		{"scan threshold", "[scan]\nthreshold = 1\n", "threshold: 1 is out of range", 2},
		{"scan escalation", "[scan]\nban_for = [\"1h\", \"1m\"]\n", "bans escalate", 2},
		{"scan ban_for not list", "[scan]\nban_for = \"1h\"\n", "list of durations", 2},
		{"never_ban", "[server]\nnever_ban = [\"nope\"]\n", "never_ban", 2},
		{"decoy on an opened port", "[[decoy]]\nports = [\"tcp/22\"]\n", "tcp/22 is a port a door opens", 2},
		{"decoy on a knock", "[[decoy]]\nports = [\"udp/9\", \"tcp/8000\"]\n", `tcp/8000 is a knock of door "d"`, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "sesame.toml"), []byte(decoyDoor+tc.text))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q lacks %q", err, tc.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.Line != tc.line+4 {
				t.Errorf("error %q: line %d, want %d", err, e.Line, tc.line+4)
			}
			if strings.Contains(err.Error(), "0123456789abcdef") {
				t.Errorf("secret in error %q", err)
			}
		})
	}
}

// TestDecoyRemarks: a dark gate with decoys is allowed but warned about (its decoys can never
// ban); a closed gate with decoys, or a dark one without, is not.
func TestDecoyRemarks(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       bool
	}{
		{"dark with decoys", "[server]\nfirewall = \"nftables\"\nstealth = \"dark\"\n[[decoy]]\nports = [\"tcp/2323\", \"udp/161\"]\n", true},
		{"closed with decoys", "[server]\nfirewall = \"nftables\"\n[[decoy]]\nports = [\"tcp/2323\"]\n", false},
		{"dark without decoys", "[server]\nfirewall = \"nftables\"\nstealth = \"dark\"\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("sesame.toml", []byte(decoyDoor+tc.text))
			if err != nil {
				t.Fatal(err)
			}
			r := cfg.Remarks()
			if got := len(r) == 1 && strings.Contains(r[0], "(tcp/2323, udp/161)") && strings.Contains(r[0], "never banned"); got != tc.want {
				t.Errorf("remarks %q, want a dark-decoy warning: %v", r, tc.want)
			}
			if !tc.want && len(r) != 0 {
				t.Errorf("remarks %q, want none", r)
			}
		})
	}
}

// TestDecoyNotSPAPort: a decoy may not take the SPA port or a port an SPA client opens.
func TestDecoyNotSPAPort(t *testing.T) {
	dir, _ := spaKeys(t)
	spa := "[spa]\nlisten = \"udp/4000\"\n[[spa.client]]\nname = \"a\"\nkey_file = \"alice.key\"\nopen = [\"tcp/2222\"]\n"
	for _, tc := range []struct{ port, want string }{
		{"udp/4000", "udp/4000 is the SPA port"},
		{"tcp/2222", "tcp/2222 is a port SPA opens"},
	} {
		_, err := Parse(filepath.Join(dir, "s.toml"), []byte(spa+"[[decoy]]\nports = [\""+tc.port+"\"]\n"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("decoy %s: error %v, want %q", tc.port, err, tc.want)
		}
	}
	if _, err := Parse(filepath.Join(dir, "s.toml"), []byte(spa+"[[decoy]]\nports = [\"tcp/2323\"]\n")); err != nil {
		t.Errorf("a decoy on a free port: %v", err)
	}
}

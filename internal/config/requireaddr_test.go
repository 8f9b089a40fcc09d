package config

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestSPARequireAddress: require_address, per client and as the [spa] default, for native and
// fwknop clients (where require_source_address is fwknop's name for it).
func TestSPARequireAddress(t *testing.T) {
	dir, _ := spaKeys(t)
	native := "[[spa.client]]\nname = \"n\"\nkey_file = \"alice.key\"\nopen = [\"tcp/22\"]\n"
	fwk := "[[spa.client]]\nname = \"f\"\nformat = \"fwknop\"\nkey_file = \"fwknop.keys\"\nopen = [\"tcp/22\"]\n"
	tests := []struct {
		name string
		src  string
		want []bool // RequireSourceAddress of each client
	}{
		{"unset", "[spa]\n" + native + fwk, []bool{false, false}},
		{"native", "[spa]\n" + native + "require_address = true\n" + fwk, []bool{true, false}},
		{"fwknop", "[spa]\n" + native + fwk + "require_address = true\n", []bool{false, true}},
		{"fwknop's name", "[spa]\n" + native + fwk + "require_source_address = true\n", []bool{false, true}},
		{"both names agree", "[spa]\n" + native + fwk + "require_source_address = true\nrequire_address = true\n", []bool{false, true}},
		{"spa default", "[spa]\nrequire_address = true\n" + native + fwk, []bool{true, true}},
		{"client overrides default", "[spa]\nrequire_address = true\n" + native + "require_address = false\n" + fwk + "require_source_address = false\n", []bool{false, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse(filepath.Join(dir, "s.toml"), []byte(tc.src))
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.SPA.Clients) != len(tc.want) {
				t.Fatalf("%d clients", len(cfg.SPA.Clients))
			}
			for i, c := range cfg.SPA.Clients {
				if c.RequireSourceAddress != tc.want[i] {
					t.Errorf("client %q: require_address = %v, want %v", c.Name, c.RequireSourceAddress, tc.want[i])
				}
			}
			if err := cfg.SPA.Validate(cfg.Server.Firewall); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
	for _, tc := range []struct{ name, src, want string }{
		{"fwknop's name on native", "[spa]\n" + native + "require_source_address = true\n", `require_source_address: is fwknop's name: native clients use require_address`},
		{"names disagree", "[spa]\n" + fwk + "require_source_address = true\nrequire_address = false\n", `require_source_address: contradicts require_address`},
		{"not a boolean", "[spa]\n" + native + "require_address = \"yes\"\n", `require_address: want true or false`},
		{"spa not a boolean", "[spa]\nrequire_address = 1\n" + native, `spa: require_address: want true or false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "s.toml"), []byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

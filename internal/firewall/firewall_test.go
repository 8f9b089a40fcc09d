package firewall

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

func TestCheckGrants(t *testing.T) {
	src := netip.MustParseAddr("198.18.0.2")
	ssh := netport.Port{Proto: netport.TCP, Num: 22}
	tests := []struct {
		name    string
		g       Grant
		add     bool
		wantErr string // "" for no error
	}{
		{"valid add", Grant{Src: src, Port: ssh, Timeout: time.Second}, true, ""},
		{"revoke needs no timeout", Grant{Src: src, Port: ssh}, false, ""},
		{"no source", Grant{Port: ssh, Timeout: time.Second}, true, "no source address"},
		{"icmp", Grant{Src: src, Port: netport.Port{Proto: netport.ICMP}, Timeout: time.Second}, true, "only tcp and udp"},
		{"port 0", Grant{Src: src, Port: netport.Port{Proto: netport.UDP}, Timeout: time.Second}, false, "port 0"},
		{"add without timeout", Grant{Src: src, Port: ssh}, true, "at least 1ms"},
		{"add under 1ms", Grant{Src: src, Port: ssh, Timeout: time.Microsecond}, true, "at least 1ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckGrants([]Grant{tc.g}, tc.add)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("CheckGrants = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("CheckGrants = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
	if err := CheckGate(Gate{Protected: []netport.Port{ssh, {Proto: netport.TCP}}}); err == nil {
		t.Error("CheckGate accepted port 0")
	}
}

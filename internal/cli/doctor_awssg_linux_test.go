package cli

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestDoctorAWSSG: the doctor simulates the host's firewall, where firewall aws-sg keeps
// nothing: it says so instead of simulating a gate that is not there.
func TestDoctorAWSSG(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sesame.toml")
	write(t, path, "[server]\nfirewall = \"aws-sg\"\nstealth = \"off\"\n[firewall.aws]\nregion = \"us-east-1\"\nsecurity_groups = [\"sg-01234567\"]\n"+
		"[[door]]\nname = \"d\"\nsequence = [\"7000/tcp\"]\nopen = [\"tcp/22\"]\n")
	_, err := loadDoctorConfig(path, "", "", "")
	if err == nil || !strings.Contains(err.Error(), "firewall aws-sg keeps no rules on this host") {
		t.Fatalf("loadDoctorConfig: %v, want the refusal", err)
	}
	if _, err := loadDoctorConfig(path, "", "", "nftables"); err != nil {
		t.Fatalf("with --firewall nftables: %v", err)
	}
}

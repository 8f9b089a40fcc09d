// Package netnstest gives tests netnsbed beds: it skips without root and removes each bed when its test ends.
package netnstest

import (
	"context"
	"os"
	"os/exec"
	"testing"

	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// SkipUnlessRoot skips t unless the test runs as root with ip(8) available.
func SkipUnlessRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create network namespaces (CI runs these as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping: ip(8) from iproute2 is not installed")
	}
}

// NewT builds a bed for a test and removes it when the test ends, also on failure.
func NewT(t testing.TB) *netnsbed.Bed {
	t.Helper()
	b, err := netnsbed.New(context.Background())
	if err != nil {
		t.Fatalf("netnsbed: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("netnsbed: close: %v", err)
		}
	})
	return b
}

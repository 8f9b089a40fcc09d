//go:build linux

package nft

import (
	"testing"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/firewall/fwtest"
	"github.com/sesame-knock/sesame/internal/netnsbed"
)

// TestIntegrationNftState runs fwtest.RunState, the sequence the aws-sg backend runs against
// its EC2 double, on the kernel gate with real connections (data both ways) as Admits.
func TestIntegrationNftState(t *testing.T) {
	fwtest.RunStateKernel(t, func(t *testing.T, bed *netnsbed.Bed) firewall.Backend { return newInBed(t, bed) })
}

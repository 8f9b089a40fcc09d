package none

import (
	"context"
	"errors"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

func TestNone(t *testing.T) {
	ctx := context.Background()
	b := New()
	if err := b.Apply(ctx, firewall.Gate{}); err != nil {
		t.Fatalf("Apply(empty gate) = %v, want nil", err)
	}
	p := netport.Port{Proto: netport.TCP, Num: 22}
	err := b.Apply(ctx, firewall.Gate{Protected: []netport.Port{p}})
	if !errors.Is(err, ErrCannotGate) || !strings.Contains(err.Error(), "cannot gate ports") {
		t.Fatalf("Apply(tcp/22) = %v, want ErrCannotGate", err)
	}
	g := firewall.Grant{Src: netip.MustParseAddr("192.0.2.1"), Port: p, Timeout: time.Second}
	if err := b.Grant(ctx, g); !errors.Is(err, ErrCannotGate) {
		t.Fatalf("Grant = %v, want ErrCannotGate", err)
	}
	if err := b.Revoke(ctx, g); !errors.Is(err, ErrCannotGate) {
		t.Fatalf("Revoke = %v, want ErrCannotGate", err)
	}
	if l, err := b.List(ctx); err != nil || len(l) != 0 {
		t.Fatalf("List = %v, %v; want nothing", l, err)
	}
	if err := b.Close(ctx, true); err != nil {
		t.Fatal(err)
	}
}

// TestCannotGateNamesKinds: the fix ErrCannotGate suggests names only backends a configuration
// accepts (firewall.Kinds), not "nft" or "ipt".
func TestCannotGateNamesKinds(t *testing.T) {
	msg := ErrCannotGate.Error()
	quoted := regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(msg, -1)
	if len(quoted) < 3 {
		t.Fatalf("%q names %d backends", msg, len(quoted))
	}
	for _, q := range quoted {
		if !slices.Contains(firewall.Kinds(), firewall.Kind(q[1])) {
			t.Errorf("%q names %q, which is not a firewall kind %v", msg, q[1], firewall.Kinds())
		}
	}
}

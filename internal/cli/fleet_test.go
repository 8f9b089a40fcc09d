package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/cluster"
	"github.com/sesame-knock/sesame/internal/server"
)

// TestWriteStatusFleet: sesame status shows the fleet's members and which hold a grant, and
// says when Redis is down.
func TestWriteStatusFleet(t *testing.T) {
	seen := time.Date(2026, 12, 2, 1, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		fleet cluster.Status
		want  []string
	}{
		{"up", cluster.Status{Member: "gw0", Redis: "unix:///run/r.sock", Up: true, Mode: "refuse", Groups: []string{"web"},
			Members: []cluster.MemberStatus{{Name: "gw0", Groups: []string{"web"}, Seen: seen}, {Name: "gw1", Groups: []string{"web"}, Seen: seen}},
			Grants: []cluster.GrantStatus{{Group: "web", Origin: "gw1", By: "alice", Grants: []string{"198.18.0.2 tcp/22"},
				Expires: time.Now().Add(time.Minute), HeldBy: []string{"gw0", "gw1"}}}},
			[]string{"Fleet: member gw0, groups web, redis unix:///run/r.sock up", "Members: 2", "gw1     web     2026-12-02T01:00:00Z",
				"Fleet grants: 1", "web    gw1     alice  198.18.0.2 tcp/22  1m    gw0,gw1"}},
		{"down", cluster.Status{Member: "gw0", Redis: "redis://h:6379", Mode: "local", Err: "redis: connection refused"},
			[]string{"DOWN (on_redis_down = local)", "members and grants unknown: redis: connection refused"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b strings.Builder
			if err := writeStatus(&b, server.Status{Fleet: &tc.fleet}); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("no %q in:\n%s", w, b.String())
				}
			}
		})
	}
}

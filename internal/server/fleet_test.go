package server

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/cluster"
	"github.com/sesame-knock/sesame/internal/config"
)

// TestNeedsRestartCluster: a reload may not change [cluster] or the fleet groups.
func TestNeedsRestartCluster(t *testing.T) {
	base := "[[door]]\nname = \"d\"\nsequence = [\"7000/tcp\", \"8000/tcp\"]\nopen = [\"tcp/22\"]\n"
	cl := "[cluster]\nredis = \"unix:///run/r.sock\"\nmember = \"a\"\n"
	parse := func(s string) *config.Config {
		c, err := config.Parse("s.toml", []byte(s))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		name, a, b string
		want       bool
	}{
		{"same", base + cl, base + cl, false},
		{"added", base, base + cl, true},
		{"mode", base + cl, base + cl + "on_redis_down = \"local\"\n", true},
		{"door group", base + cl, strings.Replace(base, "open =", "group = \"web\"\nopen =", 1) + cl, true},
	} {
		got := slices.ContainsFunc(NeedsRestart(parse(tc.a), parse(tc.b), ""), func(s string) bool { return strings.Contains(s, "[cluster]") })
		if got != tc.want {
			t.Errorf("%s: needs restart = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// fleetRecorder is a Fleet that records what the server publishes.
type fleetRecorder struct {
	mu  sync.Mutex
	evs []cluster.Event
}

func (f *fleetRecorder) Publish(ev cluster.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.evs = append(f.evs, ev)
}

func (f *fleetRecorder) Status(context.Context) cluster.Status { return cluster.Status{Member: "gw0"} }

func (f *fleetRecorder) Totals() cluster.Totals {
	return cluster.Totals{Up: true, Counts: map[string]uint64{"claimed": 3}}
}

func (f *fleetRecorder) events() []cluster.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.evs)
}

// TestFleetGrants: a grouped door's grant is published with its absolute expiry; another
// member's grant is applied for the time it has left, only on protected ports and for good
// sources, and is not published again; a ban and a revoke are published, a revoke applied
// from the fleet is not.
func TestFleetGrants(t *testing.T) {
	cfg := doorConfig()
	cfg.Doors[0].Group = "web"
	rec := &fleetRecorder{}
	b := newBed(t, cfg, func(d *Deps, _ *bed) { d.Fleet = rec })
	b.knock(srcA, sequence...)
	evs := rec.events()
	if len(evs) != 1 || evs[0].Kind != cluster.KindGrant || evs[0].Group != "web" || evs[0].By != "ssh" ||
		len(evs[0].Grants) != 1 || evs[0].Grants[0].Src != srcA || !evs[0].Grants[0].Expires.Equal(b.clock.Now().Add(30*time.Second)) {
		t.Fatalf("published %+v", evs)
	}
	ctx := context.Background()
	now := b.clock.Now()
	for _, tc := range []struct {
		name    string
		g       cluster.Grant
		wantErr string
		granted bool
	}{
		{"live", cluster.Grant{Src: srcB, Port: tcp(22), Expires: now.Add(10 * time.Second)}, "", true},
		{"expired", cluster.Grant{Src: netip.MustParseAddr("198.18.0.4"), Port: tcp(22), Expires: now.Add(-time.Second)}, "", false},
		{"multicast source", cluster.Grant{Src: netip.MustParseAddr("224.0.0.1"), Port: tcp(22), Expires: now.Add(time.Minute)}, "source 224.0.0.1", false},
		{"unprotected port", cluster.Grant{Src: srcB, Port: tcp(2323), Expires: now.Add(time.Minute)}, "not a protected port", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := b.srv.ApplyFleet(ctx, cluster.Event{Kind: cluster.KindGrant, ID: tc.name, Origin: "gw9", Group: "web", By: "alice", Grants: []cluster.Grant{tc.g}})
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if got := b.fw.Has(tc.g.Src, tc.g.Port); got != tc.granted {
				t.Fatalf("granted %v, want %v", got, tc.granted)
			}
		})
	}
	grants, err := b.srv.Grants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(grants, func(g GrantStatus) bool { return g.Src == srcB })
	if i < 0 || grants[i].Kind != GrantFleet || grants[i].By != "alice@gw9" || grants[i].Remaining.Duration() != 10*time.Second {
		t.Fatalf("grants %+v", grants)
	}
	if n := len(rec.events()); n != 1 {
		t.Fatalf("%d events published; an applied grant was published again", n)
	}
	if _, err := b.srv.Revoke(ctx, RevokeRequest{Src: srcA}); err != nil {
		t.Fatal(err)
	}
	if evs := rec.events(); len(evs) != 2 || evs[1].Kind != cluster.KindRevoke || evs[1].Src != srcA {
		t.Fatalf("revoke not published: %+v", evs)
	}
	if err := b.srv.ApplyFleet(ctx, cluster.Event{Kind: cluster.KindRevoke, ID: "r", Origin: "gw9", Src: srcB}); err != nil {
		t.Fatal(err)
	}
	if b.fw.Has(srcB, tcp(22)) || len(rec.events()) != 2 {
		t.Fatalf("fleet revoke: still granted %v, events %d", b.fw.Has(srcB, tcp(22)), len(rec.events()))
	}
	// Bans: one made here is published with its end; one applied from the fleet is not, and
	// never for a never_ban source.
	if err := b.srv.Ban(ctx, netip.MustParseAddr("198.18.0.9"), time.Minute, "decoy tcp/23"); err != nil {
		t.Fatal(err)
	}
	if evs := rec.events(); len(evs) != 3 || evs[2].Kind != cluster.KindBan || !evs[2].Until.Equal(b.clock.Now().Add(time.Minute)) || evs[2].Reason != "decoy tcp/23" {
		t.Fatalf("ban not published: %+v", evs)
	}
	if err := b.srv.ApplyFleet(ctx, cluster.Event{Kind: cluster.KindBan, ID: "b", Origin: "gw9", Src: srcB, Until: b.clock.Now().Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if !b.fw.Banned(srcB) || len(rec.events()) != 3 {
		t.Fatalf("fleet ban: banned %v, events %d", b.fw.Banned(srcB), len(rec.events()))
	}
	st, err := b.srv.Status(ctx)
	if err != nil || st.Fleet == nil || st.Fleet.Member != "gw0" {
		t.Fatalf("status fleet %+v, %v", st.Fleet, err)
	}
}

package cluster

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Status is what sesame status shows of the fleet.
type Status struct {
	Member  string            `json:"member"`
	Redis   string            `json:"redis"` // the URL, credentials removed
	Up      bool              `json:"redis_up"`
	Mode    string            `json:"on_redis_down"`
	Groups  []string          `json:"groups"`
	Members []MemberStatus    `json:"members"`
	Grants  []GrantStatus     `json:"grants"`
	Counts  map[string]uint64 `json:"counters"`
	Err     string            `json:"error,omitempty"` // why Members and Grants are missing
}

// MemberStatus is one member whose heartbeat is live.
type MemberStatus struct {
	Name   string    `json:"name"`
	Groups []string  `json:"groups"`
	Seen   time.Time `json:"seen"`
}

// GrantStatus is one live fan-out grant: where it came from and which members hold it.
type GrantStatus struct {
	ID      string    `json:"id"`
	Group   string    `json:"group"`
	Origin  string    `json:"origin"`
	By      string    `json:"by"`
	Grants  []string  `json:"grants"` // "198.18.0.2 tcp/22"
	Expires time.Time `json:"expires"`
	HeldBy  []string  `json:"held_by"` // members that applied it (acks)
}

// Status reads the fleet's members and live fan-out grants from Redis (bounded: the newest
// entries of each group's stream).
func (n *Node) Status(ctx context.Context) Status {
	st := Status{Member: n.o.Member, Redis: n.o.Redis, Up: n.up.Load(), Mode: n.o.Mode, Groups: n.o.Groups,
		Members: []MemberStatus{}, Grants: []GrantStatus{}, Counts: n.counts()}
	ctx, cancel := context.WithTimeout(ctx, 5*n.o.Timeout)
	defer cancel()
	beats, err := n.b.Scan(ctx, n.key("member", ""))
	if err != nil {
		st.Err = err.Error()
		return st
	}
	for _, v := range beats {
		var b heartbeat
		if json.Unmarshal([]byte(v), &b) != nil || b.Member == "" {
			continue
		}
		st.Members = append(st.Members, MemberStatus{Name: b.Member, Groups: b.Groups, Seen: time.UnixMilli(b.Seen)})
	}
	slices.SortFunc(st.Members, func(a, b MemberStatus) int { return strings.Compare(a.Name, b.Name) })
	now := n.o.Now()
	for _, g := range n.o.Groups {
		msgs, err := n.b.Recent(ctx, n.stream(g), recentPerGroup)
		if err != nil {
			st.Err = err.Error()
			return st
		}
		for _, m := range msgs {
			ev, err := decodeEvent(m.Data)
			if err != nil || ev.Kind != KindGrant || !ev.expires(now).After(now) {
				continue
			}
			gs := GrantStatus{ID: ev.ID, Group: g, Origin: ev.Origin, By: ev.By, Expires: ev.expires(now)}
			for _, x := range ev.Grants {
				gs.Grants = append(gs.Grants, x.Src.String()+" "+x.Port.String())
			}
			held, err := n.b.Hash(ctx, n.key("held", ev.ID))
			if err == nil {
				for member, until := range held {
					if ms, err := strconv.ParseInt(until, 10, 64); err == nil && time.UnixMilli(ms).After(now) {
						gs.HeldBy = append(gs.HeldBy, member)
					}
				}
			}
			slices.Sort(gs.HeldBy)
			st.Grants = append(st.Grants, gs)
		}
	}
	return st
}

// Totals are a member's counters and whether it sees Redis, for metrics.
type Totals struct {
	Up     bool              `json:"redis_up"`
	Counts map[string]uint64 `json:"counters"` // the keys of Status.Counts
}

// Totals reads this member's counters; it does not call Redis.
func (n *Node) Totals() Totals { return Totals{Up: n.up.Load(), Counts: n.counts()} }

func (n *Node) counts() map[string]uint64 {
	c := &n.Counters
	return map[string]uint64{
		"claimed": c.Claimed.Load(), "replays": c.Replays.Load(), "refused_redis_down": c.RefusedDown.Load(),
		"local_claims": c.LocalClaims.Load(), "reconciled": c.Reconciled.Load(), "conflicts": c.Conflicts.Load(),
		"published": c.Published.Load(), "applied": c.Applied.Load(), "skipped": c.Skipped.Load(),
		"dropped": c.Dropped.Load(), "apply_errors": c.ApplyErrors.Load(),
		"claims_not_kept": c.NotKept.Load(), "refused_claims_full": c.RefusedFull.Load(),
	}
}

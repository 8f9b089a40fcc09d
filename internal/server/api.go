package server

import (
	"net/netip"
	"time"

	"github.com/sesame-knock/sesame/internal/cluster"
	"github.com/sesame-knock/sesame/internal/netport"
)

// The operator API: what the control socket, the metrics exporter and fleet mode read from and
// ask of a running Server (Status, Grants, Grant, Revoke, Stats). The types are plain data,
// encoded as JSON by the control socket (docs/CONTROL.md), so every field is exported and
// tagged; times are absolute (RFC 3339) and durations are whole milliseconds.

// Status is a running server's state, as `sesame status` shows it.
type Status struct {
	Version    string        `json:"version"`
	Started    time.Time     `json:"started"`
	Uptime     Millis        `json:"uptime_ms"`
	Firewall   string        `json:"firewall"` // the backend's name: nftables, iptables or none
	Config     string        `json:"config"`   // where the configuration came from
	Doors      []DoorStatus  `json:"doors"`
	SPA        *SPAStatus    `json:"spa,omitempty"` // nil when SPA is off
	InProgress int           `json:"sources_in_progress"`
	Grants     []GrantStatus `json:"grants"`
	Bans       []BanStatus   `json:"bans,omitempty"`
	// Fleet is the [cluster] fleet: members and fan-out grants (nil when alone).
	Fleet *cluster.Status `json:"fleet,omitempty"`
}

// DoorStatus is one knock door and its counters since the server started.
type DoorStatus struct {
	Name     string   `json:"name"`
	Sequence []string `json:"sequence"`
	// Rotate describes a rotating door (its Sequence is empty): "tcp/10000-60000 x4 every 30s".
	Rotate   string   `json:"rotate,omitempty"`
	Open     []string `json:"open,omitempty"` // ports the door grants, as "tcp/22"
	OpenFor  Millis   `json:"open_for_ms"`
	Commands bool     `json:"commands"` // the door runs start/stop commands
	Opened   uint64   `json:"opened"`
}

// SPAStatus is the SPA listener and its clients.
type SPAStatus struct {
	Listen  string            `json:"listen"` // "udp/62201"
	Sniff   bool              `json:"sniff"`
	ICMP    bool              `json:"icmp"` // SPA packets are also read from pings ([spa] icmp)
	Clients []SPAClientStatus `json:"clients"`
}

// SPAClientStatus is one SPA client (a native client or an access.conf stanza).
type SPAClientStatus struct {
	Name     string `json:"name"`
	Format   string `json:"format"` // native or fwknop
	Accepted uint64 `json:"accepted"`
	Refused  uint64 `json:"refused"` // authenticated packets refused by policy, replay or age
}

// GrantStatus is one live grant as the kernel holds it, with what made it.
type GrantStatus struct {
	Src       netip.Addr   `json:"src"`
	Port      netport.Port `json:"port"`
	Remaining Millis       `json:"remaining_ms"`
	By        string       `json:"by"`             // door name, SPA client name, or "operator"
	Kind      GrantKind    `json:"kind"`           // how it was made
	Note      string       `json:"note,omitempty"` // an operator's note (sesame grant --note)
	// To is a forward's destination: "198.19.0.2:22", or "local:22" for a port of this host.
	To string `json:"to,omitempty"`
}

// GrantKind says what made a grant.
type GrantKind string

// Grant kinds. A grant found in the kernel that this server did not make (an earlier run's,
// carried over) is GrantKernel.
const (
	GrantDoor     GrantKind = "door"
	GrantSPA      GrantKind = "spa"
	GrantOperator GrantKind = "operator"
	GrantKernel   GrantKind = "kernel"
)

// BanStatus is one live ban (decoys and scan detection; empty until those exist).
type BanStatus struct {
	Src       netip.Addr `json:"src"`
	Remaining Millis     `json:"remaining_ms"`
	Reason    string     `json:"reason"`
}

// GrantRequest is an operator's break-glass grant (sesame grant).
type GrantRequest struct {
	Src  netip.Addr   `json:"src"`
	Port netport.Port `json:"port"`
	For  Millis       `json:"for_ms"`
	Note string       `json:"note,omitempty"`
	UID  int          `json:"-"` // the caller, for the log line; set by the control socket
}

// RevokeRequest removes grants: one source's grant on one port, all of one source's grants
// (Port zero), or every grant (All). Kill also ends the matching established connections
// (conntrack), so a revoked session is really gone.
type RevokeRequest struct {
	Src  netip.Addr   `json:"src,omitzero"`
	Port netport.Port `json:"port,omitzero"`
	All  bool         `json:"all,omitempty"`
	Kill bool         `json:"kill,omitempty"`
	// Ban lifts Src's ban (sesame revoke --ban) instead of revoking grants.
	Ban bool `json:"ban,omitempty"`
	UID int  `json:"-"`
}

// RevokeResult says what a revoke removed.
type RevokeResult struct {
	Grants int `json:"grants"`         // grants (forwards included) removed from the kernel
	Killed int `json:"killed"`         // connections ended (with Kill)
	Bans   int `json:"bans,omitempty"` // bans lifted (with Ban)
}

// Millis is a duration encoded as whole milliseconds.
type Millis int64

// Duration converts m to a time.Duration.
func (m Millis) Duration() time.Duration { return time.Duration(m) * time.Millisecond }

// MillisOf rounds d to whole milliseconds.
func MillisOf(d time.Duration) Millis { return Millis(d.Round(time.Millisecond) / time.Millisecond) }

// Stats is one snapshot of every counter the server keeps, for metrics (docs/OPERATIONS.md) and
// `sesame status`. Counters only grow while the server runs; gauges say how things are now.
// Reasons are the typed refusal reasons of each stage, keyed by their log names.
type Stats struct {
	Capture  CaptureStats           `json:"capture"`
	Knock    KnockStats             `json:"knock"`
	SPA      SPAStats               `json:"spa"`
	Replay   ReplayStats            `json:"replay"`
	Commands CommandStats           `json:"commands"`
	Grants   map[string]GrantCounts `json:"grants"` // by door or SPA client name ("operator" for sesame grant)
	Logs     LogStats               `json:"logs"`
	Latency  Histogram              `json:"packet_to_grant"` // seconds, from packet seen to grant in the kernel
	Bans     BanStats               `json:"bans"`
	Fleet    *cluster.Totals        `json:"fleet,omitempty"` // nil when alone
}

// CaptureStats are the packet intake's counters.
type CaptureStats struct {
	Received     uint64 `json:"received"`
	KernelDrops  uint64 `json:"kernel_drops"`
	DecodeErrors uint64 `json:"decode_errors"`
	Truncated    uint64 `json:"truncated"`
}

// KnockStats are the knock state machine's counters.
type KnockStats struct {
	Packets uint64            `json:"packets"`
	Opened  uint64            `json:"opened"`
	Refused map[string]uint64 `json:"refused"` // by reason
	Guarded uint64            `json:"guarded"`
	Sources int               `json:"sources"` // gauge: sources with a sequence in progress
	Evicted uint64            `json:"evicted"`
}

// SPAStats count SPA decisions by format (native, fwknop) and result (the reason's log name,
// "accepted" for an accepted packet).
type SPAStats struct {
	Decisions map[string]map[string]uint64 `json:"decisions"`
}

// ReplayStats describe the replay cache.
type ReplayStats struct {
	Entries int `json:"entries"` // gauge: keys held now
}

// CommandStats are the command runner's counters, all doors together.
type CommandStats struct {
	Queued       int    `json:"queued"`  // gauge
	Running      int    `json:"running"` // gauge
	PendingStops int    `json:"pending_stops"`
	Run          uint64 `json:"run"`
	Failed       uint64 `json:"failed"`
	Overflowed   uint64 `json:"overflowed"`
}

// GrantCounts are one door's or client's grants.
type GrantCounts struct {
	Added   uint64 `json:"added"`
	Active  int    `json:"active"` // gauge: live in the kernel now
	Expired uint64 `json:"expired"`
	Errors  uint64 `json:"errors"` // grants the firewall refused
}

// LogStats count log lines held back by the global budgets.
type LogStats struct {
	Suppressed uint64 `json:"suppressed"`
}

// Histogram is a cumulative histogram with fixed upper bounds, as Prometheus exposes one.
type Histogram struct {
	Bounds []float64 `json:"bounds"` // upper bounds, ascending; +Inf is implied
	Counts []uint64  `json:"counts"` // cumulative count per bound
	Count  uint64    `json:"count"`
	Sum    float64   `json:"sum"`
}

// Package config loads sesame's native TOML configuration into the model the server runs.
package config

import (
	"net/netip"
	"slices"
	"time"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Firewall backends, as firewall.Kinds names them.
const (
	FirewallNftables = firewall.Nftables
	FirewallIptables = firewall.Iptables
	FirewallNone     = firewall.None
	FirewallAWSSG    = firewall.AWSSG
)

// What happens to the gate when the server stops.
const (
	OnStopClose  = "close"  // keep the gate: protected ports stay closed (fail closed, default)
	OnStopRemove = "remove" // remove sesame's table: protected ports are no longer gated
)

// Config is a whole, validated server configuration, whatever file format it came from.
type Config struct {
	// Source names the file(s) it was loaded from, for messages.
	Source string
	Server Server
	Doors  []Door
	// SPA is the single packet authorization server; nil means SPA is off.
	SPA *SPA
	// Control is the operator's control socket; Metrics the Prometheus listener.
	Control Control
	Metrics Metrics
	// Decoys are the [[decoy]] sections, Alert the [alert] webhook (URL empty: log lines
	// only), Scan the [scan] section (nil: scan detection off).
	Decoys []Decoy
	Alert  Alert
	Scan   *Scan
	// AWS is [firewall.aws], the security groups of firewall aws-sg (nil: not set).
	AWS *AWS
	// Cluster is the [cluster] section: the fleet's shared Redis (nil: this server is alone).
	Cluster *Cluster
}

// Control is the [control] section: the control socket sesame status, grant and revoke use
// (docs/CONTROL.md). Its zero value is the default: the socket at DefaultControlSocket, only
// root, grants of at most DefaultMaxGrant.
type Control struct {
	// Socket is the unix socket's absolute path; empty means DefaultControlSocket.
	Socket string
	// Group may read, AdminGroup may also change: a group name or a numeric gid; empty means
	// root only. That they exist is checked where the socket is served (control.Config.Check).
	Group, AdminGroup string
	// MaxGrant bounds sesame grant --for; zero means DefaultMaxGrant.
	MaxGrant time.Duration
}

// Metrics is the [metrics] section: the HTTP listener of the Prometheus exporter. Its zero value
// is off (the control socket still serves /metrics).
type Metrics struct {
	// Listen is host:port; empty is off.
	Listen string
	// AllowRemote permits a listen address that is not loopback.
	AllowRemote bool
}

// Server holds the daemon-wide settings.
type Server struct {
	// Interfaces to watch for knocks; empty means every interface.
	Interfaces []string
	// Firewall is one of firewall.Kinds.
	Firewall firewall.Kind
	// OnStop is OnStopClose or OnStopRemove.
	OnStop string
	// MaxSources caps the number of sources with knock state in memory (oldest evicted first).
	MaxSources int
	// SweepGuard is the width of the guard band around each sequence port (0: off). See
	// docs/SECURITY.md: a source that hits a guard port cannot start or continue a sequence.
	SweepGuard int
	// LogFile, when set, also writes knockd-style lines to this file; UseSyslog to syslog.
	LogFile   string
	UseSyslog bool
	// PidFile, when set, is written at start and removed at a clean stop.
	PidFile string
	// StateDir holds persistent state (replay cache).
	StateDir string
	// NeverBan lists sources that decoys and scan detection never ban ([server] never_ban).
	NeverBan []netip.Prefix
	// Stealth is how the gate refuses ([server] stealth, one of firewall.Stealths; default
	// closed): see docs/SECURITY.md. Allow is [server] allow, what a dark gate lets in.
	Stealth firewall.Stealth
	Allow   []firewall.Allow
}

// DefaultServer returns the [server] settings of a configuration that sets none.
func DefaultServer() Server {
	return Server{
		Firewall:   firewall.Nftables,
		OnStop:     OnStopClose,
		MaxSources: DefaultMaxSources,
		SweepGuard: DefaultSweepGuard,
		Stealth:    firewall.StealthClosed,
		StateDir:   DefaultStateDir,
	}
}

// Overrides are the settings the command line gives over a file's (sesame server --firewall, -i,
// --state-dir, --control-socket). Every loader applies them before it validates; a zero field
// overrides nothing.
type Overrides struct {
	Firewall   firewall.Kind
	Interfaces []string
	StateDir   string
	// ControlSocket is [control] socket (sesame server --control-socket).
	ControlSocket string
}

// Apply puts the overrides into c; c.Validate then judges the result.
func (c *Config) Apply(ov Overrides) {
	if ov.Firewall != "" {
		c.Server.Firewall = ov.Firewall
	}
	if ov.Interfaces != nil {
		c.Server.Interfaces = slices.Clone(ov.Interfaces)
	}
	if ov.StateDir != "" {
		c.Server.StateDir = ov.StateDir
	}
	if ov.ControlSocket != "" {
		c.Control.Socket = ov.ControlSocket
	}
}

// OpenPorts lists every port a door opens, each once, in the order the doors name them.
func (c *Config) OpenPorts() []netport.Port {
	var out []netport.Port
	for _, d := range c.Doors {
		for _, p := range d.Open {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
	}
	return out
}

// Door is a knock door: the sequence it recognises and what it does when it opens.
type Door struct {
	knock.Door
	// Open lists the ports granted to the knocking source for OpenFor.
	Open    []netport.Port
	OpenFor time.Duration
	// Commands, with %IP% replaced by the knocking address, run through /bin/sh -c. The _6
	// variants are used for IPv6 sources; they are already resolved (knockd's fallback to the
	// IPv4 command when absent), so an empty string means "run nothing".
	StartCommand, StartCommand6 string
	StopCommand, StopCommand6   string
	// CmdTimeout is the delay between the start and the stop command.
	CmdTimeout time.Duration
	// OneTimeFile is knockd's One_Time_Sequences file; when set, Sequence is its active line.
	OneTimeFile string
	// Rotate, when set, makes the door a rotating one: Sequence is empty and the server derives
	// one per time window ([[door]] secret_file and rotate).
	Rotate *Rotation
	// Payloads, when not nil, has one entry per Sequence element: the exact payload that knock
	// must carry (a UDP datagram's data, an ICMP echo's data), or nil for none.
	Payloads [][]byte
	// SourcePorts, when not empty, are the only source ports TCP and UDP knocks may come from.
	SourcePorts []PortRange
	// Group, when set, names the fleet group every member of which applies this door's grants
	// ([cluster]).
	Group string
}

// Payload is the payload knock i of the sequence must carry, nil for none.
func (d *Door) Payload(i int) []byte {
	if i < len(d.Payloads) {
		return d.Payloads[i]
	}
	return nil
}

// Defaults for values a configuration leaves out.
const (
	DefaultSequenceTimeout = 10 * time.Second
	DefaultOpenFor         = 30 * time.Second
	DefaultCmdTimeout      = 10 * time.Second
	DefaultMaxSources      = 65536
	DefaultSweepGuard      = 32
	DefaultStateDir        = "/var/lib/sesame"
	DefaultControlSocket   = "/run/sesame/control.sock" // as control.DefaultSocket
	DefaultMaxGrant        = 24 * time.Hour             // as control.DefaultMaxGrant
)

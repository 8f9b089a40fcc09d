package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Decoy is one [[decoy]] section: ports that nobody legitimate uses. A completed TCP handshake
// with one bans its source for BanFor (0: never); a UDP datagram only alerts.
type Decoy struct {
	Ports  []netport.Port
	BanFor time.Duration
	Banner string
	// Alert sends a log line and (with [alert] url) a webhook per visiting source and interval.
	Alert bool
}

// Alert is the [alert] section: the webhook that decoy and scan alerts are POSTed to.
type Alert struct {
	URL string
	// Secret is the HMAC key read from secret_file (mode 0600); never logged.
	Secret   []byte
	Interval time.Duration
}

// Scan is the [scan] section: a source that hits Threshold distinct sweep guard or knock ports
// within Window is banned, for BanFor[0] the first time, BanFor[1] the next, and so on (the last
// repeats). Offences are forgotten Forget after the last ban ends.
type Scan struct {
	Window    time.Duration
	Threshold int
	BanFor    []time.Duration
	Forget    time.Duration
}

// Defaults of the new sections.
const (
	DefaultDecoyBanFor   = time.Hour
	DefaultAlertInterval = time.Minute
	DefaultScanWindow    = 10 * time.Second
	DefaultScanThreshold = 10
	DefaultScanForget    = 24 * time.Hour
	MaxBanFor            = 30 * 24 * time.Hour
	MaxDecoyBanner       = 512
)

// DefaultScanBanFor is the escalation of a [scan] section that sets no ban_for.
func DefaultScanBanFor() []time.Duration {
	return []time.Duration{10 * time.Minute, time.Hour, 24 * time.Hour}
}

var (
	atAlert = place{table: toml.Key{"alert"}, index: -1}
	atScan  = place{table: toml.Key{"scan"}, index: -1}
)

func atDecoy(i int) place { return place{table: toml.Key{"decoy"}, index: i} }

type (
	tomlDecoy struct {
		Ports  field[[]openPort] `toml:"ports"`
		BanFor field[duration]   `toml:"ban_for"`
		Banner field[string]     `toml:"banner"`
		Alert  field[bool]       `toml:"alert"`
	}
	tomlAlert struct {
		URL        field[string]   `toml:"url"`
		SecretFile field[string]   `toml:"secret_file"`
		Interval   field[duration] `toml:"interval"`
	}
	tomlScan struct {
		Window    field[duration]   `toml:"window"`
		Threshold field[int]        `toml:"threshold"`
		BanFor    field[[]duration] `toml:"ban_for"`
		Forget    field[duration]   `toml:"forget"`
	}
)

// decoys decodes the [[decoy]] tables.
func (d *decoder) decoys(v toml.Primitive) ([]Decoy, error) {
	list, notArray, err := d.tables(v, toml.Key{"decoy"})
	if err != nil {
		return nil, err
	}
	if notArray != "" {
		return nil, problem(place{index: -1}, "", "decoy", "want [[decoy]] tables, got %s", notArray)
	}
	var out []Decoy
	seen := map[netport.Port]int{}
	for i, e := range list {
		var f tomlDecoy
		at := atDecoy(i)
		sec := fmt.Sprintf("decoy #%d", i+1)
		r, err := d.table(e, at, &f)
		switch {
		case err != nil:
			return nil, err
		case r.notTable != "":
			return nil, problem(at, sec, "", "want a table, got %s", r.notTable)
		case r.unknown != "":
			return nil, unknownKey(at, sec, r.unknown, "")
		case r.badKey != "":
			return nil, problem(at, sec, r.badKey, "%w", r.badErr)
		case len(f.Ports.v) == 0:
			return nil, problem(at, sec, "ports", "at least one port is required")
		}
		dc := Decoy{
			Ports:  convertList(f.Ports.v, func(p openPort) netport.Port { return netport.Port(p) }),
			BanFor: time.Duration(f.BanFor.or(duration(DefaultDecoyBanFor))),
			Banner: f.Banner.v,
			Alert:  f.Alert.or(true),
		}
		for _, p := range dc.Ports {
			if p.Proto != netport.TCP && p.Proto != netport.UDP {
				return nil, problem(at, sec, "ports", "%s: a decoy is a tcp or udp port", p)
			}
			if j, ok := seen[p]; ok {
				return nil, problem(at, sec, "ports", "%s is already a port of decoy #%d", p, j+1)
			}
			seen[p] = i
		}
		switch {
		case dc.BanFor > MaxBanFor:
			return nil, problem(at, sec, "ban_for", "%v is more than %v", dc.BanFor, MaxBanFor)
		case len(dc.Banner) > MaxDecoyBanner:
			return nil, problem(at, sec, "banner", "%d bytes is more than %d", len(dc.Banner), MaxDecoyBanner)
		}
		out = append(out, dc)
	}
	return out, nil
}

// alert decodes [alert] and reads its secret file.
func (d *decoder) alert(v toml.Primitive) (Alert, error) {
	var f tomlAlert
	if err := d.section(v, atAlert, &f); err != nil {
		return Alert{}, err
	}
	a := Alert{URL: f.URL.v, Interval: time.Duration(f.Interval.or(duration(DefaultAlertInterval)))}
	switch {
	case a.URL == "":
		return Alert{}, problem(atAlert, "alert", "url", "is required")
	case a.Interval <= 0:
		return Alert{}, problem(atAlert, "alert", "interval", "must be more than 0")
	case !f.SecretFile.set:
		return Alert{}, problem(atAlert, "alert", "secret_file", "is required: webhooks are HMAC-signed")
	}
	if !validURL(a.URL) {
		return Alert{}, problem(atAlert, "alert", "url", "%q is not an http:// or https:// URL", a.URL)
	}
	sec, err := d.readSecret(f.SecretFile.v)
	if err != nil {
		return Alert{}, problem(atAlert, "alert", "secret_file", "%w", err)
	}
	if a.Secret = []byte(keyText(sec)); len(a.Secret) < 16 {
		return Alert{}, problem(atAlert, "alert", "secret_file", "the secret is shorter than 16 bytes")
	}
	return a, nil
}

func validURL(u string) bool {
	for _, p := range []string{"http://", "https://"} {
		if len(u) > len(p) && u[:len(p)] == p {
			return true
		}
	}
	return false
}

// scan decodes [scan].
func (d *decoder) scan(v toml.Primitive) (*Scan, error) {
	var f tomlScan
	if err := d.section(v, atScan, &f); err != nil {
		return nil, err
	}
	s := &Scan{
		Window:    time.Duration(f.Window.or(duration(DefaultScanWindow))),
		Threshold: f.Threshold.or(DefaultScanThreshold),
		Forget:    time.Duration(f.Forget.or(duration(DefaultScanForget))),
		BanFor:    DefaultScanBanFor(),
	}
	if f.BanFor.set {
		s.BanFor = convertList(f.BanFor.v, func(d duration) time.Duration { return time.Duration(d) })
	}
	switch {
	case s.Window <= 0:
		return nil, problem(atScan, "scan", "window", "must be more than 0")
	case s.Threshold < 2 || s.Threshold > 65535:
		return nil, problem(atScan, "scan", "threshold", "%d is out of range 2-65535", s.Threshold)
	case len(s.BanFor) == 0:
		return nil, problem(atScan, "scan", "ban_for", "needs at least one duration")
	}
	for i, b := range s.BanFor {
		if b < time.Second || b > MaxBanFor {
			return nil, problem(atScan, "scan", "ban_for", "%v is out of range 1s-%v", b, MaxBanFor)
		}
		if i > 0 && b < s.BanFor[i-1] {
			return nil, problem(atScan, "scan", "ban_for", "%v is shorter than the %v before it: bans escalate", b, s.BanFor[i-1])
		}
	}
	return s, nil
}

// NeverBanned reports whether a is in one of the never_ban prefixes.
func (s *Server) NeverBanned(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.NeverBan {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// checkDecoys refuses a decoy port that legitimate users touch: a port a door or SPA opens
// (a user's connection would ban them), the SPA port, or a knock of a door's sequence.
func (c *Config) checkDecoys() error {
	type use struct {
		what string
		p    netport.Port
	}
	var taken []use
	for _, p := range c.OpenPorts() {
		taken = append(taken, use{"a port a door opens", p})
	}
	if c.SPA != nil {
		taken = append(taken, use{"the SPA port", netport.Port{Proto: netport.UDP, Num: c.SPA.Port}})
		for _, p := range c.SPA.Protected() {
			taken = append(taken, use{"a port SPA opens", p})
		}
	}
	for _, d := range c.Doors {
		for _, p := range d.Sequence {
			taken = append(taken, use{fmt.Sprintf("a knock of door %q", d.Name), p})
		}
	}
	for i, d := range c.Decoys {
		for _, p := range d.Ports {
			for _, t := range taken {
				if t.p == p {
					return problem(atDecoy(i), fmt.Sprintf("decoy #%d", i+1), "ports",
						"%s is %s: a decoy port must be one nobody legitimate uses", p, t.what)
				}
			}
		}
	}
	return nil
}

// Remarks are warnings about the whole configuration that are not errors, for the start log
// and --check.
func (c *Config) Remarks() []string {
	var out []string
	if c.Server.Stealth == firewall.StealthDark && len(c.Decoys) > 0 {
		var ports []string
		for _, d := range c.Decoys {
			for _, p := range d.Ports {
				ports = append(ports, p.String())
			}
		}
		out = append(out, fmt.Sprintf("stealth = dark drops every packet from sources outside [server] allow, also to the decoy ports (%s): "+
			"no scanner can complete a handshake with them, so their visits are only alerted (SYN, UDP), never banned; use stealth = closed for decoys that answer",
			strings.Join(ports, ", ")))
	}
	return out
}

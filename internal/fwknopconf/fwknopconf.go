// Package fwknopconf turns an fwknopd configuration directory (fwknopd.conf and access.conf) into a sesame configuration.
package fwknopconf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
)

// fwknopd.conf options sesame refuses: ignoring them would leave packets unseen or change what
// a grant means.
var serverErrors = map[string]string{
	"ENABLE_TCP_SERVER":    "SPA over TCP is not supported (send SPA over UDP)",
	"ENABLE_SPA_OVER_HTTP": "SPA over HTTP is not supported",
	"ENABLE_NFQ_CAPTURE":   "NFQUEUE capture is not supported",
}

// fwknopd.conf options that are safe to ignore: their job is done differently by sesame.
var serverIgnored = map[string]string{
	"FLUSH_IPT_AT_INIT":        "sesame manages its own chain",
	"FLUSH_IPT_AT_EXIT":        "sesame's on_stop decides",
	"PCAP_LOOP_SLEEP":          "sesame does not poll",
	"PCAP_DISPATCH_COUNT":      "sesame does not poll",
	"MAX_SNIFF_BYTES":          "sesame reads whole SPA datagrams",
	"ENABLE_PCAP_PROMISC":      "sesame never sets promiscuous mode",
	"LOCALE":                   "",
	"VERBOSE":                  "use --log-level",
	"SYSLOG_IDENTITY":          "sesame logs to stderr",
	"SYSLOG_FACILITY":          "sesame logs to stderr",
	"ENABLE_IPT_COMMENT_MATCH": "sesame's grants expire in ipsets",
	"RULES_CHECK_THRESHOLD":    "sesame's grants expire in the kernel",
	"ENABLE_RULE_PREPEND":      "sesame's chain is always jumped to first",
	"IPT_INPUT_ACCESS":         "sesame's chain is SESAME",
	"IPT_OUTPUT_ACCESS":        "sesame's chain is SESAME",
	"IPT_FORWARD_ACCESS":       "sesame does not forward",
	"IPT_DNAT_ACCESS":          "sesame does not forward",
	"IPT_SNAT_ACCESS":          "sesame does not forward",
	"IPT_MASQUERADE_ACCESS":    "sesame does not forward",
	"ENABLE_IPT_OUTPUT":        "sesame adds no OUTPUT rules",
	"ENABLE_IPT_SNAT":          "sesame does not forward",
	"IPTABLES_EXE":             "sesame finds iptables itself",
	"FIREWALL_EXE":             "sesame finds iptables itself",
	"GPG_EXE":                  "GPG is not supported",
	"SUDO_EXE":                 "",
	"FWKNOP_CONF_DIR":          "",
	"FWKNOP_PID_FILE":          "",
	"FWKNOP_PID_DIR":           "",
	"ENABLE_DESTINATION_RULE":  "",
	"PCAP_FILTER":              "",
}

// access.conf options (kept in AccessStanza.Other) that sesame refuses.
var accessErrors = map[string]string{
	"FORCE_SNAT":       "source NAT is not supported (the inner host needs a route back through this one)",
	"FORCE_MASQUERADE": "source NAT is not supported (the inner host needs a route back through this one)",
	"DISABLE_DNAT":     "forwarding without destination NAT is not supported",
	"FORWARD_ALL":      "forwarding is not supported",
}

// Load reads dir/fwknopd.conf (optional: fwknopd's defaults) and dir/access.conf and returns the
// equivalent configuration: fwknopd's defaults (the iptables backend, sniffing unless
// ENABLE_UDP_SERVER is Y), one fwknop-format SPA client per SOURCE stanza, no doors. Options
// sesame does not support are errors when ignoring them would widen access or lose packets, and
// warnings (in Config.SPA.Warnings) otherwise. ov is applied before the result is validated.
func Load(dir string, ov config.Overrides) (*config.Config, error) {
	const op = "fwknop-conf"
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s: %s is not a directory (want the directory holding fwknopd.conf and access.conf)", op, dir)
	}
	srvPath := filepath.Join(dir, "fwknopd.conf")
	accPath := filepath.Join(dir, "access.conf")
	var readable []string // files group or others may read: fwknopd warns and runs, and so does sesame
	srvData, srvInfo, err := config.ReadConfigFile(srvPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
		srvData = nil
	case err != nil:
		return nil, fmt.Errorf("%s: %w", op, err)
	case srvInfo.Mode().Perm()&0o044 != 0:
		readable = append(readable, fmt.Sprintf("%s is readable by group or others (mode %04o): chmod 600 %s", srvPath, srvInfo.Mode().Perm(), srvPath))
	}
	accData, accInfo, err := config.ReadConfigFile(accPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if accInfo.Mode().Perm()&0o044 != 0 {
		readable = append(readable, fmt.Sprintf("%s holds keys and is readable by group or others (mode %04o): chmod 600 %s", accPath, accInfo.Mode().Perm(), accPath))
	}
	cfg, err := parse(dir, srvPath, srvData, accPath, accData, ov)
	if err != nil {
		return nil, err
	}
	cfg.SPA.Warnings = append(readable, cfg.SPA.Warnings...)
	return cfg, nil
}

// Parse converts the contents of fwknopd.conf (nil: all defaults) and access.conf; source names
// the configuration in messages.
func Parse(source, srvName string, srvData []byte, accName string, accData []byte) (*config.Config, error) {
	return parse(source, srvName, srvData, accName, accData, config.Overrides{})
}

// ParseOverrides is Parse with the overrides sesame server would run the configuration with
// (a FORCE_NAT configuration validates only with firewall nftables).
func ParseOverrides(source, srvName string, srvData []byte, accName string, accData []byte, ov config.Overrides) (*config.Config, error) {
	return parse(source, srvName, srvData, accName, accData, ov)
}

func parse(source, srvName string, srvData []byte, accName string, accData []byte, ov config.Overrides) (*config.Config, error) {
	srv, err := fwknop.ParseServerConf(srvName, srvData)
	if err != nil {
		return nil, err
	}
	stanzas, err := fwknop.ParseAccess(accName, accData)
	if err != nil {
		return nil, err
	}
	cfg := &config.Config{Source: source, Server: config.DefaultServer()}
	cfg.Server.Firewall = config.FirewallIptables
	s := &config.SPA{MaxAge: srv.MaxSPAPacketAge}
	cfg.SPA = s
	warn := func(format string, args ...any) { s.Warnings = append(s.Warnings, fmt.Sprintf(format, args...)) }
	// The replay cache must outlive a reboot, and fwknopd's run directory is usually a tmpfs
	// (/run/fwknop): sesame keeps it in its own state directory.
	if srv.RunDir != "" {
		warn("%s: FWKNOP_RUN_DIR is not used: sesame keeps its replay cache in %s, which survives a reboot (sesame server --state-dir DIR to move it)", srvName, cfg.Server.StateDir)
	}

	// Where packets arrive.
	if srv.EnableUDPServer {
		s.Port = srv.UDPServPort
		if setIn(srvData, "PCAP_INTF") || setIn(srvData, "PCAP_FILTER") {
			warn("%s: PCAP_INTF and PCAP_FILTER are not used with ENABLE_UDP_SERVER Y", srvName)
		}
	} else {
		s.Sniff = true
		switch {
		case srv.PCAPProto == netport.UDP && srv.PCAPPort != 0:
			s.Port = srv.PCAPPort
		case srv.PCAPICMP && srv.PCAPPort == 0:
			s.Port = config.DefaultSPAPort
			warn("%s: PCAP_FILTER %q: sesame sniffs udp/%d for SPA too (it always has an SPA port; the gate drops it)", srvName, srv.PCAPFilter, s.Port)
		default:
			return nil, fmt.Errorf("%s: PCAP_FILTER %q: sesame needs a filter of the form \"udp port N\", \"icmp\" or \"udp port N or icmp\"", srvName, srv.PCAPFilter)
		}
		// fwknop -P icmp: SPA in the payload of an ICMP echo request or (the client's default)
		// echo reply. fwknopd reads IPv4 ICMP only; sesame also reads ICMPv6 echo requests.
		s.ICMP = srv.PCAPICMP
		if setIn(srvData, "PCAP_INTF") {
			if err := config.CheckInterface(srv.PCAPIntf); err != nil {
				return nil, fmt.Errorf("%s: PCAP_INTF: %w", srvName, err)
			}
			cfg.Server.Interfaces = []string{srv.PCAPIntf}
		} else {
			warn("%s: PCAP_INTF is not set: sesame watches every interface (fwknopd would watch eth0)", srvName)
		}
	}
	if !srv.EnableSPAPacketAging {
		warn("%s: ENABLE_SPA_PACKET_AGING N is ignored: sesame always refuses packets older than MAX_SPA_PACKET_AGE (%v)", srvName, srv.MaxSPAPacketAge)
	}
	if s.MaxAge < time.Second {
		return nil, fmt.Errorf("%s: MAX_SPA_PACKET_AGE must be at least 1 second", srvName)
	}
	if !srv.EnableDigestPersistence {
		warn("%s: ENABLE_DIGEST_PERSISTENCE N is ignored: sesame always keeps its replay cache in %s", srvName, filepath.Join(cfg.Server.StateDir, "replay.db"))
	}
	if srv.DigestFile != "" {
		warn("%s: DIGEST_FILE is not read: sesame keeps its own replay cache in %s", srvName, filepath.Join(cfg.Server.StateDir, "replay.db"))
	}
	if srv.EnableIPTForwarding && !slices.ContainsFunc(stanzas, func(st fwknop.AccessStanza) bool { return st.Other["FORCE_NAT"] != "" }) {
		warn("%s: ENABLE_IPT_FORWARDING without FORCE_NAT in any stanza: NAT requests (-N) are refused (forward not allowed): sesame forwards only to destinations the configuration names (FORCE_NAT, or a native forward list)", srvName)
	}
	if srv.AccessFile != "" && filepath.Clean(srv.AccessFile) != filepath.Clean(accName) {
		warn("%s: ACCESS_FILE %s is not read: sesame reads %s", srvName, srv.AccessFile, accName)
	}
	for _, k := range sortedKeys(srv.Other) {
		v := srv.Other[k]
		if why, bad := serverErrors[k]; bad {
			if on, _ := yes(v); on {
				return nil, fmt.Errorf("%s: %s: %s", srvName, k, why)
			}
			continue
		}
		why, ok := serverIgnored[k]
		if !ok {
			why = "not supported by sesame"
		}
		if why == "" {
			why = "not needed by sesame"
		}
		warn("%s: %s is ignored: %s", srvName, k, why)
	}

	// Who may ask for what.
	for i, st := range stanzas {
		c, err := client(accName, i, st, srv, warn)
		if err != nil {
			return nil, err
		}
		s.Clients = append(s.Clients, c)
	}
	cfg.Apply(ov)
	if srv.EnableIPTLocalNAT && cfg.Server.Firewall != firewall.Nftables {
		// Only the nftables backend forwards; the others keep running without local NAT, as
		// before (FORCE_NAT, which fwknopd cannot run without, stays an error there).
		for i := range s.Clients {
			s.Clients[i].Forward = slices.DeleteFunc(s.Clients[i].Forward, func(f config.Forward) bool { return f.NATOnly })
		}
		warn("%s: ENABLE_IPT_LOCAL_NAT needs --firewall nftables: with %s, local NAT requests (--nat-local) are refused", srvName, cfg.Server.Firewall)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", accName, err)
	}
	return cfg, nil
}

func client(accName string, i int, st fwknop.AccessStanza, srv *fwknop.ServerConf, warn func(string, ...any)) (config.SPAClient, error) {
	where := fmt.Sprintf("%s:%d: stanza #%d", accName, st.Line, i+1)
	c := config.SPAClient{
		Name:                 fmt.Sprintf("stanza#%d", i+1),
		Format:               config.SPAFormatFwknop,
		Fwknop:               st.Keys,
		Open:                 st.OpenPorts,
		AnyPort:              st.OpenPorts == nil,
		Restrict:             st.RestrictPorts,
		Sources:              st.Source,
		RequireUsername:      st.RequireUsername,
		RequireSourceAddress: st.RequireSourceAddress,
		AccessExpire:         st.AccessExpire,
		DefaultOpenFor:       st.FWAccessTimeout,
		MaxOpenFor:           st.MaxFWTimeout,
	}
	if st.SourceAny {
		c.Sources = slices.Clone(config.AnySource)
	}
	if len(st.Keys.Key) == 0 {
		return c, fmt.Errorf("%s: GPG keys are not supported: set KEY_BASE64 and HMAC_KEY_BASE64", where)
	}
	if st.Destination != nil {
		return c, fmt.Errorf("%s: DESTINATION is not supported (the stanza would apply to every local address)", where)
	}
	// fwknopd.conf's FW_ACCESS_TIMEOUT is the default of stanzas that keep the built-in one.
	if c.DefaultOpenFor == fwknop.DefaultFWAccessTimeout && srv.FWAccessTimeout != fwknop.DefaultFWAccessTimeout {
		c.DefaultOpenFor = srv.FWAccessTimeout
	}
	switch {
	case c.DefaultOpenFor < config.MinOpenFor:
		return c, fmt.Errorf("%s: FW_ACCESS_TIMEOUT must be at least 1 second", where)
	case c.MaxOpenFor < config.MinOpenFor:
		return c, fmt.Errorf("%s: MAX_FW_TIMEOUT must be at least 1 second", where)
	case c.DefaultOpenFor > config.MaxOpenFor || c.MaxOpenFor > config.MaxOpenFor:
		return c, fmt.Errorf("%s: FW_ACCESS_TIMEOUT and MAX_FW_TIMEOUT may be at most %v", where, config.MaxOpenFor)
	case c.DefaultOpenFor > c.MaxOpenFor:
		// fwknopd caps only client timeouts at MAX_FW_TIMEOUT; sesame has one cap for both, and
		// keeps MAX_FW_TIMEOUT's: a client never gets longer than under fwknopd.
		warn("%s: FW_ACCESS_TIMEOUT %v is more than MAX_FW_TIMEOUT %v: every grant is at most %v, also without a client timeout (fwknopd would give %v)", where, c.DefaultOpenFor, c.MaxOpenFor, c.MaxOpenFor, c.DefaultOpenFor)
		c.DefaultOpenFor = c.MaxOpenFor
	}
	if c.AnyPort {
		warn("%s: no OPEN_PORTS: any port may be requested; as with fwknopd, only the host's own rules keep those ports closed", where)
	}
	if !st.SourceAny && len(c.Sources) == 0 {
		return c, fmt.Errorf("%s: empty SOURCE", where)
	}
	if st.Keys.HMACKey == nil {
		warn("%s: no HMAC key: packets are not authenticated before decryption (set HMAC_KEY_BASE64)", where)
	}
	if st.EnableCmdExec {
		warn("%s: ENABLE_CMD_EXEC is not supported yet: command requests are refused", where)
	}
	if st.CmdCycleOpen != "" || st.CmdCycleClose != "" {
		warn("%s: CMD_CYCLE_OPEN/CMD_CYCLE_CLOSE are not supported yet: sesame opens the ports with its firewall instead", where)
	}
	if v := st.Other["FORCE_NAT"]; v != "" {
		if err := forceNAT(&c, v, srv); err != nil {
			return c, fmt.Errorf("%s: FORCE_NAT: %w", where, err)
		}
	} else if srv.EnableIPTLocalNAT {
		localNAT(&c, warn, where)
	}
	for _, k := range sortedKeys(st.Other) {
		if k == "FORCE_NAT" {
			continue
		}
		if why, bad := accessErrors[k]; bad {
			return c, fmt.Errorf("%s: %s: %s", where, k, why)
		}
		warn("%s: %s is not supported and is ignored", where, k)
	}
	return c, nil
}

// setIn reports whether a fwknopd.conf text sets option name (not in a comment).
func setIn(data []byte, name string) bool {
	for l := range strings.SplitSeq(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) > 0 && strings.EqualFold(f[0], name) {
			return true
		}
	}
	return false
}

func yes(v string) (bool, bool) {
	switch strings.ToUpper(strings.TrimSpace(v)) {
	case "Y", "YES", "1", "ON", "TRUE":
		return true, true
	case "N", "NO", "0", "OFF", "FALSE":
		return false, true
	}
	return false, false
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// forceNAT turns a stanza's FORCE_NAT IP PORT into forwards: each port of OPEN_PORTS a packet asks
// for (-A, or -N naming this destination) is forwarded to IP:PORT, as fwknopd does, instead of
// being opened here.
func forceNAT(c *config.SPAClient, v string, srv *fwknop.ServerConf) error {
	f := strings.Fields(v)
	if len(f) != 2 {
		return fmt.Errorf("%q: want IP PORT", v)
	}
	if !srv.EnableIPTForwarding {
		return errors.New("needs ENABLE_IPT_FORWARDING Y in fwknopd.conf")
	}
	if c.AnyPort {
		return errors.New("needs OPEN_PORTS: the ports forwarded")
	}
	c.Forward = nil
	for _, p := range c.Open {
		fw, err := config.ParseForward(fmt.Sprintf("%s -> %s", p, net.JoinHostPort(f[0], f[1])))
		if err != nil {
			return err
		}
		c.Forward = append(c.Forward, fw)
	}
	c.Open = nil
	return nil
}

// localNAT is fwknopd's ENABLE_IPT_LOCAL_NAT for a stanza: a --nat-local request may redirect a
// port of this host the client picks (--nat-port, --nat-rand-port) to a port of OPEN_PORTS, for
// the client's address. The forwards are NAT-only: a plain request still opens the port itself.
func localNAT(c *config.SPAClient, warn func(string, ...any), where string) {
	if c.AnyPort {
		warn("%s: no OPEN_PORTS: ENABLE_IPT_LOCAL_NAT requests (--nat-local) are refused: sesame redirects only to ports OPEN_PORTS names", where)
		return
	}
	for _, p := range c.Open {
		if p.Proto != netport.TCP && p.Proto != netport.UDP {
			continue
		}
		c.Forward = append(c.Forward, config.Forward{
			Port: netport.Port{Proto: p.Proto}, To: netip.AddrPortFrom(netip.Addr{}, p.Num), Local: true, NATOnly: true,
		})
	}
}

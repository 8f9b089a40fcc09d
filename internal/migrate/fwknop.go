package migrate

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/fwknopconf"
	"github.com/sesame-knock/sesame/internal/netport"
)

// Fwknop migrates an fwknopd configuration directory: srvData is its fwknopd.conf (nil when
// there is none: fwknopd's defaults) and accData its access.conf. Every stanza's keys go to
// files in keysDir (Result.Keys), which the configuration names; keysDir should be absolute,
// since relative key file names are relative to the configuration file. ov are the overrides
// sesame server --fwknop-conf would run it with.
func Fwknop(dir string, srvData, accData []byte, keysDir string, ov config.Overrides) (*Result, error) {
	srvName, accName := filepath.Join(dir, "fwknopd.conf"), filepath.Join(dir, "access.conf")
	legacy, err := fwknopconf.ParseOverrides(dir, srvName, srvData, accName, accData, ov)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	legacy.Apply(ov)
	if err := legacy.Validate(); err != nil {
		return nil, fmt.Errorf("migrate: %s: %w", dir, err)
	}
	stanzas, err := fwknop.ParseAccess(accName, accData)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	s := legacy.SPA
	if len(stanzas) != len(s.Clients) {
		return nil, fmt.Errorf("migrate: %s: found %d stanzas, the loader %d clients", accName, len(stanzas), len(s.Clients))
	}
	res := &Result{Legacy: legacy}
	w := &writer{}
	w.comment("sesame configuration migrated by `sesame migrate fwknop` from %s.", dir)
	w.comment("Its clients keep using the fwknop client: they are format = \"fwknop\", with their keys")
	w.comment("in files of %s (mode 0600).", keysDir)
	w.comment("Check it with: sesame server -c FILE --check")
	if len(s.Warnings) > 0 {
		w.line("")
		w.comment("What sesame server --fwknop-conf says about the fwknopd configuration; it holds for")
		w.comment("this one too:")
		for _, m := range s.Warnings {
			w.comment("- %s", m)
		}
	}
	w.line("")
	w.line("[server]")
	if ov.Firewall != "" {
		w.comment("From --firewall, as sesame server --fwknop-conf ran it.")
	} else {
		w.comment("fwknopd's firewall: grants are iptables rules at the top of INPUT (\"iptables\"), as")
		w.comment("with --fwknop-conf. \"nftables\" is sesame's own gate (docs/FIREWALL.md).")
	}
	w.str("firewall", string(legacy.Server.Firewall))
	if len(legacy.Server.Interfaces) > 0 {
		w.comment("%s: PCAP_INTF", srvName)
		w.list("interfaces", legacy.Server.Interfaces)
	}
	w.line("")
	w.line("[spa]")
	sniff := s.Sniff && !s.SniffForStealth
	if sniff {
		w.comment("%s: PCAP_FILTER (no ENABLE_UDP_SERVER): packets are sniffed, nothing listens on the port", srvName)
	} else {
		w.comment("%s: ENABLE_UDP_SERVER, UDPSERV_PORT. With stealth = \"closed\" (the default) sesame", srvName)
		w.comment("sniffs the port anyway, so that it looks like a port where nothing runs.")
	}
	w.str("listen", fmt.Sprintf("udp/%d", s.Port))
	w.bool("sniff", sniff)
	if s.ICMP {
		w.comment("%s: PCAP_FILTER takes icmp: SPA in pings (fwknop -P icmp) is sniffed too", srvName)
		w.bool("icmp", true)
	}
	w.comment("MAX_SPA_PACKET_AGE")
	w.duration("max_age", s.MaxAge)

	for i := range s.Clients {
		c, st := &s.Clients[i], &stanzas[i]
		section := fmt.Sprintf("stanza #%d", i+1)
		if err := checkFwknopClient(accName, st.Line, section, c); err != nil {
			return nil, err
		}
		w.line("")
		w.comment("%s:%d: %s (SOURCE)", accName, st.Line, section)
		w.line("[[spa.client]]")
		w.str("name", c.Name)
		w.str("format", config.SPAFormatFwknop)
		base := filepath.Join(keysDir, fmt.Sprintf("stanza-%d", i+1))
		about := fmt.Sprintf("%s, %s:%d", section, accName, st.Line)
		key := KeyFile{Path: base + ".key", About: "encryption key of " + about,
			Data: fmt.Appendf(nil, "# fwknop encryption key of %s, from sesame migrate\nKEY_BASE64 %s\n", about, base64.StdEncoding.EncodeToString(c.Fwknop.Key))}
		res.Keys = append(res.Keys, key)
		w.comment("KEY or KEY_BASE64 (a KEY passphrase is written base64-encoded: the same bytes)")
		w.str("key_file", key.Path)
		if c.Fwknop.HMACKey != nil {
			hk := KeyFile{Path: base + ".hmac", About: "HMAC key of " + about,
				Data: fmt.Appendf(nil, "# fwknop HMAC key of %s, from sesame migrate\nHMAC_KEY_BASE64 %s\n", about, base64.StdEncoding.EncodeToString(c.Fwknop.HMACKey))}
			res.Keys = append(res.Keys, hk)
			w.comment("HMAC_KEY or HMAC_KEY_BASE64")
			w.str("hmac_key_file", hk.Path)
		} else {
			w.comment("no HMAC key: packets are not authenticated before decryption (add HMAC_KEY_BASE64)")
		}
		if c.Fwknop.HMACDigest != 0 {
			w.str("hmac_digest", c.Fwknop.HMACDigest.String())
		}
		if c.Fwknop.EncryptionMode != 0 {
			w.str("encryption_mode", c.Fwknop.EncryptionMode.String())
		}
		if len(c.Forward) > 0 {
			w.comment("FORCE_NAT: OPEN_PORTS forwarded (ENABLE_IPT_FORWARDING Y)")
			fs := make([]string, len(c.Forward))
			for i, f := range c.Forward {
				fs[i] = f.String()
			}
			w.list("forward", fs)
		} else {
			w.comment("OPEN_PORTS")
			w.list("open", ports(c.Open))
		}
		if len(c.Restrict) > 0 {
			w.comment("RESTRICT_PORTS %s is left out: none of them is in OPEN_PORTS, so it refuses nothing more", joinPorts(c.Restrict))
		}
		if !slices.Equal(c.Sources, config.AnySource) {
			w.comment("SOURCE")
			w.list("sources", prefixes(c.Sources))
		} else {
			w.comment("SOURCE ANY: packets may come from anywhere (sources left out)")
		}
		w.comment("FW_ACCESS_TIMEOUT (of the stanza, else of fwknopd.conf), MAX_FW_TIMEOUT")
		w.duration("default_open_for", c.DefaultOpenFor)
		w.duration("max_open_for", c.MaxOpenFor)
		if c.RequireSourceAddress {
			w.comment("REQUIRE_SOURCE_ADDRESS Y")
			w.bool("require_source_address", true)
		}
		if c.RequireUsername != "" {
			w.comment("REQUIRE_USERNAME")
			w.str("require_username", c.RequireUsername)
		}
		if !c.AccessExpire.IsZero() {
			local := c.AccessExpire.In(time.Local)
			w.comment("ACCESS_EXPIRE / ACCESS_EXPIRE_EPOCH: %s, written in this machine's time zone (%s)", c.AccessExpire.UTC().Format(time.RFC3339), local.Format("MST"))
			w.line("access_expire = " + local.Format("2006-01-02T15:04:05"))
		}
	}
	if w.err != nil {
		return nil, fmt.Errorf("migrate: %s: %w", accName, w.err)
	}
	res.TOML = []byte(w.b.String())
	return res, nil
}

// checkFwknopClient refuses what a native client cannot say.
func checkFwknopClient(file string, line int, section string, c *config.SPAClient) error {
	if c.AnyPort {
		return notExpressible(file, line, section, "no OPEN_PORTS: the stanza allows any port, and a native client lists "+
			"the ports it may open; add OPEN_PORTS (as in OPEN_PORTS tcp/22) and migrate again")
	}
	for _, p := range c.Restrict {
		if slices.Contains(c.Open, p) {
			return notExpressible(file, line, section, "RESTRICT_PORTS %s is also in OPEN_PORTS: a native client has no restricted ports, "+
				"and leaving the port out of open would stop the gate protecting it; remove it from OPEN_PORTS and migrate again", p)
		}
	}
	if len(c.Sources) == 0 {
		return notExpressible(file, line, section, "SOURCE lists no network")
	}
	for _, p := range c.Sources {
		if p.Addr().Is4In6() {
			return notExpressible(file, line, section, "SOURCE %s is an IPv4-mapped IPv6 network, which "+
				"native sources refuse: write the IPv4 form %s, or remove it, and migrate again", p, netip.PrefixFrom(p.Addr().Unmap(), max(p.Bits()-96, 0)))
		}
	}
	return nil
}

func prefixes(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		if p.IsSingleIP() {
			out[i] = p.Addr().String()
		} else {
			out[i] = p.String()
		}
	}
	return out
}

func joinPorts(ps []netport.Port) string {
	s := ""
	for i, p := range ps {
		if i > 0 {
			s += ", "
		}
		s += p.String()
	}
	return s
}

package spaclient

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// Request is a resolved `sesame open`: everything needed to build and send
// the packet. Its String method never reveals keys.
type Request struct {
	Format Format
	Host   string
	Port   uint16
	Family int // 4, 6 or 0
	// ICMP: the packet goes in an ICMP echo request (SendPing), not to the UDP Port.
	ICMP bool
	// SourcePort, when not 0, is the local UDP port the packet is sent from.
	SourcePort uint16
	Ports      []netport.Port
	// Allow is the address to open for. Invalid and Source false: the client's address on the
	// route to the server, which Open fills in (UseRoute) before building the packet.
	Allow netip.Addr
	// Source (-s) asks for the packet's source address instead (weaker: SourceWarning).
	Source  bool
	routed  bool          // Allow came from the route to the server
	OpenFor time.Duration // 0 means the server's default
	ID      string        // client identity (fwknop: the username)
	From    string        // where the settings came from, for messages

	cred   spa.ClientCredential // FormatSesame
	keys   fwknop.Keys          // FormatFwknop
	digest fwknop.Digest        // FormatFwknop inner digest
}

// String describes the request without its keys.
func (r *Request) String() string {
	ports := make([]string, len(r.Ports))
	for i, p := range r.Ports {
		ports[i] = p.String()
	}
	allow := "my address on the route to the server"
	switch {
	case r.Source:
		allow = "the packet's source address (-s)"
	case r.routed:
		allow = r.Allow.String() + " (my address on the route to the server)"
	case r.Allow.IsValid():
		allow = r.Allow.String()
	}
	dur := "the server's default time"
	if r.OpenFor > 0 {
		dur = r.OpenFor.String()
	}
	kind := string(r.Format)
	switch {
	case r.Format == FormatSesame && r.cred.Shared != nil:
		kind += ", shared key"
	case r.Format == FormatSesame:
		kind += ", key pair"
	case r.keys.HMACKey != nil:
		kind += ", HMAC " + r.keys.HMACDigest.String()
	default:
		kind += ", no HMAC"
	}
	return fmt.Sprintf("%s as %s (%s): open %s for %s for %s", r.Host, r.ID, kind, strings.Join(ports, ","), allow, dur)
}

// setting collects the merged settings of flags, a profile and an rc stanza.
type setting struct {
	Options
	format   Format
	from     string
	rcKeys   *fwknop.Keys // keys set inside a .fwknoprc stanza
	rcKey    string       // KEY_FILE of the stanza
	rcHMAC   string       // HMAC_KEY_FILE of the stanza
	openFor  time.Duration
	sourceIP bool // allow = source from a profile or stanza
}

// Resolve merges the command line with the profile it names (-n: first a
// [profile.NAME] of client.toml, else a [NAME] stanza of ~/.fwknoprc),
// reads the keys and checks everything. Warnings (keys on the command line)
// go to warn.
func Resolve(o Options, warn io.Writer) (*Request, error) {
	s := setting{Options: o, from: "the command line"}
	if o.CommandLineKeys() {
		fmt.Fprintln(warn, "sesame open: warning: keys given on the command line leak into ps(1) output and shell history; put them in a file (0600) and use --key-file, or a -n profile")
	}
	if o.Profile != "" {
		if err := s.applyProfile(); err != nil {
			return nil, err
		}
	}
	if o.Fwknop || o.CommandLineKeys() {
		s.format = FormatFwknop
	}
	if s.format == "" {
		s.format = FormatSesame
	}
	r := &Request{Format: s.format, Host: s.Host, Family: s.Family, ICMP: s.ICMP, SourcePort: uint16(s.SourcePort), From: s.from}
	if r.Host == "" {
		return nil, usagef("no server: give HOST (or a profile with a server)")
	}
	if r.ICMP && r.SourcePort != 0 {
		return nil, usagef("a source port (--source-port, SPA_SOURCE_PORT) and a ping (--icmp, SPA_SERVER_PROTO icmp) exclude each other: a ping has no port")
	}
	r.Port = DefaultPort
	if s.Port != 0 {
		r.Port = uint16(s.Port)
	}
	if len(s.Access) == 0 {
		return nil, usagef("nothing to open: give -A tcp/22[,udp/53...]")
	}
	seen := map[netport.Port]bool{}
	for _, a := range s.Access {
		p, err := netport.Parse(a)
		if err != nil {
			return nil, usagef("-A: %w", err)
		}
		if !seen[p] {
			seen[p] = true
			r.Ports = append(r.Ports, p)
		}
	}
	if r.Format == FormatSesame && len(r.Ports) > spa.MaxPorts {
		return nil, usagef("-A: at most %d ports in one request", spa.MaxPorts)
	}
	r.OpenFor = s.openFor
	if s.OpenFor != "" {
		d, err := ParseOpenFor(s.OpenFor)
		if err != nil {
			return nil, usagef("-f: %w", err)
		}
		r.OpenFor = d
	}
	switch {
	case s.Source:
		r.Source = true
	case s.Allow != "":
		a, err := netip.ParseAddr(s.Allow)
		if err != nil || a.Zone() != "" {
			return nil, usagef("-a %q: not an IP address", s.Allow)
		}
		a = a.Unmap()
		if a.IsUnspecified() { // fwknop's way of writing -s
			r.Source = true
		} else {
			r.Allow = a
		}
	}
	if r.Source {
		fmt.Fprintln(warn, SourceWarning)
	}
	if r.Format == FormatFwknop && r.Allow.IsValid() && !r.Allow.Is4() {
		return nil, usagef("-a %s: fwknop's format carries only IPv4 addresses (use -s, or sesame's format)", r.Allow)
	}
	var err error
	if r.Format == FormatSesame {
		r.ID = s.ID
		r.cred, err = sesameCredential(s.ID, s.KeyFile, s.ServerKey)
	} else {
		err = s.fwknopKeys(r)
	}
	if err != nil {
		return nil, err
	}
	return r, nil
}

// applyProfile fills unset options from the profile or rc stanza s.Profile.
func (s *setting) applyProfile() error {
	cfg := s.ConfigFile
	if cfg == "" {
		var err error
		if cfg, err = DefaultConfigFile(); err != nil {
			return err
		}
	}
	profiles, err := LoadProfiles(cfg)
	if err != nil {
		return err
	}
	if p, ok := profiles[s.Profile]; ok {
		s.from = fmt.Sprintf("profile %q of %s", s.Profile, cfg)
		s.mergeProfile(p)
		return nil
	}
	rc := s.RCFile
	if rc == "" {
		if rc, err = DefaultRCFile(); err != nil {
			return err
		}
	}
	st, err := LoadRCStanza(rc, s.Profile)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no profile %q: not in %s nor in %s", s.Profile, cfg, rc)
	}
	if err != nil {
		return err
	}
	s.from = fmt.Sprintf("stanza [%s] of %s", s.Profile, rc)
	return s.mergeRC(st)
}

func (s *setting) mergeProfile(p Profile) {
	set := func(dst *string, v string) {
		if *dst == "" {
			*dst = v
		}
	}
	set(&s.Host, p.Server)
	set(&s.ID, p.ID)
	set(&s.KeyFile, p.KeyFile)
	set(&s.ServerKey, p.ServerKey)
	set(&s.HMACKeyFile, p.HMACKeyFile)
	set(&s.HMACDigest, p.HMACDigest)
	if s.Port == 0 {
		s.Port = p.Port
	}
	if len(s.Access) == 0 {
		s.Access = p.Access
	}
	if s.Allow == "" && !s.Source {
		if strings.EqualFold(p.Allow, "source") {
			s.Source = true
		} else {
			s.Allow = p.Allow
		}
	}
	s.openFor = p.OpenFor.D
	s.format = Format(p.Format)
}

// LoadRCStanza reads an fwknop rc file and returns stanza name merged over
// [default], as fwknop does. It returns an error wrapping os.ErrNotExist
// when the file or the stanza does not exist. When the result holds keys,
// the file must be private to its owner.
func LoadRCStanza(path, name string) (fwknop.RCStanza, error) {
	var out fwknop.RCStanza
	f, err := os.Open(path)
	if err != nil {
		return out, fmt.Errorf("read rc file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return out, fmt.Errorf("read rc file: %w", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return out, fmt.Errorf("read rc file %s: %w", path, err)
	}
	stanzas, err := fwknop.ParseRC(path, data)
	if err != nil {
		return out, err
	}
	var def, named *fwknop.RCStanza
	for i := range stanzas {
		switch stanzas[i].Name {
		case "default":
			def = &stanzas[i]
		case name:
			named = &stanzas[i]
		}
	}
	if named == nil {
		return out, fmt.Errorf("%s: no stanza [%s]: %w", path, name, os.ErrNotExist)
	}
	if def != nil && name != "default" {
		out = mergeStanza(*def, *named)
	} else {
		out = *named
	}
	if out.Keys.Key != nil || out.Keys.HMACKey != nil {
		if err := checkPrivate(path, fi); err != nil {
			return fwknop.RCStanza{}, fmt.Errorf("rc file: %w", err)
		}
	}
	return out, nil
}

// mergeStanza overlays the settings of s on def.
func mergeStanza(def, s fwknop.RCStanza) fwknop.RCStanza {
	out := def
	out.Name, out.Line = s.Name, s.Line
	str := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	str(&out.SPAServer, s.SPAServer)
	str(&out.SPAServerProto, s.SPAServerProto)
	str(&out.AllowIP, s.AllowIP)
	str(&out.NATAccess, s.NATAccess)
	str(&out.SpoofUser, s.SpoofUser)
	str(&out.KeyFile, s.KeyFile)
	str(&out.HMACKeyFile, s.HMACKeyFile)
	if s.SPAServerPort != 0 {
		out.SPAServerPort = s.SPAServerPort
	}
	if s.SPASourcePort != 0 {
		out.SPASourcePort = s.SPASourcePort
	}
	if s.Access != nil {
		out.Access = s.Access
	}
	if s.FWTimeout != 0 {
		out.FWTimeout = s.FWTimeout
	}
	if s.Keys.Key != nil {
		out.Keys.Key = s.Keys.Key
	}
	if s.Keys.HMACKey != nil {
		out.Keys.HMACKey = s.Keys.HMACKey
	}
	if s.Keys.HMACDigest != 0 {
		out.Keys.HMACDigest = s.Keys.HMACDigest
	}
	if s.Keys.EncryptionMode != 0 {
		out.Keys.EncryptionMode = s.Keys.EncryptionMode
	}
	if s.DigestType != 0 {
		out.DigestType = s.DigestType
	}
	out.UseHMAC = out.UseHMAC || s.UseHMAC
	return out
}

// mergeRC fills unset options from an rc stanza.
func (s *setting) mergeRC(st fwknop.RCStanza) error {
	where := fmt.Sprintf("stanza [%s]", st.Name)
	if st.NATAccess != "" {
		return fmt.Errorf("%s: NAT_ACCESS is not supported by sesame open", where)
	}
	switch p := st.SPAServerProto; p {
	case "", "udp":
	case "icmp":
		s.ICMP = true
	default:
		return fmt.Errorf("%s: SPA_SERVER_PROTO %s is not supported (sesame open sends udp or icmp)", where, p)
	}
	s.format = FormatFwknop
	if s.Host == "" {
		s.Host = st.SPAServer
	}
	if s.Port == 0 {
		s.Port = uint(st.SPAServerPort)
	}
	if s.SourcePort == 0 {
		s.SourcePort = uint(st.SPASourcePort)
	}
	if len(s.Access) == 0 {
		for _, p := range st.Access {
			s.Access = append(s.Access, p.String())
		}
	}
	if s.Allow == "" && !s.Source {
		switch strings.ToLower(st.AllowIP) {
		case "":
			// Unset: sesame's default, the address on the route to the server.
		case "source":
			s.Source = true
		case "resolve":
			return fmt.Errorf("%s: ALLOW_IP resolve is not supported (%w); leave ALLOW_IP out to use your address on the route to the server", where, ErrResolveIP)
		default:
			s.Allow = st.AllowIP
		}
	}
	if s.ID == "" {
		s.ID = st.SpoofUser
	}
	s.openFor = st.FWTimeout
	if st.Keys.Key != nil || st.Keys.HMACKey != nil {
		k := st.Keys
		s.rcKeys = &k
	}
	s.rcKey, s.rcHMAC = st.KeyFile, st.HMACKeyFile
	if s.Digest == "" && st.DigestType != 0 {
		s.Digest = st.DigestType.String()
	}
	if s.HMACDigest == "" && st.Keys.HMACDigest != 0 {
		s.HMACDigest = st.Keys.HMACDigest.String()
	}
	return nil
}

// fwknopKeys sets r's fwknop keys, username and digest. Later sources win:
// rc stanza keys, rc KEY_FILE/HMAC_KEY_FILE, --key-file/--hmac-key-file,
// then keys on the command line.
func (s *setting) fwknopKeys(r *Request) error {
	var k fwknop.Keys
	if s.rcKeys != nil {
		k = *s.rcKeys
	}
	load := func(path string) error {
		data, err := ReadSecretFile(path)
		if err != nil {
			return err
		}
		kf, err := parseFwknopKeyFile(path, data, s.Host)
		if err != nil {
			return err
		}
		if kf.Key != nil {
			k.Key = kf.Key
		}
		if kf.HMACKey != nil {
			k.HMACKey = kf.HMACKey
		}
		if kf.HMACDigest != 0 {
			k.HMACDigest = kf.HMACDigest
		}
		return nil
	}
	loadHMAC := func(path string) error {
		data, err := ReadSecretFile(path)
		if err != nil {
			return err
		}
		h, err := hmacOnlyFile(path, data)
		k.HMACKey = h
		return err
	}
	for _, step := range []struct {
		path string
		fn   func(string) error
	}{{s.rcKey, load}, {s.rcHMAC, loadHMAC}, {s.KeyFile, load}, {s.HMACKeyFile, loadHMAC}} {
		if step.path != "" {
			if err := step.fn(step.path); err != nil {
				return err
			}
		}
	}
	if s.ServerKey != "" {
		return usagef("--server-key is for sesame's format; fwknop's format uses KEY_BASE64 and HMAC_KEY_BASE64")
	}
	var err error
	switch {
	case s.KeyBase64 != "":
		if k.Key, err = base64.StdEncoding.DecodeString(s.KeyBase64); err != nil {
			return usagef("--key-base64-rijndael: not valid base64")
		}
	case s.KeyText != "":
		k.Key = []byte(s.KeyText)
	}
	switch {
	case s.HMACKeyBase64 != "":
		if k.HMACKey, err = base64.StdEncoding.DecodeString(s.HMACKeyBase64); err != nil {
			return usagef("--key-base64-hmac: not valid base64")
		}
	case s.HMACKeyText != "":
		k.HMACKey = []byte(s.HMACKeyText)
	}
	if s.HMACDigest != "" {
		if k.HMACDigest, err = fwknop.ParseDigest(s.HMACDigest); err != nil {
			return usagef("HMAC digest: %w", err)
		}
	}
	if s.Digest != "" {
		if r.digest, err = fwknop.ParseDigest(s.Digest); err != nil {
			return usagef("digest: %w", err)
		}
	}
	if len(k.Key) == 0 {
		return usagef("no fwknop key: give --key-file FILE (KEY_BASE64 and HMAC_KEY_BASE64 lines, see 'sesame keygen --fwknop'), or a -n profile")
	}
	if len(k.Key) > 32 {
		return errors.New("fwknop key: longer than 32 bytes")
	}
	r.keys = k
	r.ID = s.ID
	if r.ID == "" {
		r.ID = loginName()
	}
	return nil
}

// loginName is fwknop's default username: $SPOOF_USER, $LOGNAME, the
// login name, $USER; Windows domains are dropped; at most 29 characters.
func loginName() string {
	n := os.Getenv("SPOOF_USER")
	if n == "" {
		n = os.Getenv("LOGNAME")
	}
	if n == "" {
		if u, err := user.Current(); err == nil {
			n = u.Username
		}
	}
	if n == "" {
		n = os.Getenv("USER")
	}
	if i := strings.LastIndexByte(n, '\\'); i >= 0 {
		n = n[i+1:]
	}
	if n == "" {
		n = "NO_USER"
	}
	if len(n) > 29 {
		n = n[:29]
	}
	return n
}

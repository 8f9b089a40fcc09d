package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/fwknop"
	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/spa"
)

// SPA client formats.
const (
	SPAFormatNative = "native" // sesame's own protocol (docs/PROTOCOL.md)
	SPAFormatFwknop = "fwknop" // fwknop 2.x Rijndael + HMAC packets
)

// Defaults and limits of the [spa] section.
const (
	DefaultSPAPort       = 62201
	DefaultSPAMaxAge     = 120 * time.Second
	MaxSPAMaxAge         = time.Hour
	DefaultSPAOpenFor    = 30 * time.Second
	DefaultSPAMaxOpenFor = 5 * time.Minute
)

// SPA is the single packet authorization server. A nil *SPA in Config means SPA is off.
type SPA struct {
	// Port is the UDP port SPA packets are sent to.
	Port uint16
	// Sniff: packets to Port are seen by the kernel-filtered capture while the gate drops the
	// port and nothing listens on it. Otherwise a UDP socket listens on Port.
	Sniff bool
	// SniffForStealth: the configuration asked for a socket, and Sniff was set because a
	// stealth gate must keep the SPA port looking like one where nothing runs.
	SniffForStealth bool
	// ICMP: SPA packets carried in ICMP echo requests (IPv4 and IPv6) and ICMPv4 echo replies
	// (the fwknop client's -P icmp) are sniffed too, whatever Sniff says ([spa] icmp).
	ICMP bool
	// MaxAge is the largest accepted difference between a packet's timestamp and the clock.
	MaxAge time.Duration
	// ServerKeyFile and ServerKey are the server's own key pair, for key-pair clients.
	ServerKeyFile string
	ServerKey     *spa.KeyPair
	// RequireAddress is [spa] require_address: the default of each client's own (false when
	// unset), which sets SPAClient.RequireSourceAddress.
	RequireAddress bool
	Clients        []SPAClient
	// Warnings are remarks about the configuration that are not errors (options of a migrated
	// configuration that sesame does not support and could ignore safely). The server logs them.
	Warnings []string
}

// SPAClient is one client the SPA server accepts packets from, with its policy.
type SPAClient struct {
	// Name identifies the client in logs; for native clients it is the identity in the packet.
	Name string
	// Format is SPAFormatNative or SPAFormatFwknop.
	Format string
	// KeyFile names the file the key was read from (for messages).
	KeyFile string
	// Shared is a native client's shared key; Public its public key (key-pair client). Exactly
	// one is set for a native client.
	Shared *spa.SharedKey
	Public *spa.PublicKey
	// Fwknop holds an fwknop client's keys and algorithms.
	Fwknop fwknop.Keys
	// RequireUsername, when set, is the only username an fwknop packet may carry.
	RequireUsername string
	// RequireSourceAddress refuses fwknop packets that name no address to open for (allow IP
	// 0.0.0.0, the client's -s: "the source of this packet"): each packet must carry the address
	// explicitly (fwknop's REQUIRE_SOURCE_ADDRESS).
	RequireSourceAddress bool
	// AccessExpire, when set, is the moment after which the client is refused.
	AccessExpire time.Time
	// Open lists the ports the client may ask for. AnyPort allows every port (an fwknop stanza
	// without OPEN_PORTS); the gate then protects none of them for this client.
	Open    []netport.Port
	AnyPort bool
	// Restrict lists ports the client may never ask for (fwknop's RESTRICT_PORTS).
	Restrict []netport.Port
	// Sources are the networks packets may come from and, for native clients, the addresses a
	// grant may be for.
	Sources []netip.Prefix
	// SourcePorts, when not empty, are the only UDP source ports its packets may come from (a
	// packet in a ping has none, and is refused then).
	SourcePorts []PortRange
	// DefaultOpenFor is used when a packet asks for no duration; MaxOpenFor caps what it asks.
	DefaultOpenFor, MaxOpenFor time.Duration
	// Forward lists the forwards the client may ask for (forward.go): a request for one of
	// their ports is granted as a forward, not as a grant of the port.
	Forward []Forward
	// Group, when set, names the fleet group every member of which applies this client's
	// grants ([cluster]).
	Group string
}

// AnySource is the sources of a client that sets none: every IPv4 and IPv6 address.
var AnySource = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}

// Protected lists every port an SPA client may open (clients with AnyPort add none) and, in
// sniff mode, the SPA port itself, which no grant ever opens.
func (s *SPA) Protected() []netport.Port {
	if s == nil {
		return nil
	}
	var out []netport.Port
	if s.Sniff {
		out = append(out, netport.Port{Proto: netport.UDP, Num: s.Port})
	}
	for _, c := range s.Clients {
		for _, p := range c.Open {
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
		}
		// A forward's port on this host, and a local forward's target, open only by grant.
		for _, f := range c.Forward {
			for _, p := range []netport.Port{f.Port, {Proto: f.Port.Proto, Num: f.To.Port()}} {
				if p.Num != 0 && (f.Local || p == f.Port) && !slices.Contains(out, p) {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// secretKeys are keys that would put a secret in the TOML file.
var secretKeys = []string{"key", "shared_key", "key_base64", "hmac_key", "hmac_key_base64", "private_key", "server_key"}

type (
	tomlSPA struct {
		Listen         field[udpPort]  `toml:"listen"`
		Sniff          field[bool]     `toml:"sniff"`
		ICMP           field[bool]     `toml:"icmp"`
		MaxAge         field[duration] `toml:"max_age"`
		ServerKeyFile  field[string]   `toml:"server_key_file"`
		RequireAddress field[bool]     `toml:"require_address"`
		Client         toml.Primitive  `toml:"client"`
	}
	tomlClient struct {
		Name                 field[string]         `toml:"name"`
		Format               field[string]         `toml:"format"`
		Open                 field[[]openPort]     `toml:"open"`
		Forward              field[[]forwardEntry] `toml:"forward"`
		Sources              field[[]source]       `toml:"sources"`
		SourcePorts          field[[]portRange]    `toml:"source_ports"`
		MaxOpenFor           field[duration]       `toml:"max_open_for"`
		DefaultOpenFor       field[duration]       `toml:"default_open_for"`
		AccessExpire         field[date]           `toml:"access_expire"`
		KeyFile              field[string]         `toml:"key_file"`
		RequireAddress       field[bool]           `toml:"require_address"`
		PublicKey            field[string]         `toml:"public_key"`
		HMACKeyFile          field[string]         `toml:"hmac_key_file"`
		HMACDigest           field[digest]         `toml:"hmac_digest"`
		EncryptionMode       field[mode]           `toml:"encryption_mode"`
		RequireUsername      field[string]         `toml:"require_username"`
		RequireSourceAddress field[bool]           `toml:"require_source_address"`
		Group                field[string]         `toml:"group"`
	}
)

func (d *decoder) spa(v toml.Primitive) (*SPA, error) {
	var f tomlSPA
	r, err := d.table(v, atSPA, &f)
	switch {
	case err != nil:
		return nil, err
	case r.notTable != "":
		return nil, problem(place{index: -1}, "", "spa", "want a table, got %s", r.notTable)
	case r.unknown != "":
		return nil, unknownKey(atSPA, "spa", r.unknown, "server_key_file")
	case r.badKey != "":
		return nil, problem(atSPA, "spa", r.badKey, "%w", r.badErr)
	}
	s := &SPA{
		Port:           uint16(f.Listen.or(DefaultSPAPort)),
		Sniff:          f.Sniff.v,
		ICMP:           f.ICMP.v,
		MaxAge:         time.Duration(f.MaxAge.or(duration(DefaultSPAMaxAge))),
		ServerKeyFile:  f.ServerKeyFile.v,
		RequireAddress: f.RequireAddress.v,
	}
	if f.ServerKeyFile.set {
		data, err := d.readSecret(s.ServerKeyFile)
		if err != nil {
			return nil, problem(atSPA, "spa", "server_key_file", "%w", err)
		}
		if s.ServerKey, err = spa.ParseKeyPair(keyText(data)); err != nil {
			return nil, problem(atSPA, "spa", "server_key_file", "%s: not a sesame private key (want the file `sesame keygen --pair` writes)", s.ServerKeyFile)
		}
	}
	if !d.md.IsDefined("spa", "client") {
		return s, nil
	}
	list, notArray, err := d.tables(f.Client, toml.Key{"spa", "client"})
	if err != nil {
		return nil, err
	}
	if notArray != "" {
		return nil, problem(atSPA, "spa", "client", "want [[spa.client]] tables, got %s", notArray)
	}
	for i, e := range list {
		c, err := d.spaClient(i, e, s)
		if err != nil {
			return nil, err
		}
		s.Clients = append(s.Clients, c)
	}
	return s, nil
}

// clientSection names client i in messages.
func clientSection(i int, name string) string {
	if checkClientName(name) != nil {
		return fmt.Sprintf("spa client #%d", i+1)
	}
	return fmt.Sprintf("spa client %q", name)
}

func (d *decoder) spaClient(i int, v toml.Primitive, s *SPA) (SPAClient, error) {
	var f tomlClient
	at := atClient(i)
	r, err := d.table(v, at, &f)
	sec := clientSection(i, f.Name.v)
	switch {
	case err != nil:
		return SPAClient{}, err
	case r.notTable != "":
		return SPAClient{}, problem(at, sec, "", "want a table, got %s", r.notTable)
	case r.unknown != "":
		return SPAClient{}, unknownKey(at, sec, r.unknown, "key_file")
	case !f.Name.set:
		return SPAClient{}, problem(at, sec, "", "name is required")
	case f.Name.err == nil && checkClientName(f.Name.v) != nil:
		return SPAClient{}, problem(at, sec, "name", "%w", checkClientName(f.Name.v))
	case r.badKey != "":
		return SPAClient{}, problem(at, sec, r.badKey, "%w", r.badErr)
	}
	c := SPAClient{
		Group:          f.Group.v,
		Name:           f.Name.v,
		Format:         f.Format.or(SPAFormatNative),
		KeyFile:        f.KeyFile.v,
		Open:           convertList(f.Open.v, func(p openPort) netport.Port { return netport.Port(p) }),
		Forward:        convertList(f.Forward.v, func(e forwardEntry) Forward { return Forward(e) }),
		Sources:        slices.Clone(AnySource),
		DefaultOpenFor: time.Duration(f.DefaultOpenFor.or(duration(DefaultSPAOpenFor))),
		MaxOpenFor:     time.Duration(f.MaxOpenFor.or(duration(DefaultSPAMaxOpenFor))),
		AccessExpire:   time.Time(f.AccessExpire.v),
		// require_address refuses packets that ask for their own source address (native
		// "source", fwknop allow-IP 0.0.0.0): a sniffer could send a copy first and have it
		// granted for itself.
		RequireSourceAddress: f.RequireAddress.or(s.RequireAddress),
		RequireUsername:      f.RequireUsername.v,
	}
	c.SourcePorts = convertList(f.SourcePorts.v, func(r portRange) PortRange { return PortRange(r) })
	if f.SourcePorts.set && len(c.SourcePorts) == 0 {
		return c, problem(at, sec, "source_ports", "is empty: leave it out to allow every source port")
	}
	if f.Sources.set {
		c.Sources = convertList(f.Sources.v, func(s source) netip.Prefix { return netip.Prefix(s) })
	}
	switch c.Format {
	case SPAFormatNative:
		err = d.nativeClient(&f, &c)
	case SPAFormatFwknop:
		err = d.fwknopClient(&f, &c)
		if err == nil && c.Fwknop.HMACKey == nil {
			s.Warnings = append(s.Warnings, fmt.Sprintf("spa client %q: no HMAC key: packets are not authenticated before decryption (add HMAC_KEY_BASE64 to %s)", c.Name, c.KeyFile))
		}
	}
	if e := (*Error)(nil); errors.As(err, &e) {
		e.Section, e.at = sec, at
		e.at.key = toml.Key{e.Key}
	}
	return c, err
}

func (d *decoder) nativeClient(f *tomlClient, c *SPAClient) error {
	if f.RequireSourceAddress.set {
		return &Error{Key: "require_source_address", Err: errors.New("is fwknop's name: native clients use require_address")}
	}
	for k, set := range map[string]bool{"hmac_key_file": f.HMACKeyFile.set, "hmac_digest": f.HMACDigest.set,
		"encryption_mode": f.EncryptionMode.set, "require_username": f.RequireUsername.set} {
		if set {
			return &Error{Key: k, Err: errors.New("is an fwknop option: set format = \"fwknop\"")}
		}
	}
	if f.KeyFile.set {
		data, err := d.readSecret(c.KeyFile)
		if err != nil {
			return &Error{Key: "key_file", Err: err}
		}
		k, err := spa.ParseSharedKey(keyText(data))
		if err != nil {
			return &Error{Key: "key_file", Err: fmt.Errorf("%s: not a sesame shared key (want the file `sesame keygen` writes)", c.KeyFile)}
		}
		c.Shared = &k
	}
	if f.PublicKey.set {
		k, err := spa.ParsePublicKey(f.PublicKey.v)
		if err != nil {
			return &Error{Key: "public_key", Err: errors.New("not a sesame public key (want the contents of the .pub file `sesame keygen --pair` writes)")}
		}
		c.Public = &k
	}
	return nil
}

func (d *decoder) fwknopClient(f *tomlClient, c *SPAClient) error {
	switch {
	case f.PublicKey.set:
		return &Error{Key: "public_key", Err: errors.New("fwknop clients use key_file and hmac_key_file")}
	case f.RequireSourceAddress.set && f.RequireAddress.set && f.RequireSourceAddress.v != f.RequireAddress.v:
		return &Error{Key: "require_source_address", Err: errors.New("contradicts require_address (the same setting): keep one")}
	case !f.KeyFile.set:
		return &Error{Key: "key_file", Err: errors.New("key_file is required: a file holding KEY_BASE64 (and HMAC_KEY_BASE64), as `sesame keygen --fwknop` writes")}
	}
	c.RequireSourceAddress = f.RequireSourceAddress.or(c.RequireSourceAddress)
	c.Fwknop.HMACDigest = fwknop.Digest(f.HMACDigest.v)
	c.Fwknop.EncryptionMode = fwknop.Mode(f.EncryptionMode.v)
	data, err := d.readSecret(c.KeyFile)
	if err != nil {
		return &Error{Key: "key_file", Err: err}
	}
	key, hmacKey, err := ParseFwknopKeyFile(data)
	if err != nil {
		return &Error{Key: "key_file", Err: fmt.Errorf("%s: %w", c.KeyFile, err)}
	}
	c.Fwknop.Key = key
	if f.HMACKeyFile.set {
		name := f.HMACKeyFile.v
		data, err := d.readSecret(name)
		if err != nil {
			return &Error{Key: "hmac_key_file", Err: err}
		}
		kf, err := parseKeyFile(data)
		if err != nil {
			return &Error{Key: "hmac_key_file", Err: fmt.Errorf("%s: %w", name, err)}
		}
		if hmacKey = kf.HMACFileKey(); hmacKey == nil {
			return &Error{Key: "hmac_key_file", Err: fmt.Errorf("%s: no HMAC_KEY_BASE64 or HMAC_KEY", name)}
		}
	}
	c.Fwknop.HMACKey = hmacKey
	return nil
}

func checkFwknopKeys(k fwknop.Keys) error {
	switch {
	case len(k.Key) == 0 || len(k.Key) > 32:
		return fmt.Errorf("the encryption key must be 1-32 bytes, got %d", len(k.Key))
	case len(k.HMACKey) > 128:
		return fmt.Errorf("the HMAC key must be at most 128 bytes, got %d", len(k.HMACKey))
	case k.HMACKey != nil && bytes.Equal(k.Key, k.HMACKey):
		return errors.New("the encryption and HMAC keys are identical")
	case k.HMACKey != nil && k.EncryptionMode == fwknop.ModeLegacy:
		return errors.New("legacy encryption mode cannot be used with an HMAC key")
	}
	return nil
}

// ParseFwknopKeyFile reads the key file of an fwknop client (fwknop.ParseKeyFile's grammar): the
// encryption key (KEY, KEY_BASE64, or the file's only base64 key) and the HMAC key (nil when the
// file has none). Errors never quote the file.
func ParseFwknopKeyFile(data []byte) (key, hmacKey []byte, err error) {
	kf, err := parseKeyFile(data)
	if err != nil {
		return nil, nil, err
	}
	if kf.EncryptionKey() == nil {
		return nil, nil, errors.New("no KEY_BASE64 or KEY")
	}
	return kf.EncryptionKey(), kf.HMACKey, nil
}

// parseKeyFile parses an fwknop key file named in the configuration, which sets the digest and
// mode itself.
func parseKeyFile(data []byte) (fwknop.KeyFile, error) {
	if t := keyText(data); strings.HasPrefix(t, "sesame-") {
		return fwknop.KeyFile{}, errors.New("a sesame key, not fwknop keys (format = \"fwknop\" takes the KEY_BASE64 and HMAC_KEY_BASE64 lines of `sesame keygen --fwknop`)")
	}
	kf, err := fwknop.ParseKeyFile(data, "")
	if err == nil && (kf.HMACDigest != 0 || kf.EncryptionMode != 0) {
		err = errors.New("HMAC_DIGEST_TYPE and ENCRYPTION_MODE are set in the configuration (hmac_digest, encryption_mode), not in a key file")
	}
	return kf, err
}

// readSecret reads a key file, relative to the configuration file's directory, and refuses one
// that group or others may read.
func (d *decoder) readSecret(name string) ([]byte, error) {
	if name == "" {
		return nil, errors.New("empty file name")
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(d.file), path)
	}
	return ReadSecretFile(path)
}

// keyText drops comment and blank lines from a key file.
func keyText(data []byte) string {
	var out []string
	for l := range strings.SplitSeq(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// checkClientName applies the native identity rules (1-64 printable ASCII bytes, no space).
func checkClientName(n string) error {
	if len(n) == 0 || len(n) > spa.MaxIDLen {
		return fmt.Errorf("%q: a client name is 1-%d bytes", n, spa.MaxIDLen)
	}
	for i := 0; i < len(n); i++ {
		if n[i] < 0x21 || n[i] > 0x7e {
			return fmt.Errorf("%q: a client name is printable ASCII without spaces", n)
		}
	}
	return nil
}

// Validate checks the rules of an SPA configuration, whatever format it came from; fw is the
// firewall backend, which must be able to open ports.
func (s *SPA) Validate(fw firewall.Kind) error {
	if s.Port == 0 {
		return problem(atSPA, "spa", "listen", "port 0 is not a port")
	}
	if s.MaxAge < time.Second || s.MaxAge > MaxSPAMaxAge {
		return problem(atSPA, "spa", "max_age", "%v is out of range 1s-%v", s.MaxAge, MaxSPAMaxAge)
	}
	if len(s.Clients) == 0 {
		return problem(atSPA, "spa", "", "no [[spa.client]]: SPA would accept nobody")
	}
	if fw == firewall.None {
		return problem(atSPA, "spa", "", "firewall %s cannot open ports for SPA clients", firewall.None)
	}
	if s.HasForwards() && fw != firewall.Nftables {
		i := slices.IndexFunc(s.Clients, func(c SPAClient) bool { return len(c.Forward) > 0 })
		return problem(atClient(i), clientSection(i, s.Clients[i].Name), "forward", "forwards need firewall %q (the %s backend does not forward)", firewall.Nftables, fw)
	}
	for i := range s.Clients {
		c := &s.Clients[i]
		if err := c.validate(i, s); err != nil {
			return err
		}
		if j := slices.IndexFunc(s.Clients[:i], func(o SPAClient) bool { return o.Name == c.Name }); j >= 0 {
			return problem(atClient(i), clientSection(i, c.Name), "name", "client #%d has the same name", j+1)
		}
	}
	return nil
}

func (c *SPAClient) validate(i int, s *SPA) error {
	at, sec := atClient(i), clientSection(i, c.Name)
	if c.Format != SPAFormatFwknop {
		if err := checkClientName(c.Name); err != nil {
			return problem(at, sec, "name", "%w", err)
		}
	} else if c.Name == "" {
		return problem(at, sec, "name", "is empty")
	}
	switch c.Format {
	case SPAFormatNative:
		switch {
		case c.Shared == nil && c.Public == nil:
			return problem(at, sec, "", "set key_file (shared key) or public_key (key pair)")
		case c.Shared != nil && c.Public != nil:
			return problem(at, sec, "public_key", "set either key_file (shared key) or public_key (key pair), not both")
		case c.Public != nil && s.ServerKey == nil:
			return problem(at, sec, "public_key", "a key-pair client needs the server's own key: set server_key_file in [spa]")
		}
	case SPAFormatFwknop:
		if err := checkFwknopKeys(c.Fwknop); err != nil {
			return problem(at, sec, "key_file", "%w", err)
		}
	default:
		return problem(at, sec, "format", "%q is not a format (want %s or %s)", c.Format, SPAFormatNative, SPAFormatFwknop)
	}
	if len(c.Open) == 0 && !c.AnyPort && len(c.Forward) == 0 {
		return problem(at, sec, "open", "open is required: the ports this client may ask for")
	}
	if err := checkForwards(c.Forward, c.Open); err != nil {
		return problem(at, sec, "forward", "%w", err)
	}
	if err := checkPorts(c.Open); err != nil {
		return problem(at, sec, "open", "%w", err)
	}
	for _, p := range c.Restrict {
		if err := checkPorts([]netport.Port{p}); err != nil {
			return problem(at, sec, "restrict", "%w", err)
		}
	}
	if len(c.Sources) == 0 {
		return problem(at, sec, "sources", "is empty: nobody could use this client (leave it out to allow every source)")
	}
	for _, p := range c.Sources {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return problem(at, sec, "sources", "%v is not valid", p)
		}
	}
	if c.MaxOpenFor < MinOpenFor || c.MaxOpenFor > MaxOpenFor || c.MaxOpenFor%time.Second != 0 {
		return problem(at, sec, "max_open_for", "%v is out of range %v-%v", c.MaxOpenFor, MinOpenFor, MaxOpenFor)
	}
	if c.DefaultOpenFor < MinOpenFor || c.DefaultOpenFor > c.MaxOpenFor {
		return problem(at, sec, "default_open_for", "%v is out of range %v-%v (max_open_for)", c.DefaultOpenFor, MinOpenFor, c.MaxOpenFor)
	}
	return nil
}

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
	// DefaultOpenFor is used when a packet asks for no duration; MaxOpenFor caps what it asks.
	DefaultOpenFor, MaxOpenFor time.Duration
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
	}
	return out
}

// secretKeys are keys that would put a secret in the TOML file.
var secretKeys = []string{"key", "shared_key", "key_base64", "hmac_key", "hmac_key_base64", "private_key", "server_key"}

func (p *parser) spa(v any, firewall string) *SPA {
	t, ok := p.table(v, "spa", "")
	if !ok {
		return nil
	}
	t.section = "spa"
	s := &SPA{Port: DefaultSPAPort, MaxAge: DefaultSPAMaxAge}
	var listen string
	if t.str("listen", &listen) {
		port, err := netport.Parse(listen)
		switch {
		case err != nil:
			t.failf("listen", "%q: want udp/PORT, as in udp/62201", listen)
		case port.Proto != netport.UDP:
			t.failf("listen", "%q: SPA packets are UDP: want udp/PORT", listen)
		default:
			s.Port = port.Num
		}
	}
	t.boolean("sniff", &s.Sniff)
	if t.duration("max_age", &s.MaxAge) && (s.MaxAge < time.Second || s.MaxAge > MaxSPAMaxAge) {
		t.failf("max_age", "%v is out of range 1s-%v", s.MaxAge, MaxSPAMaxAge)
	}
	if t.str("server_key_file", &s.ServerKeyFile) {
		data, err := p.readSecret(s.ServerKeyFile)
		if err != nil {
			t.fail("server_key_file", err)
		} else if kp, err := spa.ParseKeyPair(keyText(data)); err != nil {
			t.failf("server_key_file", "%s: not a sesame private key (want the file `sesame keygen --pair` writes)", s.ServerKeyFile)
		} else {
			s.ServerKey = kp
		}
	}
	for _, k := range secretKeys {
		if _, ok := t.get(k); ok {
			t.failf(k, "secrets do not belong in the configuration: put the key in a file of mode 0600 and name it with server_key_file")
		}
	}
	t.boolean("require_address", &s.RequireAddress)
	if v, ok := t.get("client"); ok {
		s.Clients = p.spaClients(v, s)
	}
	t.unknown()
	if p.err == nil && len(s.Clients) == 0 {
		p.fail("spa", "spa", "", errors.New("no [[spa.client]]: SPA would accept nobody"))
	}
	if p.err == nil && firewall == FirewallNone {
		p.fail("spa", "spa", "", errors.New("firewall none cannot open ports for SPA clients"))
	}
	return s
}

func (p *parser) spaClients(v any, s *SPA) []SPAClient {
	list, ok := tables(v)
	if !ok {
		p.fail("spa.client", "spa", "client", fmt.Errorf("want [[spa.client]] tables, got %s", typeName(v)))
		return nil
	}
	var out []SPAClient
	for i, e := range list {
		c, ok := p.spaClient(e, i, s)
		if !ok {
			return nil
		}
		if j := slices.IndexFunc(out, func(o SPAClient) bool { return o.Name == c.Name }); j >= 0 {
			p.fail(fmt.Sprintf("spa.client#%d.name", i), fmt.Sprintf("spa client %q", c.Name), "name",
				fmt.Errorf("client #%d has the same name", j+1))
			return nil
		}
		out = append(out, c)
	}
	return out
}

func (p *parser) spaClient(v any, i int, s *SPA) (SPAClient, bool) {
	c := SPAClient{Format: SPAFormatNative, DefaultOpenFor: DefaultSPAOpenFor, MaxOpenFor: DefaultSPAMaxOpenFor}
	path := fmt.Sprintf("spa.client#%d", i)
	t, ok := p.table(v, path, "")
	if !ok {
		return c, false
	}
	t.section = fmt.Sprintf("spa client #%d", i+1)
	if !t.str("name", &c.Name) {
		if p.err == nil {
			p.fail(path, t.section, "", errors.New("name is required"))
		}
		return c, false
	}
	if err := checkClientName(c.Name); err != nil {
		t.fail("name", err)
		return c, false
	}
	t.section = fmt.Sprintf("spa client %q", c.Name)
	if t.str("format", &c.Format) && c.Format != SPAFormatNative && c.Format != SPAFormatFwknop {
		t.failf("format", "%q is not a format (want native or fwknop)", c.Format)
	}
	for _, k := range secretKeys {
		if _, ok := t.get(k); ok {
			t.failf(k, "secrets do not belong in the configuration: put the key in a file of mode 0600 and name it with key_file")
		}
	}
	if open, ok := t.strs("open"); ok {
		for _, o := range open {
			port, err := parseOpen(o)
			if err != nil {
				t.fail("open", err)
				break
			}
			if slices.Contains(c.Open, port) {
				t.failf("open", "%s is listed twice", port)
				break
			}
			c.Open = append(c.Open, port)
		}
	}
	if len(c.Open) == 0 && p.err == nil {
		p.fail(path, t.section, "open", errors.New("open is required: the ports this client may ask for"))
	}
	if srcs, ok := t.strs("sources"); ok {
		for _, src := range srcs {
			pfx, err := ParseSource(src)
			if err != nil {
				t.fail("sources", err)
				break
			}
			c.Sources = append(c.Sources, pfx)
		}
		if len(c.Sources) == 0 {
			t.failf("sources", "is empty: nobody could use this client (leave it out to allow every source)")
		}
	} else {
		c.Sources = slices.Clone(AnySource)
	}
	t.duration("max_open_for", &c.MaxOpenFor)
	t.duration("default_open_for", &c.DefaultOpenFor)
	if c.MaxOpenFor < MinOpenFor || c.MaxOpenFor > MaxOpenFor {
		t.failf("max_open_for", "%v is out of range %v-%v", c.MaxOpenFor, MinOpenFor, MaxOpenFor)
	}
	if c.DefaultOpenFor < MinOpenFor || c.DefaultOpenFor > c.MaxOpenFor {
		t.failf("default_open_for", "%v is out of range %v-%v (max_open_for)", c.DefaultOpenFor, MinOpenFor, c.MaxOpenFor)
	}
	var expire any
	if expire, ok = t.get("access_expire"); ok {
		switch e := expire.(type) {
		case time.Time:
			c.AccessExpire = time.Date(e.Year(), e.Month(), e.Day(), e.Hour(), e.Minute(), e.Second(), 0, time.Local)
		case string:
			d, err := time.ParseInLocation("2006-01-02", e, time.Local)
			if err != nil {
				t.failf("access_expire", "%q: want a date, as in 2027-01-31", e)
			}
			c.AccessExpire = d
		default:
			t.failf("access_expire", "want a date, as in 2027-01-31, got %s", typeName(expire))
		}
	}
	t.str("key_file", &c.KeyFile)
	// require_address refuses packets that ask for their own source address (native "source",
	// fwknop allow-IP 0.0.0.0): a sniffer could send a copy first and have it granted for itself.
	c.RequireSourceAddress = s.RequireAddress
	t.boolean("require_address", &c.RequireSourceAddress)
	if c.Format == SPAFormatFwknop {
		p.fwknopClient(t, &c)
		if p.err == nil && c.Fwknop.HMACKey == nil {
			s.Warnings = append(s.Warnings, fmt.Sprintf("spa client %q: no HMAC key: packets are not authenticated before decryption (add HMAC_KEY_BASE64 to %s)", c.Name, c.KeyFile))
		}
	} else {
		p.nativeClient(t, &c, s)
	}
	t.unknown()
	return c, p.err == nil
}

func (p *parser) nativeClient(t *table, c *SPAClient, s *SPA) {
	if _, ok := t.get("require_source_address"); ok {
		t.failf("require_source_address", "is fwknop's name: native clients use require_address")
		return
	}
	for _, k := range []string{"hmac_key_file", "hmac_digest", "encryption_mode", "require_username"} {
		if _, ok := t.get(k); ok {
			t.failf(k, "is an fwknop option: set format = \"fwknop\"")
			return
		}
	}
	var pub string
	hasPub := t.str("public_key", &pub)
	switch {
	case c.KeyFile != "" && hasPub:
		t.failf("public_key", "set either key_file (shared key) or public_key (key pair), not both")
	case c.KeyFile != "":
		data, err := p.readSecret(c.KeyFile)
		if err != nil {
			t.fail("key_file", err)
			return
		}
		k, err := spa.ParseSharedKey(keyText(data))
		if err != nil {
			t.failf("key_file", "%s: not a sesame shared key (want the file `sesame keygen` writes)", c.KeyFile)
			return
		}
		c.Shared = &k
	case hasPub:
		k, err := spa.ParsePublicKey(pub)
		if err != nil {
			t.failf("public_key", "not a sesame public key (want the contents of the .pub file `sesame keygen --pair` writes)")
			return
		}
		if s.ServerKey == nil && p.err == nil {
			t.failf("public_key", "a key-pair client needs the server's own key: set server_key_file in [spa]")
			return
		}
		c.Public = &k
	default:
		if p.err == nil {
			p.fail(t.path, t.section, "", errors.New("set key_file (shared key) or public_key (key pair)"))
		}
	}
}

func (p *parser) fwknopClient(t *table, c *SPAClient) {
	if _, ok := t.get("public_key"); ok {
		t.failf("public_key", "fwknop clients use key_file and hmac_key_file")
		return
	}
	var hmacFile, digest, mode string
	t.str("hmac_key_file", &hmacFile)
	if t.str("hmac_digest", &digest) {
		d, err := fwknop.ParseDigest(digest)
		if err != nil {
			t.failf("hmac_digest", "%q: want md5, sha1, sha256, sha384, sha512, sha3_256 or sha3_512", digest)
		}
		c.Fwknop.HMACDigest = d
	}
	if t.str("encryption_mode", &mode) {
		m, err := fwknop.ParseMode(mode)
		if err != nil {
			t.failf("encryption_mode", "%q: want cbc, ecb, cfb, ofb, ctr or legacy", mode)
		}
		c.Fwknop.EncryptionMode = m
	}
	t.str("require_username", &c.RequireUsername)
	if v, ok := t.get("require_source_address"); ok {
		// fwknop's name for require_address; both may be given only if they agree.
		a, set := t.m["require_address"]
		if set && a != v {
			t.failf("require_source_address", "contradicts require_address (the same setting): keep one")
			return
		}
		t.boolean("require_source_address", &c.RequireSourceAddress)
	}
	if c.KeyFile == "" {
		if p.err == nil {
			p.fail(t.path, t.section, "key_file", errors.New("key_file is required: a file holding KEY_BASE64 (and HMAC_KEY_BASE64), as `sesame keygen --fwknop` writes"))
		}
		return
	}
	data, err := p.readSecret(c.KeyFile)
	if err != nil {
		t.fail("key_file", err)
		return
	}
	key, hmacKey, err := ParseFwknopKeyFile(data)
	if err != nil {
		t.failf("key_file", "%s: %v", c.KeyFile, err)
		return
	}
	c.Fwknop.Key = key
	if hmacFile != "" {
		data, err := p.readSecret(hmacFile)
		if err != nil {
			t.fail("hmac_key_file", err)
			return
		}
		kf, err := parseKeyFile(data)
		if err != nil {
			t.failf("hmac_key_file", "%s: %v", hmacFile, err)
			return
		}
		if hmacKey = kf.HMACFileKey(); hmacKey == nil {
			t.failf("hmac_key_file", "%s: no HMAC_KEY_BASE64 or HMAC_KEY", hmacFile)
			return
		}
	}
	c.Fwknop.HMACKey = hmacKey
	if err := checkFwknopKeys(c.Fwknop); err != nil {
		t.fail("key_file", err)
	}
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
func (p *parser) readSecret(name string) ([]byte, error) {
	if name == "" {
		return nil, errors.New("empty file name")
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(p.file), path)
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

// Validate checks the invariants of an SPA configuration, whatever format it came from.
func (s *SPA) Validate(firewall string) error {
	if s.Port == 0 {
		return errors.New("spa: port 0")
	}
	if s.MaxAge < time.Second || s.MaxAge > MaxSPAMaxAge {
		return fmt.Errorf("spa: max_age %v is out of range 1s-%v", s.MaxAge, MaxSPAMaxAge)
	}
	if len(s.Clients) == 0 {
		return errors.New("spa: no clients")
	}
	if firewall == FirewallNone {
		return errors.New("spa: firewall none cannot open ports")
	}
	for i := range s.Clients {
		c := &s.Clients[i]
		if err := c.validate(s); err != nil {
			return fmt.Errorf("spa client %q: %w", c.Name, err)
		}
		for _, o := range s.Clients[:i] {
			if o.Name == c.Name {
				return fmt.Errorf("spa client %q: listed twice", c.Name)
			}
		}
	}
	return nil
}

func (c *SPAClient) validate(s *SPA) error {
	if c.Format == SPAFormatNative {
		if err := checkClientName(c.Name); err != nil {
			return err
		}
	} else if c.Name == "" {
		return errors.New("empty name")
	}
	switch c.Format {
	case SPAFormatNative:
		if (c.Shared == nil) == (c.Public == nil) {
			return errors.New("a native client has exactly one of a shared key and a public key")
		}
		if c.Public != nil && s.ServerKey == nil {
			return errors.New("a key-pair client needs the server's key pair")
		}
	case SPAFormatFwknop:
		if err := checkFwknopKeys(c.Fwknop); err != nil {
			return err
		}
	default:
		return fmt.Errorf("format %q is not valid", c.Format)
	}
	if len(c.Open) == 0 && !c.AnyPort {
		return errors.New("no ports to open")
	}
	for i, p := range append(slices.Clone(c.Open), c.Restrict...) {
		if p.Proto != netport.TCP && p.Proto != netport.UDP || p.Num == 0 {
			return fmt.Errorf("%s is not a port", p)
		}
		if i < len(c.Open) && slices.Contains(c.Open[:i], p) {
			return fmt.Errorf("open: %s is listed twice", p)
		}
	}
	if len(c.Sources) == 0 {
		return errors.New("no sources")
	}
	for _, p := range c.Sources {
		if !p.IsValid() || p.Addr().Zone() != "" {
			return fmt.Errorf("sources: %v is not valid", p)
		}
	}
	if c.MaxOpenFor < MinOpenFor || c.MaxOpenFor > MaxOpenFor || c.MaxOpenFor%time.Second != 0 {
		return fmt.Errorf("max_open_for %v is out of range %v-%v", c.MaxOpenFor, MinOpenFor, MaxOpenFor)
	}
	if c.DefaultOpenFor < MinOpenFor || c.DefaultOpenFor > c.MaxOpenFor {
		return fmt.Errorf("default_open_for %v is out of range %v-%v", c.DefaultOpenFor, MinOpenFor, c.MaxOpenFor)
	}
	return nil
}

package fwknop

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// ErrConfig marks every configuration parse error. The message names file,
// line and option but never the value of a key option.
var ErrConfig = errors.New("invalid configuration")

type confError struct {
	file string
	line int
	key  string
	msg  string
}

func (e *confError) Error() string {
	if e.key == "" {
		return fmt.Sprintf("fwknop: %s:%d: %s", e.file, e.line, e.msg)
	}
	return fmt.Sprintf("fwknop: %s:%d: %s: %s", e.file, e.line, e.key, e.msg)
}

func (e *confError) Unwrap() error { return ErrConfig }

// confLine is one "NAME value" line.
type confLine struct {
	num        int
	key, value string
}

// splitConf yields the non-comment lines of a file as NAME/value pairs.
// A trailing ';' (fwknopd.conf style) is removed when semicolon is set.
func splitConf(name string, data []byte, semicolon bool, fn func(l confLine) error) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		var k, v string
		if i := strings.IndexAny(line, " \t"); i >= 0 {
			k, v = line[:i], strings.TrimSpace(line[i+1:])
		} else {
			k, v = line, ""
		}
		if semicolon {
			v = strings.TrimSpace(strings.TrimSuffix(v, ";"))
		}
		if err := fn(confLine{n, k, v}); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return &confError{name, n, "", "read: " + err.Error()}
	}
	return nil
}

func parseBool(v string) (bool, bool) {
	switch strings.ToUpper(v) {
	case "Y", "YES", "1", "TRUE", "ON":
		return true, true
	case "N", "NO", "0", "FALSE", "OFF":
		return false, true
	}
	return false, false
}

func parseSeconds(v string) (time.Duration, bool) {
	if !allDigits(v) || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return time.Duration(n) * time.Second, err == nil
}

func parsePortList(v string) ([]netport.Port, error) {
	var out []netport.Port
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netport.Parse(f)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if len(out) == 0 {
		return nil, errors.New("empty port list")
	}
	return out, nil
}

// AccessStanza is one SOURCE block of fwknopd's access.conf.
type AccessStanza struct {
	Line int // line of the SOURCE option

	SourceAny bool           // SOURCE ANY
	Source    []netip.Prefix // otherwise: the listed networks (single IPs as /32 or /128)
	// Destination is the DESTINATION filter; nil means any.
	Destination []netip.Prefix

	OpenPorts     []netport.Port // nil: any port may be requested
	RestrictPorts []netport.Port

	Keys Keys // KEY/KEY_BASE64, HMAC_KEY/HMAC_KEY_BASE64, HMAC_DIGEST_TYPE, ENCRYPTION_MODE

	FWAccessTimeout      time.Duration // default 30 s
	MaxFWTimeout         time.Duration // default 300 s
	RequireUsername      string
	RequireSourceAddress bool
	AccessExpire         time.Time // zero: never

	EnableCmdExec bool
	CmdCycleOpen  string
	CmdCycleClose string
	CmdCycleTimer time.Duration

	// Other holds recognised-but-unsupported options (GPG_*, FORCE_NAT, …)
	// by upper-case name, last value wins.
	Other map[string]string
}

// Defaults of access.conf options (FEATURES.md §2, SPEC.md §9).
const (
	DefaultFWAccessTimeout = 30 * time.Second
	DefaultMaxFWTimeout    = 300 * time.Second
	DefaultMaxSPAPacketAge = 120 * time.Second
)

// knownAccessOther lists access.conf options kept in Other.
var knownAccessOther = map[string]bool{
	"CMD_EXEC_USER": true, "CMD_EXEC_GROUP": true, "ENABLE_CMD_SUDO_EXEC": true, "CMD_SUDO_EXEC_USER": true,
	"CMD_SUDO_EXEC_GROUP": true, "FORCE_NAT": true, "FORCE_SNAT": true, "FORCE_MASQUERADE": true,
	"FORWARD_ALL": true, "DISABLE_DNAT": true, "GPG_DECRYPT_ID": true, "GPG_DECRYPT_PW": true,
	"GPG_ALLOW_NO_PW": true, "GPG_REQUIRE_SIG": true, "GPG_DISABLE_SIG": true, "GPG_IGNORE_SIG_VERIFY_ERROR": true,
	"GPG_REMOTE_ID": true, "GPG_FINGERPRINT_ID": true, "GPG_HOME_DIR": true, "GPG_EXE": true,
	"USE_RIJNDAEL": true, "USE_GPG": true,
}

// secretOption reports whether the value of an option must never be echoed.
func secretOption(k string) bool {
	return strings.Contains(k, "KEY") || strings.HasSuffix(k, "_PW")
}

// Placeholder is the key value of the access.conf that Debian's fwknop-server package ships
// (KEY_BASE64 and HMAC_KEY_BASE64 __CHANGEME__): a file that still holds it has no keys yet.
const Placeholder = "__CHANGEME__"

// placeholderMsg is the error for a key option that still holds Placeholder.
const placeholderMsg = "still the placeholder " + Placeholder + " of the packaged file: make keys with `sesame keygen --fwknop` and use its KEY_BASE64 and HMAC_KEY_BASE64 lines"

// accessOptions are the access.conf options ParseAccess reads itself.
var accessOptions = map[string]bool{
	"SOURCE": true, "DESTINATION": true, "OPEN_PORTS": true, "RESTRICT_PORTS": true, "KEY": true,
	"KEY_BASE64": true, "HMAC_KEY": true, "HMAC_KEY_BASE64": true, "HMAC_DIGEST_TYPE": true,
	"ENCRYPTION_MODE": true, "FW_ACCESS_TIMEOUT": true, "MAX_FW_TIMEOUT": true, "CMD_CYCLE_TIMER": true,
	"REQUIRE_USERNAME": true, "REQUIRE_SOURCE_ADDRESS": true, "REQUIRE_SOURCE": true, "ENABLE_CMD_EXEC": true,
	"ACCESS_EXPIRE": true, "ACCESS_EXPIRE_EPOCH": true, "CMD_CYCLE_OPEN": true, "CMD_CYCLE_CLOSE": true,
	"%INCLUDE": true, "%INCLUDE_FOLDER": true,
}

// shown is the name an error may quote for a line of a file that holds keys: the option name
// when it is one of known, else nothing (the first word of a stray line may be a key).
func shown(l confLine, known func(string) bool) confLine {
	if !known(strings.ToUpper(l.key)) {
		l.key = ""
	}
	return l
}

func parsePrefixes(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("bad network %q", f)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("bad address %q", f)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	if len(out) == 0 {
		return nil, errors.New("empty address list")
	}
	return out, nil
}

// ParseAccess parses fwknopd's access.conf. name is used in errors only.
// %include and %include_folder need file access and are reported as errors;
// the caller may resolve them and parse the included files separately.
func ParseAccess(name string, data []byte) ([]AccessStanza, error) {
	var out []AccessStanza
	var cur *AccessStanza
	known := func(k string) bool { return accessOptions[k] || knownAccessOther[k] }
	bad := func(l confLine, msg string) error {
		l = shown(l, known)
		return &confError{name, l.num, l.key, msg}
	}
	err := splitConf(name, data, false, func(l confLine) error {
		k := strings.ToUpper(l.key)
		if strings.HasPrefix(k, "%") {
			return bad(l, "includes are not supported here")
		}
		if secretOption(k) && l.value == Placeholder {
			return bad(l, placeholderMsg)
		}
		if k == "SOURCE" {
			out = append(out, AccessStanza{Line: l.num, FWAccessTimeout: DefaultFWAccessTimeout, MaxFWTimeout: DefaultMaxFWTimeout})
			cur = &out[len(out)-1]
			if strings.EqualFold(l.value, "ANY") {
				cur.SourceAny = true
				return nil
			}
			p, err := parsePrefixes(l.value)
			if err != nil {
				return bad(l, err.Error())
			}
			cur.Source = p
			return nil
		}
		if cur == nil {
			return bad(l, "option before the first SOURCE")
		}
		if l.value == "" {
			return bad(l, "missing value")
		}
		var err error
		switch k {
		case "DESTINATION":
			if !strings.EqualFold(l.value, "ANY") {
				cur.Destination, err = parsePrefixes(l.value)
			}
		case "OPEN_PORTS":
			cur.OpenPorts, err = parsePortList(l.value)
		case "RESTRICT_PORTS":
			cur.RestrictPorts, err = parsePortList(l.value)
		case "KEY":
			cur.Keys.Key = []byte(l.value)
		case "KEY_BASE64":
			cur.Keys.Key, err = base64.StdEncoding.DecodeString(l.value)
			if err != nil {
				return bad(l, "not valid base64")
			}
		case "HMAC_KEY":
			cur.Keys.HMACKey = []byte(l.value)
		case "HMAC_KEY_BASE64":
			cur.Keys.HMACKey, err = base64.StdEncoding.DecodeString(l.value)
			if err != nil {
				return bad(l, "not valid base64")
			}
		case "HMAC_DIGEST_TYPE":
			cur.Keys.HMACDigest, err = ParseDigest(l.value)
		case "ENCRYPTION_MODE":
			cur.Keys.EncryptionMode, err = ParseMode(l.value)
		case "FW_ACCESS_TIMEOUT", "MAX_FW_TIMEOUT", "CMD_CYCLE_TIMER":
			d, ok := parseSeconds(l.value)
			if !ok {
				return bad(l, "want a number of seconds")
			}
			switch k {
			case "FW_ACCESS_TIMEOUT":
				cur.FWAccessTimeout = d
			case "MAX_FW_TIMEOUT":
				cur.MaxFWTimeout = d
			default:
				cur.CmdCycleTimer = d
			}
		case "REQUIRE_USERNAME":
			cur.RequireUsername = l.value
		case "REQUIRE_SOURCE_ADDRESS", "REQUIRE_SOURCE", "ENABLE_CMD_EXEC":
			b, ok := parseBool(l.value)
			if !ok {
				return bad(l, "want Y or N")
			}
			if k == "ENABLE_CMD_EXEC" {
				cur.EnableCmdExec = b
			} else {
				cur.RequireSourceAddress = b
			}
		case "ACCESS_EXPIRE":
			cur.AccessExpire, err = time.Parse("01/02/2006", l.value)
			if err != nil {
				return bad(l, "want MM/DD/YYYY")
			}
		case "ACCESS_EXPIRE_EPOCH":
			n, perr := strconv.ParseInt(l.value, 10, 64)
			if perr != nil || n < 0 {
				return bad(l, "want seconds since the epoch")
			}
			cur.AccessExpire = time.Unix(n, 0)
		case "CMD_CYCLE_OPEN":
			cur.CmdCycleOpen = l.value
		case "CMD_CYCLE_CLOSE":
			cur.CmdCycleClose = l.value
		default:
			if !knownAccessOther[k] {
				return bad(l, "unknown option (the line is not shown: it may hold a key)")
			}
			if cur.Other == nil {
				cur.Other = map[string]string{}
			}
			cur.Other[k] = l.value
		}
		if err != nil {
			if secretOption(k) {
				return bad(l, "invalid value")
			}
			return bad(l, err.Error())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i := range out {
		s := &out[i]
		l := confLine{num: s.Line, key: "SOURCE"}
		if len(s.Keys.Key) == 0 && s.Other["GPG_DECRYPT_ID"] == "" {
			return nil, bad(l, "stanza has no KEY, KEY_BASE64 or GPG_DECRYPT_ID")
		}
		if len(s.Keys.Key) > maxKeyLen {
			return nil, bad(l, fmt.Sprintf("encryption key longer than %d bytes", maxKeyLen))
		}
		if len(s.Keys.HMACKey) > maxHMACKey {
			return nil, bad(l, fmt.Sprintf("HMAC key longer than %d bytes", maxHMACKey))
		}
		if s.Keys.HMACKey != nil && bytes.Equal(s.Keys.Key, s.Keys.HMACKey) {
			return nil, bad(l, "encryption and HMAC keys are identical")
		}
		if s.Keys.HMACKey != nil && s.Keys.EncryptionMode == ModeLegacy {
			return nil, bad(l, "legacy encryption mode is incompatible with HMAC")
		}
	}
	if len(out) == 0 {
		return nil, &confError{name, 0, "", "no SOURCE stanza"}
	}
	return out, nil
}

// ServerConf holds the fwknopd.conf settings sesame uses. Unset options keep
// fwknopd's defaults.
type ServerConf struct {
	PCAPIntf   string // default eth0
	PCAPFilter string // default "udp port 62201"
	// PCAPPort and PCAPProto are the port and protocol named in PCAPFilter,
	// when it has the simple "[udp|tcp] [dst] port N" shape; zero otherwise.
	PCAPPort  uint16
	PCAPProto netport.Proto
	// PCAPICMP: PCAPFilter is "icmp", or a port term and "icmp" joined by "or" (fwknopd then
	// also takes SPA packets from the payload of IPv4 ICMP messages, fwknop -P icmp).
	PCAPICMP bool

	EnableUDPServer bool
	UDPServPort     uint16 // default 62201

	EnableSPAPacketAging    bool          // default Y
	MaxSPAPacketAge         time.Duration // default 120 s
	EnableDigestPersistence bool          // default Y
	DigestFile              string
	RunDir                  string // FWKNOP_RUN_DIR
	AccessFile              string
	FWAccessTimeout         time.Duration // default 30 s (global default for stanzas)
	EnableIPTForwarding     bool
	EnableIPTLocalNAT       bool

	// Other holds every other option by upper-case name.
	Other map[string]string
}

// ParseServerConf parses fwknopd.conf: "NAME value;" lines, '#' comments.
func ParseServerConf(name string, data []byte) (*ServerConf, error) {
	c := &ServerConf{
		PCAPIntf: "eth0", PCAPFilter: "udp port 62201", PCAPPort: DefaultPort, PCAPProto: netport.UDP,
		UDPServPort: DefaultPort, EnableSPAPacketAging: true, MaxSPAPacketAge: DefaultMaxSPAPacketAge,
		EnableDigestPersistence: true, FWAccessTimeout: DefaultFWAccessTimeout,
	}
	bad := func(l confLine, msg string) error { return &confError{name, l.num, l.key, msg} }
	err := splitConf(name, data, true, func(l confLine) error {
		k := strings.ToUpper(l.key)
		if l.value == "" {
			return bad(l, "missing value")
		}
		boolOpt := func(dst *bool) error {
			b, ok := parseBool(l.value)
			if !ok {
				return bad(l, "want Y or N")
			}
			*dst = b
			return nil
		}
		switch k {
		case "PCAP_INTF":
			c.PCAPIntf = l.value
		case "PCAP_FILTER":
			c.PCAPFilter = l.value
			c.PCAPProto, c.PCAPPort, c.PCAPICMP = parseFilter(l.value)
		case "ENABLE_UDP_SERVER":
			return boolOpt(&c.EnableUDPServer)
		case "UDPSERV_PORT":
			p, err := netport.ParseNumber(l.value)
			if err != nil {
				return bad(l, err.Error())
			}
			c.UDPServPort = p
		case "ENABLE_SPA_PACKET_AGING":
			return boolOpt(&c.EnableSPAPacketAging)
		case "MAX_SPA_PACKET_AGE", "FW_ACCESS_TIMEOUT":
			d, ok := parseSeconds(l.value)
			if !ok {
				return bad(l, "want a number of seconds")
			}
			if k == "FW_ACCESS_TIMEOUT" {
				c.FWAccessTimeout = d
			} else {
				c.MaxSPAPacketAge = d
			}
		case "ENABLE_DIGEST_PERSISTENCE":
			return boolOpt(&c.EnableDigestPersistence)
		case "DIGEST_FILE":
			c.DigestFile = l.value
		case "FWKNOP_RUN_DIR":
			c.RunDir = l.value
		case "ACCESS_FILE":
			c.AccessFile = l.value
		case "ENABLE_IPT_FORWARDING":
			return boolOpt(&c.EnableIPTForwarding)
		case "ENABLE_IPT_LOCAL_NAT":
			return boolOpt(&c.EnableIPTLocalNAT)
		default:
			if strings.Trim(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
				return bad(confLine{num: l.num}, "not an option name (the line is not shown: it may hold a key)")
			}
			if c.Other == nil {
				c.Other = map[string]string{}
			}
			c.Other[k] = l.value
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// filterPort extracts proto and port from simple BPF filters such as
// "udp port 62201" or "udp dst port 62201".
// parseFilter reads the PCAP_FILTER shapes sesame can follow: a port term (filterPort), "icmp",
// or one of each joined by "or", in either order and optionally in parentheses. Anything else
// gives zeros.
func parseFilter(f string) (proto netport.Proto, port uint16, icmp bool) {
	terms := strings.Split(strings.ToLower(f), " or ")
	if len(terms) > 2 {
		return 0, 0, false
	}
	for _, t := range terms {
		t = strings.TrimSpace(strings.Trim(strings.TrimSpace(t), "()"))
		switch {
		case t == "icmp" || t == "ip proto icmp" || t == "ip proto \\icmp":
			if icmp {
				return 0, 0, false
			}
			icmp = true
		case port != 0:
			return 0, 0, false
		default:
			if proto, port = filterPort(t); port == 0 {
				return 0, 0, false
			}
		}
	}
	return proto, port, icmp
}

func filterPort(f string) (netport.Proto, uint16) {
	w := strings.Fields(strings.ToLower(f))
	var proto netport.Proto
	for i, t := range w {
		switch t {
		case "udp":
			proto = netport.UDP
		case "tcp":
			proto = netport.TCP
		case "port":
			if i+1 < len(w) && !strings.Contains(f, " or ") && !strings.Contains(f, "portrange") {
				if p, err := netport.ParseNumber(w[i+1]); err == nil {
					return proto, p
				}
			}
			return 0, 0
		}
	}
	return 0, 0
}

// RCStanza is one [name] section of the client's ~/.fwknoprc. Fields hold
// the raw settings; empty means "not set in this stanza".
type RCStanza struct {
	Name string
	Line int

	SPAServer      string
	SPAServerPort  uint16
	SPAServerProto string
	SPASourcePort  uint16 // SPA_SOURCE_PORT (the client's -S)
	Access         []netport.Port
	AllowIP        string // an IPv4 address, "source" or "resolve"
	FWTimeout      time.Duration
	NATAccess      string
	SpoofUser      string
	Keys           Keys // KEY/KEY_BASE64/HMAC_KEY/HMAC_KEY_BASE64/HMAC_DIGEST_TYPE/ENCRYPTION_MODE
	UseHMAC        bool
	DigestType     Digest
	KeyFile        string
	HMACKeyFile    string

	// Other holds every other variable by upper-case name.
	Other map[string]string
}

// rcKnown reports whether k is a .fwknoprc variable ParseRC reads itself.
func rcKnown(k string) bool {
	switch k {
	case "SPA_SERVER", "SPA_SERVER_PORT", "SPA_SERVER_PROTO", "SPA_SOURCE_PORT", "ACCESS", "ALLOW_IP", "FW_TIMEOUT",
		"NAT_ACCESS", "SPOOF_USER", "KEY", "KEY_RIJNDAEL", "KEY_BASE64", "KEY_RIJNDAEL_BASE64", "HMAC_KEY",
		"HMAC_KEY_BASE64", "HMAC_DIGEST_TYPE", "DIGEST_TYPE", "ENCRYPTION_MODE", "USE_HMAC", "KEY_FILE",
		"HMAC_KEY_FILE":
		return true
	}
	return false
}

// ParseRC parses a ~/.fwknoprc file: INI-style "[name]" sections holding
// "VARIABLE value" lines. Stanzas are returned in file order, including
// "[default]".
func ParseRC(name string, data []byte) ([]RCStanza, error) {
	var out []RCStanza
	bad := func(l confLine, msg string) error {
		l = shown(l, rcKnown)
		return &confError{name, l.num, l.key, msg}
	}
	err := splitConf(name, data, false, func(l confLine) error {
		if strings.HasPrefix(l.key, "[") {
			full := strings.TrimSpace(l.key + " " + l.value)
			if !strings.HasSuffix(full, "]") || len(full) < 3 {
				return bad(confLine{num: l.num}, "bad section header")
			}
			out = append(out, RCStanza{Name: strings.TrimSpace(full[1 : len(full)-1]), Line: l.num})
			return nil
		}
		if len(out) == 0 {
			return bad(l, "variable outside a [stanza]")
		}
		s := &out[len(out)-1]
		k := strings.ToUpper(l.key)
		v := l.value
		var err error
		switch k {
		case "SPA_SERVER":
			s.SPAServer = v
		case "SPA_SERVER_PORT":
			s.SPAServerPort, err = netport.ParseNumber(v)
		case "SPA_SERVER_PROTO":
			s.SPAServerProto = strings.ToLower(v)
		case "SPA_SOURCE_PORT":
			s.SPASourcePort, err = netport.ParseNumber(v)
		case "ACCESS":
			s.Access, err = parsePortList(v)
		case "ALLOW_IP":
			s.AllowIP = v
		case "FW_TIMEOUT":
			d, ok := parseSeconds(v)
			if !ok {
				return bad(l, "want a number of seconds")
			}
			s.FWTimeout = d
		case "NAT_ACCESS":
			s.NATAccess = v
		case "SPOOF_USER":
			s.SpoofUser = v
		case "KEY", "KEY_RIJNDAEL":
			s.Keys.Key = []byte(v)
		case "KEY_BASE64", "KEY_RIJNDAEL_BASE64":
			s.Keys.Key, err = base64.StdEncoding.DecodeString(v)
		case "HMAC_KEY":
			s.Keys.HMACKey = []byte(v)
		case "HMAC_KEY_BASE64":
			s.Keys.HMACKey, err = base64.StdEncoding.DecodeString(v)
		case "HMAC_DIGEST_TYPE":
			s.Keys.HMACDigest, err = ParseDigest(v)
		case "DIGEST_TYPE":
			s.DigestType, err = ParseDigest(v)
		case "ENCRYPTION_MODE":
			s.Keys.EncryptionMode, err = ParseMode(v)
		case "USE_HMAC":
			b, ok := parseBool(v)
			if !ok {
				return bad(l, "want Y or N")
			}
			s.UseHMAC = b
		case "KEY_FILE":
			s.KeyFile = v
		case "HMAC_KEY_FILE":
			s.HMACKeyFile = v
		default:
			if strings.Trim(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" {
				return bad(l, "not a variable name (the line is not shown: it may hold a key)")
			}
			if s.Other == nil {
				s.Other = map[string]string{}
			}
			s.Other[k] = v
		}
		if err != nil {
			if secretOption(k) {
				return bad(l, "invalid value")
			}
			return bad(l, err.Error())
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// KeyFile is what an fwknop key file sets.
type KeyFile struct {
	Key, HMACKey []byte // KEY/KEY_BASE64 and HMAC_KEY/HMAC_KEY_BASE64; nil when not set
	// Bare is the key of a file whose only content is one base64 key with no name.
	Bare           []byte
	HMACDigest     Digest // HMAC_DIGEST_TYPE; 0 when not set
	EncryptionMode Mode   // ENCRYPTION_MODE; 0 when not set
}

// EncryptionKey is the encryption key of a key file: KEY or KEY_BASE64, else its bare key.
func (f KeyFile) EncryptionKey() []byte {
	if f.Key != nil {
		return f.Key
	}
	return f.Bare
}

// HMACFileKey is the key of a file named as an HMAC key file: HMAC_KEY or HMAC_KEY_BASE64, else
// the file's only key (bare, KEY or KEY_BASE64).
func (f KeyFile) HMACFileKey() []byte {
	if f.HMACKey != nil {
		return f.HMACKey
	}
	return f.EncryptionKey()
}

// ParseKeyFile reads an fwknop key file: one base64 key alone (Bare), or setting lines, one a
// line, with the value after white space or a colon: KEY_BASE64, HMAC_KEY_BASE64, KEY, HMAC_KEY
// (as `sesame keygen --fwknop` and `fwknop --key-gen` write them; KEY_RIJNDAEL and
// KEY_RIJNDAEL_BASE64 are KEY and KEY_BASE64), HMAC_DIGEST_TYPE, ENCRYPTION_MODE and USE_HMAC
// (ignored). When host is not empty, fwknop --get-key's "HOST: passphrase" line for that host
// sets Key. Blank lines and lines starting with '#' are skipped. Errors name the line and a
// known setting, and never quote a value or an unknown word: the file holds keys.
func ParseKeyFile(data []byte, host string) (KeyFile, error) {
	var out KeyFile
	type line struct {
		num  int
		text string
	}
	var lines []line
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		t := strings.TrimSpace(sc.Text())
		if t != "" && t[0] != '#' {
			lines = append(lines, line{n, t})
		}
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("read: %w", err)
	}
	if len(lines) == 1 && !strings.ContainsAny(lines[0].text, " \t:") {
		b, err := base64.StdEncoding.DecodeString(lines[0].text)
		if err != nil {
			return out, fmt.Errorf("line %d: not valid base64 (a file of one word holds one base64 key)", lines[0].num)
		}
		out.Bare = b
		return out, nil
	}
	for _, l := range lines {
		k, v, colon := strings.Cut(l.text, ":")
		if i := strings.IndexAny(l.text, " \t"); i >= 0 && (!colon || i < len(k)) {
			k, v = l.text[:i], l.text[i+1:]
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		name := strings.ToUpper(k)
		if host != "" && strings.EqualFold(k, host) {
			name = "HOST"
		}
		bad := func(msg string) error { return fmt.Errorf("line %d: %s: %s", l.num, name, msg) }
		switch name {
		case "KEY_BASE64", "KEY_RIJNDAEL_BASE64", "HMAC_KEY_BASE64", "KEY", "KEY_RIJNDAEL", "HMAC_KEY",
			"HMAC_DIGEST_TYPE", "ENCRYPTION_MODE", "USE_HMAC", "HOST":
		default:
			return out, fmt.Errorf("line %d: unknown setting (want KEY_BASE64, HMAC_KEY_BASE64, KEY, HMAC_KEY, "+
				"HMAC_DIGEST_TYPE or ENCRYPTION_MODE lines; the line is not shown: it may hold a key)", l.num)
		}
		switch {
		case v == "":
			return out, bad("no value")
		case v == Placeholder && name != "HMAC_DIGEST_TYPE" && name != "ENCRYPTION_MODE":
			return out, bad(placeholderMsg)
		}
		var err error
		switch name {
		case "KEY_BASE64", "KEY_RIJNDAEL_BASE64":
			if out.Key, err = base64.StdEncoding.DecodeString(v); err != nil {
				return out, bad("not valid base64")
			}
		case "HMAC_KEY_BASE64":
			if out.HMACKey, err = base64.StdEncoding.DecodeString(v); err != nil {
				return out, bad("not valid base64")
			}
		case "KEY", "KEY_RIJNDAEL", "HOST":
			out.Key = []byte(v)
		case "HMAC_KEY":
			out.HMACKey = []byte(v)
		case "HMAC_DIGEST_TYPE":
			if out.HMACDigest, err = ParseDigest(v); err != nil {
				return out, bad("invalid value (want md5, sha1, sha256, sha384, sha512, sha3_256 or sha3_512)")
			}
		case "ENCRYPTION_MODE":
			if out.EncryptionMode, err = ParseMode(v); err != nil {
				return out, bad("invalid value (want cbc, ecb, cfb, ofb, ctr or legacy)")
			}
		}
	}
	return out, nil
}

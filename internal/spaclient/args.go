// Package spaclient builds and sends single packet authorization requests for `sesame open`, in sesame's native format or fwknop's.
package spaclient

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Format is the wire format of a request.
type Format string

// The formats.
const (
	FormatSesame Format = "sesame" // docs/PROTOCOL.md
	FormatFwknop Format = "fwknop" // fwknop 2.x Rijndael + HMAC
)

// DefaultPort is the default UDP port of both formats.
const DefaultPort = 62201

// Options is a parsed `sesame open` command line. Zero values mean "not
// given"; Resolve fills them from a profile and defaults.
type Options struct {
	Host      string   // HOST argument or -D
	Access    []string // -A, each "tcp/22" (comma lists are split)
	Allow     string   // -a ADDRESS
	Source    bool     // -s: open for the packet's source address (weaker: see SourceWarning)
	ResolveIP bool     // -R, --resolve-ip-http(s): refused, see ErrResolveIP
	// ResolveURL is --resolve-url (refused as -R).
	ResolveURL string
	OpenFor    string // -f SECONDS (a Go duration such as 90s is accepted too)
	Profile    string // -n NAME
	ID         string // --id (the username of fwknop packets)
	KeyFile    string // --key-file
	ServerKey  string // --server-key FILE (or an inline sesame-pub-v1 key)
	Fwknop     bool   // --fwknop
	Port       uint   // -p
	// ICMP (--icmp, -P icmp) sends the packet in an ICMP echo request instead of a UDP datagram.
	ICMP bool
	// Proto is -P / --server-proto as given: "udp" or "icmp".
	Proto string
	// SourcePort (--source-port, fwknop's -S) is the local UDP port to send from; 0: any.
	SourcePort uint
	Family     int  // 4 or 6 from -4/-6, 0 for either
	Verbose    bool // -v
	Test       bool // -T: build the packet but do not send it

	HMACKeyFile string // --hmac-key-file (fwknop format)
	HMACDigest  string // --hmac-digest-type (fwknop format)
	Digest      string // -m, --digest-type: fwknop's inner digest

	ConfigFile string // --config (default ~/.config/sesame/client.toml)
	RCFile     string // --rc-file (default ~/.fwknoprc)

	// Keys given on the command line (fwknop migration flags). They leak
	// into ps(1) and shell history; Resolve warns about them.
	KeyBase64, HMACKeyBase64, KeyText, HMACKeyText string
}

// CommandLineKeys reports whether any key was given on the command line.
func (o *Options) CommandLineKeys() bool {
	return o.KeyBase64 != "" || o.HMACKeyBase64 != "" || o.KeyText != "" || o.HMACKeyText != ""
}

// accessList is a repeatable, comma-separated -A value.
type accessList struct{ l *[]string }

func (a accessList) String() string {
	if a.l == nil {
		return ""
	}
	return strings.Join(*a.l, ",")
}

func (a accessList) Set(s string) error {
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*a.l = append(*a.l, p)
		}
	}
	return nil
}

// familyFlag sets Family to a fixed value when given.
type familyFlag struct {
	f *int
	v int
}

func (f familyFlag) String() string   { return "" }
func (f familyFlag) IsBoolFlag() bool { return true }
func (f familyFlag) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	if b {
		if *f.f != 0 && *f.f != f.v {
			return errors.New("-4 and -6 are mutually exclusive")
		}
		*f.f = f.v
	}
	return nil
}

// FlagSet returns a flag set for `sesame open` that stores into o. Its
// output is discarded; callers print their own usage text.
func FlagSet(o *Options) *flag.FlagSet {
	fs := flag.NewFlagSet("sesame open", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	str := func(p *string, usage string, names ...string) {
		for _, n := range names {
			fs.StringVar(p, n, "", usage)
		}
	}
	boolean := func(p *bool, usage string, names ...string) {
		for _, n := range names {
			fs.BoolVar(p, n, false, usage)
		}
	}
	fs.Var(accessList{&o.Access}, "A", "ports to open, e.g. tcp/22,udp/53")
	fs.Var(accessList{&o.Access}, "access", "ports to open, e.g. tcp/22,udp/53")
	str(&o.Allow, "open for `ADDRESS`", "a", "allow-ip")
	boolean(&o.Source, "open for the address the packet comes from (weaker)", "s", "source-ip")
	boolean(&o.ResolveIP, "not supported: give -a ADDRESS", "R", "resolve-ip-http", "resolve-ip-https")
	str(&o.ResolveURL, "not supported: give -a ADDRESS", "resolve-url")
	str(&o.OpenFor, "ask for the ports to stay open `SECONDS`", "f", "open-for", "fw-timeout")
	str(&o.Profile, "use profile `NAME`", "n", "named-config", "profile")
	str(&o.ID, "client identity (fwknop: username)", "id", "U", "spoof-user")
	str(&o.KeyFile, "private key `FILE`", "key-file", "G", "get-key")
	str(&o.ServerKey, "server public key `FILE`", "server-key")
	boolean(&o.Fwknop, "send fwknop's format", "fwknop")
	boolean(&o.ICMP, "send the packet in an ICMP echo request (a ping)", "icmp")
	str(&o.Proto, "carriage: udp or icmp", "P", "server-proto")
	fs.UintVar(&o.Port, "p", 0, "server UDP `PORT`")
	fs.UintVar(&o.Port, "port", 0, "server UDP `PORT`")
	fs.UintVar(&o.Port, "server-port", 0, "server UDP `PORT`")
	fs.UintVar(&o.SourcePort, "source-port", 0, "local UDP `PORT` to send from")
	fs.UintVar(&o.SourcePort, "S", 0, "local UDP `PORT` to send from")
	str(&o.Host, "server `HOST`", "D", "destination")
	fs.Var(familyFlag{&o.Family, 4}, "4", "IPv4 only")
	fs.Var(familyFlag{&o.Family, 6}, "6", "IPv6 only")
	boolean(&o.Verbose, "describe the packet sent", "v", "verbose")
	boolean(&o.Test, "build the packet but do not send it", "T", "test")
	str(&o.HMACKeyFile, "fwknop HMAC key `FILE`", "hmac-key-file", "get-hmac-key")
	str(&o.HMACDigest, "fwknop HMAC digest", "hmac-digest-type")
	str(&o.Digest, "fwknop inner digest", "m", "digest-type")
	str(&o.ConfigFile, "client profiles `FILE`", "config")
	str(&o.RCFile, "fwknop rc `FILE`", "rc-file")
	str(&o.KeyBase64, "fwknop key, base64 (leaks into ps; use --key-file)", "key-base64-rijndael", "key-base64")
	str(&o.HMACKeyBase64, "fwknop HMAC key, base64 (leaks into ps)", "key-base64-hmac")
	str(&o.KeyText, "fwknop passphrase (leaks into ps)", "key-rijndael")
	str(&o.HMACKeyText, "fwknop HMAC passphrase (leaks into ps)", "key-hmac")
	var useHMAC bool
	boolean(&useHMAC, "accepted for fwknop compatibility (HMAC is used whenever a key is present)", "use-hmac")
	return fs
}

// ParseArgs parses the arguments of `sesame open` (without the command
// name). Flags may come before and after HOST; "--" ends them. -h returns
// flag.ErrHelp. All errors are about the command line.
func ParseArgs(args []string) (Options, error) {
	var o Options
	fs := FlagSet(&o)
	pos, err := ParseInterspersed(fs, args)
	if err != nil {
		return o, err
	}
	switch {
	case len(pos) > 1:
		return o, fmt.Errorf("want one HOST, got %q", pos)
	case len(pos) == 1 && o.Host != "" && o.Host != pos[0]:
		return o, fmt.Errorf("HOST %q and -D %q disagree", pos[0], o.Host)
	case len(pos) == 1:
		o.Host = pos[0]
	}
	return o, o.Check()
}

// Check reports the errors of a parsed command line that no single flag shows: conflicting
// or unsupported flags and values out of range.
func (o *Options) Check() error {
	if o.ResolveIP || o.ResolveURL != "" {
		return ErrResolveIP
	}
	if o.Allow != "" && o.Source {
		return errors.New("-a and -s are mutually exclusive")
	}
	switch strings.ToLower(o.Proto) {
	case "", "udp":
	case "icmp":
		o.ICMP = true
	default:
		return fmt.Errorf("-P %s: sesame open sends udp or icmp", o.Proto)
	}
	switch {
	case o.SourcePort > 65535:
		return fmt.Errorf("--source-port %d: port out of range 1-65535", o.SourcePort)
	case o.SourcePort != 0 && o.ICMP:
		return errors.New("--source-port: a ping has no source port (drop --icmp)")
	}
	if o.Port > 65535 {
		return fmt.Errorf("-p %d: port out of range 1-65535", o.Port)
	}
	if o.OpenFor != "" {
		if _, err := ParseOpenFor(o.OpenFor); err != nil {
			return fmt.Errorf("-f: %w", err)
		}
	}
	return nil
}

// ParseInterspersed parses args with fs, allowing flags after positional
// arguments (Go's flag package stops at the first one), and returns the
// positional arguments in order. Everything after "--" is positional.
func ParseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// MaxOpenFor is the longest duration a request may ask for (fwknop's limit).
const MaxOpenFor = 65536 * time.Second

// ParseOpenFor parses -f: whole seconds ("30"), or a Go duration of whole
// seconds ("90s", "5m").
func ParseOpenFor(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if d, err = time.ParseDuration(s); err != nil {
		return 0, fmt.Errorf("%q is not a number of seconds", s)
	}
	switch {
	case d <= 0:
		return 0, fmt.Errorf("%q: must be at least one second", s)
	case d%time.Second != 0:
		return 0, fmt.Errorf("%q: must be whole seconds", s)
	case d > MaxOpenFor:
		return 0, fmt.Errorf("%q: at most %v", s, MaxOpenFor)
	}
	return d, nil
}

// ErrResolveIP refuses fwknop's -R: asking a web service for the external address needs a
// connection to the internet besides the SPA packet, and trusts that service with the grant.
var ErrResolveIP = errors.New("-R (ask a web service for your external address) is not supported: " +
	"sesame open sends nothing but the SPA packet; give your public address with -a ADDRESS, or use -s (weaker, see -h)")

// SourceWarning is printed whenever a request asks for the packet's source address (-s).
const SourceWarning = "sesame open: warning: the request asks for the packet's source address " +
	"(-s, allow = \"source\", ALLOW_IP source): anyone who sees the packet on its way can send a copy " +
	"first, from their own address, and be let in instead of you (yours is then refused as a replay); " +
	"without -s the packet names your address (-a, or your address on the route to the server) and a " +
	"copy opens nothing for anyone else"

// ErrUsage matches (with errors.Is) the errors of Resolve and Open that are
// about the command line: a missing or conflicting flag or a bad flag value.
var ErrUsage = errors.New("usage error")

type usageErr struct{ err error }

func (e usageErr) Error() string        { return e.err.Error() }
func (e usageErr) Unwrap() error        { return e.err }
func (e usageErr) Is(target error) bool { return target == ErrUsage }

func usagef(format string, args ...any) error { return usageErr{fmt.Errorf(format, args...)} }

package config

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Cluster is the [cluster] section: the Redis the members of a fleet share their replay cache,
// grants, bans and revocations through (docs/FLEET.md).
type Cluster struct {
	// Redis is the server's URL: redis://host:port/db, rediss:// (TLS) or unix:///path. It
	// carries no password (Password does).
	Redis string
	// User is the Redis ACL user (empty: the default user, or the URL's user part).
	User string
	// Password is read from password_file; never logged.
	Password string
	// Member names this server in the fleet (default: the host name).
	Member string
	// Groups this member belongs to besides those its doors and clients name.
	Groups []string
	// OnRedisDown is ClusterRefuse or ClusterLocal.
	OnRedisDown string
	// Timeout bounds every Redis call on the packet path.
	Timeout time.Duration
	// Prefix starts every Redis key sesame uses.
	Prefix string
	// StreamMaxLen bounds each group's stream (XADD MAXLEN ~).
	StreamMaxLen int64
	// TLSCAFile, when set, is the CA bundle a rediss:// server's certificate is checked with
	// (the system's otherwise); TLSServerName overrides the name checked.
	TLSCAFile, TLSServerName string
}

// What a member does with SPA packets while Redis cannot be reached.
const (
	ClusterRefuse = "refuse" // refuse every SPA packet (fail closed, the default)
	ClusterLocal  = "local"  // decide with the local replay cache, reconcile on reconnect
)

// Cluster defaults.
const (
	DefaultClusterTimeout = 200 * time.Millisecond
	DefaultClusterPrefix  = "sesame"
	DefaultStreamMaxLen   = 10000
	MaxClusterTimeout     = 5 * time.Second
)

var (
	atCluster = place{table: toml.Key{"cluster"}, index: -1}
	groupName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
)

type tomlCluster struct {
	Redis         field[string]   `toml:"redis"`
	User          field[string]   `toml:"user"`
	PasswordFile  field[string]   `toml:"password_file"`
	Member        field[string]   `toml:"member"`
	Groups        field[[]string] `toml:"groups"`
	OnRedisDown   field[string]   `toml:"on_redis_down"`
	Timeout       field[duration] `toml:"timeout"`
	Prefix        field[string]   `toml:"prefix"`
	StreamMaxLen  field[int]      `toml:"stream_max_len"`
	TLSCAFile     field[string]   `toml:"tls_ca_file"`
	TLSServerName field[string]   `toml:"tls_server_name"`
}

// cluster decodes [cluster] and reads its password file.
func (d *decoder) cluster(v toml.Primitive) (*Cluster, error) {
	var f tomlCluster
	if err := d.section(v, atCluster, &f); err != nil {
		return nil, err
	}
	c := &Cluster{
		Redis:         f.Redis.v,
		User:          f.User.v,
		Member:        f.Member.v,
		Groups:        f.Groups.v,
		OnRedisDown:   f.OnRedisDown.or(ClusterRefuse),
		Timeout:       time.Duration(f.Timeout.or(duration(DefaultClusterTimeout))),
		Prefix:        f.Prefix.or(DefaultClusterPrefix),
		StreamMaxLen:  int64(f.StreamMaxLen.or(DefaultStreamMaxLen)),
		TLSCAFile:     f.TLSCAFile.v,
		TLSServerName: f.TLSServerName.v,
	}
	bad := func(key, format string, args ...any) (*Cluster, error) {
		return nil, problem(atCluster, "cluster", key, format, args...)
	}
	if !f.Redis.set || c.Redis == "" {
		return bad("redis", "is required (redis://host:port, rediss://host:port or unix:///path)")
	}
	if err := checkRedisURL(c.Redis); err != nil {
		return bad("redis", "%w", err)
	}
	if c.Member == "" {
		h, err := os.Hostname()
		if err != nil {
			return bad("member", "is required: no host name (%v)", err)
		}
		c.Member = h
	}
	switch {
	case !groupName.MatchString(c.Member):
		return bad("member", "%q is not a valid name (want 1-64 letters, digits, _ . and -)", c.Member)
	case c.OnRedisDown != ClusterRefuse && c.OnRedisDown != ClusterLocal:
		return bad("on_redis_down", "%q is not valid (want %s or %s)", c.OnRedisDown, ClusterRefuse, ClusterLocal)
	case c.Timeout <= 0 || c.Timeout > MaxClusterTimeout:
		return bad("timeout", "%v is out of range (0, %v]", c.Timeout, MaxClusterTimeout)
	case !groupName.MatchString(c.Prefix):
		return bad("prefix", "%q is not valid (want 1-64 letters, digits, _ . and -)", c.Prefix)
	case c.StreamMaxLen < 100 || c.StreamMaxLen > 10_000_000:
		return bad("stream_max_len", "%d is out of range 100-10000000", c.StreamMaxLen)
	case c.TLSCAFile != "" && !strings.HasPrefix(c.Redis, "rediss://"):
		return bad("tls_ca_file", "only a rediss:// server uses TLS")
	}
	for _, g := range c.Groups {
		if !groupName.MatchString(g) {
			return bad("groups", "%q is not a valid group name (want 1-64 letters, digits, _ . and -)", g)
		}
	}
	if f.PasswordFile.set {
		sec, err := d.readSecret(f.PasswordFile.v)
		if err != nil {
			return bad("password_file", "%w", err)
		}
		if c.Password = keyText(sec); c.Password == "" || strings.ContainsAny(c.Password, "\n\r") {
			return bad("password_file", "want the password alone on one line")
		}
	}
	return c, nil
}

// checkRedisURL accepts redis://, rediss:// and unix:// URLs without a password in them.
func checkRedisURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("not a URL")
	}
	if _, has := u.User.Password(); has {
		return fmt.Errorf("a password does not belong in the URL: put it in a file of mode 0600 and name it with password_file")
	}
	switch u.Scheme {
	case "redis", "rediss":
		if u.Host == "" {
			return fmt.Errorf("%s: no host", RedactURL(s))
		}
	case "unix":
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
			return fmt.Errorf("%s: want an absolute socket path", RedactURL(s))
		}
	default:
		return fmt.Errorf("scheme %q is not redis, rediss or unix", u.Scheme)
	}
	return nil
}

// RedactURL is a Redis URL as it may be logged: without user information or query.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	if u.User != nil {
		u.User = url.User("redacted")
	}
	u.RawQuery = ""
	return u.String()
}

// checkGroups refuses a door or client group without a [cluster] section, and a bad name.
func checkGroups(cfg *Config) error {
	for i, d := range cfg.Doors {
		if d.Group == "" {
			continue
		}
		if !groupName.MatchString(d.Group) {
			return problem(atDoor(i), doorSection(i, d.Name), "group", "%q is not a valid group name (want 1-64 letters, digits, _ . and -)", d.Group)
		}
		if cfg.Cluster == nil {
			return problem(atDoor(i), doorSection(i, d.Name), "group", "a group needs a [cluster] section")
		}
	}
	if cfg.SPA == nil {
		return nil
	}
	for i, c := range cfg.SPA.Clients {
		if c.Group == "" {
			continue
		}
		sec := fmt.Sprintf("spa.client %q", c.Name)
		if !groupName.MatchString(c.Group) {
			return problem(atClient(i), sec, "group", "%q is not a valid group name (want 1-64 letters, digits, _ . and -)", c.Group)
		}
		if cfg.Cluster == nil {
			return problem(atClient(i), sec, "group", "a group needs a [cluster] section")
		}
	}
	return nil
}

// FleetGroups lists the groups a member of cfg belongs to: [cluster] groups and every group its
// doors and SPA clients name, sorted.
func FleetGroups(cfg *Config) []string {
	if cfg.Cluster == nil {
		return nil
	}
	out := slices.Clone(cfg.Cluster.Groups)
	for _, d := range cfg.Doors {
		if d.Group != "" {
			out = append(out, d.Group)
		}
	}
	if cfg.SPA != nil {
		for _, c := range cfg.SPA.Clients {
			if c.Group != "" {
				out = append(out, c.Group)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

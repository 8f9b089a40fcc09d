package spaclient

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Profile is one [profile.NAME] table of client.toml. Paths may start with
// "~/"; relative paths are relative to the file's directory.
type Profile struct {
	Server      string   `toml:"server"`
	Port        uint     `toml:"port"`
	ID          string   `toml:"id"`
	KeyFile     string   `toml:"key_file"`
	ServerKey   string   `toml:"server_key"` // a file, or an inline "sesame-pub-v1 ..." key
	Format      string   `toml:"format"`     // "sesame" (default) or "fwknop"
	HMACKeyFile string   `toml:"hmac_key_file"`
	HMACDigest  string   `toml:"hmac_digest"`
	Access      []string `toml:"access"`
	Allow       string   `toml:"allow"` // an address, or "source"
	OpenFor     OpenFor  `toml:"open_for"`
}

// OpenFor is a profile's open_for: whole seconds (30) or a duration string ("90s").
type OpenFor struct{ D time.Duration }

// UnmarshalTOML implements toml.Unmarshaler.
func (o *OpenFor) UnmarshalTOML(v any) error {
	var s string
	switch x := v.(type) {
	case int64:
		s = fmt.Sprint(x)
	case string:
		s = x
	default:
		return fmt.Errorf("open_for: want seconds or a duration string, got %T", v)
	}
	d, err := ParseOpenFor(s)
	if err != nil {
		return fmt.Errorf("open_for: %w", err)
	}
	o.D = d
	return nil
}

// clientFile is the whole client.toml.
type clientFile struct {
	Profile map[string]Profile `toml:"profile"`
}

// DefaultConfigFile returns $XDG_CONFIG_HOME/sesame/client.toml, or
// ~/.config/sesame/client.toml (on every system).
func DefaultConfigFile() (string, error) {
	if x := os.Getenv("XDG_CONFIG_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "sesame", "client.toml"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find client.toml: %w", err)
	}
	return filepath.Join(home, ".config", "sesame", "client.toml"), nil
}

// DefaultRCFile returns ~/.fwknoprc.
func DefaultRCFile() (string, error) {
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find .fwknoprc: %w", err)
	}
	return filepath.Join(home, ".fwknoprc"), nil
}

// LoadProfiles reads a client.toml. A missing file is no error: it returns
// no profiles. Unknown keys are an error (a typo must not silently drop a
// setting). Paths in the profiles are made absolute.
func LoadProfiles(path string) (map[string]Profile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read profiles: %w", err)
	}
	var f clientFile
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		keys := make([]string, len(u))
		for i, k := range u {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("%s: unknown keys %s (want [profile.NAME] tables with server, port, id, key_file, server_key, format, hmac_key_file, hmac_digest, access, allow, open_for)", path, strings.Join(keys, ", "))
	}
	dir := filepath.Dir(path)
	for name, p := range f.Profile {
		switch p.Format {
		case "", string(FormatSesame), string(FormatFwknop):
		default:
			return nil, fmt.Errorf("%s: profile %q: format %q: want \"sesame\" or \"fwknop\"", path, name, p.Format)
		}
		if p.Port > 65535 {
			return nil, fmt.Errorf("%s: profile %q: port %d out of range", path, name, p.Port)
		}
		p.KeyFile = expandPath(dir, p.KeyFile)
		p.HMACKeyFile = expandPath(dir, p.HMACKeyFile)
		if p.ServerKey != "" && !isInlinePub(p.ServerKey) {
			p.ServerKey = expandPath(dir, p.ServerKey)
		}
		f.Profile[name] = p
	}
	return f.Profile, nil
}

// expandPath resolves "~/" against the home directory and relative paths
// against dir.
func expandPath(dir, p string) string {
	if p == "" {
		return ""
	}
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			p = filepath.Join(home, p[1:])
		}
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	return p
}

// Package migrate turns a knockd.conf or an fwknopd configuration into the equivalent native sesame.toml, with comments.
package migrate

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/netport"
)

// ErrNotExpressible marks a setting of a legacy configuration that the native configuration
// cannot express: migrating it would change what the server does, so migrate refuses.
var ErrNotExpressible = errors.New("the native configuration cannot express this")

// Result is a migrated configuration.
type Result struct {
	// TOML is the native configuration, with comments. It holds no key.
	TOML []byte
	// Keys are the key files the configuration names (fwknop clients); the caller writes them,
	// mode 0600, before it loads TOML.
	Keys []KeyFile
	// Legacy is the configuration as the legacy loader reads it, for Check.
	Legacy *config.Config
	// doorNames are the native names of Legacy's doors, in order.
	doorNames []string
}

// KeyFile is a key file to write.
type KeyFile struct {
	Path string
	// Data is the file's contents: secret.
	Data []byte
	// About says which client and stanza it is for (no secret), for messages.
	About string
}

// String describes the file without its contents.
func (k KeyFile) String() string { return k.Path + " (" + k.About + ")" }

// GoString is String, so %#v does not reveal the key either.
func (k KeyFile) GoString() string { return k.String() }

// notExpressible is the error about a setting at file:line that has no native equivalent.
func notExpressible(file string, line int, section, format string, args ...any) error {
	where := file
	if line > 0 {
		where = fmt.Sprintf("%s:%d", file, line)
	}
	if section != "" {
		where += ": " + section
	}
	return fmt.Errorf("migrate: %s: %s: %w", where, fmt.Sprintf(format, args...), ErrNotExpressible)
}

// Check compares the configuration the native text loads into with the legacy one, in every
// field the server acts on (not file names, messages or key file names), and says what differs.
func (r *Result) Check(native *config.Config) error {
	a, b := normalize(r.Legacy, r.doorNames), normalize(native, nil)
	if d := diff("", reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()); d != "" {
		return fmt.Errorf("migrate: the migrated configuration differs from the legacy one in %s (a bug in sesame migrate: please report it)", d)
	}
	return nil
}

// normalize copies c without what may differ between the formats without changing behaviour.
func normalize(c *config.Config, doorNames []string) *config.Config {
	n := *c
	n.Source = ""
	n.Doors = slices.Clone(c.Doors)
	for i := range n.Doors {
		if i < len(doorNames) {
			n.Doors[i].Name = doorNames[i]
		}
		if len(n.Doors[i].Open) == 0 {
			n.Doors[i].OpenFor = 0 // opens nothing, for no time
		}
	}
	if c.SPA != nil {
		s := *c.SPA
		s.Warnings = nil
		s.Clients = slices.Clone(c.SPA.Clients)
		for i := range s.Clients {
			cl := &s.Clients[i]
			cl.KeyFile = ""
			cl.Restrict = effectiveRestrict(cl)
			if !cl.AccessExpire.IsZero() {
				cl.AccessExpire = cl.AccessExpire.UTC()
			}
		}
		n.SPA = &s
	}
	return &n
}

// effectiveRestrict is the part of a client's restricted ports that can refuse a request: with
// an open list, only the restricted ports it lists.
func effectiveRestrict(c *config.SPAClient) []netport.Port {
	if c.AnyPort {
		return c.Restrict
	}
	var out []netport.Port
	for _, p := range c.Restrict {
		if slices.Contains(c.Open, p) {
			out = append(out, p)
		}
	}
	return out
}

var timeType = reflect.TypeFor[time.Time]()

// diff names the first field in which a and b differ ("" if none).
func diff(path string, a, b reflect.Value) string {
	switch {
	case a.Kind() == reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				return orTop(path)
			}
			return ""
		}
		return diff(path, a.Elem(), b.Elem())
	case a.Kind() == reflect.Struct && a.Type() != timeType && exported(a.Type()):
		for i := range a.NumField() {
			name := a.Type().Field(i).Name
			p := name
			if path != "" {
				p = path + "." + name
			}
			if a.Type().Field(i).Anonymous {
				p = path
			}
			if d := diff(p, a.Field(i), b.Field(i)); d != "" {
				return d
			}
		}
		return ""
	case a.Kind() == reflect.Slice && a.Type().Elem().Kind() == reflect.Struct:
		if a.Len() != b.Len() {
			return fmt.Sprintf("%s (%d entries, not %d)", orTop(path), b.Len(), a.Len())
		}
		for i := range a.Len() {
			if d := diff(fmt.Sprintf("%s[%d]", path, i), a.Index(i), b.Index(i)); d != "" {
				return d
			}
		}
		return ""
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		return orTop(path)
	}
	return ""
}

func orTop(path string) string {
	if path == "" {
		return "the whole configuration"
	}
	return path
}

// exported reports whether every field of struct type t is exported.
func exported(t reflect.Type) bool {
	for i := range t.NumField() {
		if !t.Field(i).IsExported() {
			return false
		}
	}
	return true
}

// writer builds a TOML document.
type writer struct {
	b   strings.Builder
	err error
}

// comment writes one comment line per line of the formatted text.
func (w *writer) comment(format string, args ...any) {
	for l := range strings.SplitSeq(fmt.Sprintf(format, args...), "\n") {
		w.b.WriteString(strings.TrimRight("# "+commentText(l), " ") + "\n")
	}
}

func (w *writer) line(s string) { w.b.WriteString(s + "\n") }

// str writes key = "value".
func (w *writer) str(key, value string) {
	q, err := quote(value)
	if err != nil && w.err == nil {
		w.err = fmt.Errorf("%s: %w: %w", key, err, ErrNotExpressible)
	}
	w.line(key + " = " + q)
}

// list writes key = ["a", "b"].
func (w *writer) list(key string, values []string) {
	qs := make([]string, len(values))
	for i, v := range values {
		q, err := quote(v)
		if err != nil && w.err == nil {
			w.err = fmt.Errorf("%s: %w: %w", key, err, ErrNotExpressible)
		}
		qs[i] = q
	}
	w.line(key + " = [" + strings.Join(qs, ", ") + "]")
}

func (w *writer) duration(key string, d time.Duration) { w.str(key, d.String()) }

func (w *writer) bool(key string, v bool) { w.line(fmt.Sprintf("%s = %t", key, v)) }

// quote returns s as a TOML basic string.
func quote(s string) (string, error) {
	if !utf8.ValidString(s) {
		return "", errors.New("the value is not valid UTF-8, which TOML requires")
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String(), nil
}

// commentText makes s safe in a TOML comment: valid UTF-8 without control characters.
func commentText(s string) string {
	s = strings.ToValidUTF8(s, "?")
	return strings.Map(func(r rune) rune {
		if r != '\t' && (r < 0x20 || r == 0x7f) {
			return '?'
		}
		return r
	}, s)
}

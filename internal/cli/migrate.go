package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/firewall"
	"github.com/sesame-knock/sesame/internal/migrate"
)

const migrateUsage = `sesame migrate knockd FILE [--firewall KIND] [-o OUT] [--force]
sesame migrate fwknop DIR [--keys-dir DIR] [--firewall KIND] [-o OUT] [--force]

Turn a knockd.conf, or an fwknopd configuration directory (fwknopd.conf and
access.conf), into the equivalent native configuration: TOML with comments that
say where each door and client came from and what changes. It goes to standard
output, or with -o to OUT (mode 0600).

Every access.conf stanza becomes an fwknop-format [[spa.client]], so the fwknop
client keeps working; its keys are written to files in the keys directory (mode
0600; the directory is created 0700), which the configuration names. Their paths
are printed to standard error; the keys themselves are never printed.

What the native configuration cannot express (one-time sequences, a stanza
without OPEN_PORTS, ...) is an error naming the file and line: migrate never
writes a configuration that would behave differently. The result is loaded and
compared with the legacy configuration before it is written.

--firewall gives the backend as 'sesame server --knockd-conf/--fwknop-conf
--firewall KIND' would; a knockd.conf whose doors use sesame's Open extension
needs it there, and so here.

Existing files (OUT, key files) are never overwritten without --force.

Examples:
  sesame migrate knockd /etc/knockd.conf -o /etc/sesame/sesame.toml
  sesame migrate fwknop /etc/fwknop -o /etc/sesame/sesame.toml
  sesame migrate fwknop /etc/fwknop --keys-dir /etc/sesame/clients > sesame.toml
  sesame server -c /etc/sesame/sesame.toml --check
`

// defaultKeysDir is where migrate writes fwknop clients' keys.
const defaultKeysDir = "/etc/sesame/clients"

func migrateCommand() *command {
	c := &command{summary: "turn a knockd.conf or fwknopd configuration into sesame.toml", usage: migrateUsage}
	c.run = func(_ context.Context, args []string, stdout, stderr io.Writer) error {
		fs := newFlagSet("migrate", c, stdout)
		out := fs.String("o", "", "write the configuration to `OUT` (mode 0600) instead of standard output")
		fs.StringVar(out, "output", "", "write the configuration to `OUT`")
		keysDir := fs.String("keys-dir", defaultKeysDir, "fwknop: write the clients' key files to `DIR`")
		force := fs.Bool("force", false, "overwrite existing files")
		fw := fs.String("firewall", "", "the `KIND` sesame server --knockd-conf/--fwknop-conf would be given: "+firewall.KindList()+" (needed for knockd doors with Open)")
		// Flags may come before, between or after the arguments.
		var pos []string
		for rest := args; ; {
			if err := parseFlags(fs, rest); err != nil {
				return err
			}
			if rest = fs.Args(); len(rest) == 0 {
				break
			}
			pos, rest = append(pos, rest[0]), rest[1:]
		}
		if len(pos) != 2 {
			return usagef("want a format and a path: sesame migrate knockd FILE, or sesame migrate fwknop DIR")
		}
		err := func() error {
			m := migration{out: *out, force: *force, stdout: stdout, stderr: stderr, ov: config.Overrides{Firewall: firewall.Kind(*fw)}}
			if *fw != "" && !slices.Contains(firewall.Kinds(), m.ov.Firewall) {
				return usagef("--firewall %q: want %s", *fw, firewall.KindList())
			}
			switch pos[0] {
			case "knockd":
				return m.knockd(pos[1])
			case "fwknop":
				return m.fwknop(pos[1], *keysDir)
			default:
				return usagef("unknown format %q (want knockd or fwknop)", pos[0])
			}
		}()
		return trimOp(err)
	}
	return c
}

// trimOp drops the "migrate: " of the package's errors: Main says "sesame migrate: " already.
func trimOp(err error) error {
	if err == nil || errors.As(err, new(usageError)) {
		return err
	}
	if s, ok := strings.CutPrefix(err.Error(), "migrate: "); ok {
		return errors.New(s)
	}
	return err
}

type migration struct {
	out            string
	force          bool
	stdout, stderr io.Writer
	ov             config.Overrides
}

func (m migration) knockd(path string) error {
	data, _, err := config.ReadConfigFile(path) // as the server reads it
	if err != nil {
		return err
	}
	res, err := migrate.Knockd(path, data, m.ov)
	if err != nil {
		return err
	}
	return m.finish(res)
}

func (m migration) fwknop(dir, keysDir string) error {
	if keysDir == "" {
		return usagef("--keys-dir must not be empty")
	}
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory (want the directory holding fwknopd.conf and access.conf)", dir)
	}
	srv, _, err := config.ReadConfigFile(filepath.Join(dir, "fwknopd.conf"))
	if errors.Is(err, os.ErrNotExist) {
		srv, err = nil, nil
	}
	if err != nil {
		return err
	}
	acc, _, err := config.ReadConfigFile(filepath.Join(dir, "access.conf"))
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(keysDir)
	if err != nil {
		return fmt.Errorf("keys directory: %w", err)
	}
	// A trial run with the keys in a private temporary directory: a result that would not load
	// leaves no key file behind.
	tmp, err := os.MkdirTemp("", "sesame-migrate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	trial, err := migrate.Fwknop(dir, srv, acc, tmp, m.ov)
	if err != nil {
		return err
	}
	for _, k := range trial.Keys {
		if err := writeKeyFile(k.Path, k.Data, 0o600, false); err != nil {
			return err
		}
	}
	if err := verify(trial, "migrated configuration"); err != nil {
		return err
	}
	os.RemoveAll(tmp)
	res, err := migrate.Fwknop(dir, srv, acc, abs, m.ov)
	if err != nil {
		return err
	}
	if len(res.Keys) > 0 {
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return fmt.Errorf("keys directory: %w", err)
		}
	}
	return m.finish(res)
}

// verify loads res's text, with its key files in place, and compares it with the legacy
// configuration.
func verify(res *migrate.Result, name string) error {
	native, err := config.Parse(name, res.TOML)
	if err != nil {
		return fmt.Errorf("migrate: the migrated configuration does not load (a bug in sesame migrate: please report it): %w", err)
	}
	return res.Check(native)
}

// finish writes the key files, checks that the configuration loads into the legacy one, and
// writes it.
func (m migration) finish(res *migrate.Result) error {
	if !m.force {
		paths := make([]string, 0, len(res.Keys)+1)
		for _, k := range res.Keys {
			paths = append(paths, k.Path)
		}
		if m.out != "" {
			paths = append(paths, m.out)
		}
		if err := (keygen{}).check(paths...); err != nil {
			return err
		}
	}
	for _, k := range res.Keys {
		if err := writeKeyFile(k.Path, k.Data, 0o600, m.force); err != nil {
			return err
		}
		fmt.Fprintf(m.stderr, "wrote %s\n", k)
	}
	name := m.out
	if name == "" {
		name = "migrated configuration"
	}
	if err := verify(res, name); err != nil {
		return err
	}
	if m.out == "" {
		_, err := m.stdout.Write(res.TOML)
		return err
	}
	if err := writeKeyFile(m.out, res.TOML, 0o600, m.force); err != nil {
		return err
	}
	fmt.Fprintf(m.stderr, "wrote %s; check it with: sesame server -c %s --check\n", m.out, m.out)
	return nil
}

package cli

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sesame-knock/sesame/internal/spa"
)

const keygenUsage = `sesame keygen -o FILE [--id NAME] [--force]
sesame keygen --pair [--server] -o FILE [--id NAME] [--force]
sesame keygen --fwknop [-o FILE] [--force]

Make new keys for Single Packet Authorization (sesame open / sesame server).

  (default)        a shared key, written to FILE with mode 0600. The client and
                   the server both keep a copy; prints the server's config lines.
  --pair           a client key pair: FILE (private, 0600, stays on the client)
                   and FILE.pub (public, goes into the server's config). A stolen
                   server config cannot forge this client's packets.
  --pair --server  the server's own key pair (the same format): FILE for the
                   server's server_key_file, FILE.pub for the clients.
  --fwknop         fwknop keys (32-byte Rijndael key, 64-byte HMAC-SHA256 key):
                   prints the KEY_BASE64 and HMAC_KEY_BASE64 lines for access.conf
                   and ~/.fwknoprc, or with -o writes them to FILE (0600), which
                   'sesame open --fwknop --key-file FILE' reads.

Existing files are never overwritten without --force.

Examples:
  sesame keygen -o alice.key
  sesame keygen --pair -o alice
  sesame keygen --pair --server -o /etc/sesame/server
  sesame keygen --fwknop
  sesame keygen --fwknop -o ~/.config/sesame/home.fwknop
`

func keygenCommand() *command {
	c := &command{summary: "make keys for sesame open / sesame server (also fwknop's)", usage: keygenUsage}
	c.run = func(_ context.Context, args []string, stdout, _ io.Writer) error {
		fs := newFlagSet("keygen", c, stdout)
		out := fs.String("o", "", "write the key to `FILE`")
		fs.StringVar(out, "output", "", "write the key to `FILE`")
		pair := fs.Bool("pair", false, "make a key pair (FILE and FILE.pub)")
		server := fs.Bool("server", false, "with --pair: the server's key pair")
		fw := fs.Bool("fwknop", false, "make fwknop keys (KEY_BASE64, HMAC_KEY_BASE64)")
		id := fs.String("id", "", "client `NAME` for the printed config (default: FILE's base name)")
		force := fs.Bool("force", false, "overwrite existing files")
		if err := parseFlags(fs, args); err != nil {
			return err
		}
		if fs.NArg() > 0 {
			return usagef("unexpected argument %q (the file goes after -o)", fs.Arg(0))
		}
		k := keygen{out: *out, id: *id, force: *force, w: stdout}
		switch {
		case *fw && (*pair || *server):
			return usagef("--fwknop makes fwknop keys; it does not go with --pair or --server")
		case *server && !*pair:
			return usagef("--server goes with --pair (sesame keygen --pair --server -o FILE)")
		case *fw:
			return k.fwknop()
		case *out == "":
			return usagef("-o FILE is required (keys are written to files, never to the terminal)")
		case *pair:
			return k.pair(*server)
		default:
			return k.shared()
		}
	}
	return c
}

type keygen struct {
	out, id string
	force   bool
	w       io.Writer
}

// name returns the client name for printed config lines, checked against
// the rules for client identities.
func (k keygen) name() (string, error) {
	n := k.id
	if n == "" {
		n = strings.TrimSuffix(filepath.Base(k.out), filepath.Ext(k.out))
	}
	var probe spa.SharedKey
	if _, err := spa.NewSharedClient(n, probe); err != nil {
		if k.id == "" {
			return "", usagef("cannot use the file name %q as a client name: give --id NAME", n)
		}
		return "", usagef("--id %q: %v", n, errors.Unwrap(err))
	}
	return n, nil
}

func (k keygen) shared() error {
	name, err := k.name()
	if err != nil {
		return err
	}
	key, err := spa.GenerateSharedKey(rand.Reader)
	if err != nil {
		return err
	}
	text, _ := key.MarshalText()
	if err := k.check(k.out); err != nil {
		return err
	}
	if err := writeKeyFile(k.out, append(text, '\n'), 0o600, k.force); err != nil {
		return err
	}
	base := filepath.Base(k.out)
	fmt.Fprintf(k.w, `Wrote %s: a shared key (mode 0600). The client and the server each keep a copy.

Server config (copy %s to the server, mode 0600, owned by root):

  [[spa.client]]
  name = %q
  key_file = "/etc/sesame/clients/%s"
  open = ["tcp/22"]
  require_address = true   # refuse "use my source address" (-s) requests

Client:

  sesame open HOST -A tcp/22 --id %s --key-file %s
`, k.out, base, name, base, name, k.out)
	return nil
}

func (k keygen) pair(server bool) error {
	if strings.HasSuffix(k.out, ".pub") {
		return usagef("-o %s: give the private key's name; the public key goes to FILE.pub", k.out)
	}
	name := ""
	if !server {
		var err error
		if name, err = k.name(); err != nil {
			return err
		}
	}
	pub := k.out + ".pub"
	if err := k.check(k.out, pub); err != nil {
		return err
	}
	kp, err := spa.GeneratePair(rand.Reader)
	if err != nil {
		return err
	}
	priv, _ := kp.MarshalText()
	pubText, _ := kp.Public().MarshalText()
	if err := writeKeyFile(k.out, append(priv, '\n'), 0o600, k.force); err != nil {
		return err
	}
	if err := writeKeyFile(pub, append(pubText, '\n'), 0o644, k.force); err != nil {
		return err
	}
	if server {
		abs, err := filepath.Abs(k.out)
		if err != nil {
			abs = k.out
		}
		fmt.Fprintf(k.w, `Wrote %s (the server's private key, mode 0600) and %s (its public key).

Server config, in [spa]:

  server_key_file = %q

Give %s to every client with a key pair:

  sesame open HOST -A tcp/22 --id NAME --key-file NAME --server-key %s
`, k.out, pub, abs, filepath.Base(pub), filepath.Base(pub))
		return nil
	}
	fmt.Fprintf(k.w, `Wrote %s (private key, mode 0600: it stays on this machine) and %s (public key).

Server config (only the public key goes to the server; the server needs its own
key pair too: sesame keygen --pair --server -o /etc/sesame/server):

  [[spa.client]]
  name = %q
  public_key = %q
  open = ["tcp/22"]
  require_address = true   # refuse "use my source address" (-s) requests

Client (server.pub is the server's public key):

  sesame open HOST -A tcp/22 --id %s --key-file %s --server-key server.pub
`, k.out, pub, name, string(pubText), name, k.out)
	return nil
}

func (k keygen) fwknop() error {
	key, hmacKey := make([]byte, 32), make([]byte, 64)
	if _, err := io.ReadFull(rand.Reader, key); err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	if _, err := io.ReadFull(rand.Reader, hmacKey); err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	lines := fmt.Sprintf("KEY_BASE64          %s\nHMAC_KEY_BASE64     %s\n",
		base64.StdEncoding.EncodeToString(key), base64.StdEncoding.EncodeToString(hmacKey))
	if k.out == "" {
		fmt.Fprintf(k.w, `# Server: access.conf, in the client's stanza (after its SOURCE line):
%s
# Client: ~/.fwknoprc, in the [NAME] stanza (the file must be mode 0600):
%sUSE_HMAC            Y
`, lines, lines)
		return nil
	}
	if err := k.check(k.out); err != nil {
		return err
	}
	data := "# fwknop keys (HMAC digest sha256, encryption mode cbc) from sesame keygen --fwknop\n" + lines
	if err := writeKeyFile(k.out, []byte(data), 0o600, k.force); err != nil {
		return err
	}
	fmt.Fprintf(k.w, `Wrote %s (fwknop keys, mode 0600).

Server: copy its KEY_BASE64 and HMAC_KEY_BASE64 lines into the client's stanza of
access.conf (fwknopd, or sesame server --fwknop-conf).

Client:

  sesame open HOST -A tcp/22 --fwknop --key-file %s
`, k.out, k.out)
	return nil
}

// check refuses to go on when a file exists, unless --force.
func (k keygen) check(paths ...string) error {
	if k.force {
		return nil
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s already exists; use --force to overwrite it", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("check %s: %w", p, err)
		}
	}
	return nil
}

// writeKeyFile writes data to path with mode. Without force it never
// replaces an existing file; with force it writes a temporary file in the
// same directory and renames it over path, so the result has mode whatever
// the old file's mode was.
func writeKeyFile(path string, data []byte, mode os.FileMode, force bool) error {
	if !force {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists; use --force to overwrite it", path)
		}
		if err != nil {
			return fmt.Errorf("write key: %w", err)
		}
		return finishKeyFile(f, path, data, mode)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if err := finishKeyFile(f, f.Name(), data, mode); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write key: %w", err)
	}
	return nil
}

func finishKeyFile(f *os.File, path string, data []byte, mode os.FileMode) error {
	_, err := f.Write(data)
	if err == nil {
		err = f.Chmod(mode) // the umask may have narrowed a 0644 public key; never widens a 0600
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write key %s: %w", path, err)
	}
	return nil
}

package knockclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/rotate"
	"github.com/sesame-knock/sesame/internal/spa"
)

// rotatingFlags are the long options of a rotating door's knock; each takes a value.
var rotatingFlags = []string{"door", "secret-file", "rotate", "rotate-ports", "rotate-length", "rotate-uses", "state-file"}

// Rotating is a knock on a rotating door (docs/PROTOCOL.md, "Rotating knock sequences"): the
// parameters must be the server's door's; the secret is read from SecretFile (never a flag).
type Rotating struct {
	rotate.Params
	SecretFile string
	// StateFile remembers the last window and counter used, so that a second knock in one
	// window takes the next counter; "" means DefaultStateFile.
	StateFile string
}

// parse fills r from the values of its options, with the server's defaults for those not given.
func (r *Rotating) parse(v map[string]string, proto netport.Proto) error {
	*r = Rotating{SecretFile: v["secret-file"], StateFile: v["state-file"], Params: rotate.Params{
		Door: v["door"], Period: 30 * time.Second, Lo: rotate.DefaultLo, Hi: rotate.DefaultHi,
		Length: rotate.DefaultLen, Uses: rotate.DefaultUses, Proto: proto,
	}}
	switch {
	case r.Door == "":
		return errors.New("knock: a rotating knock needs --door NAME")
	case r.SecretFile == "":
		return errors.New("knock: --door needs --secret-file FILE (the door's key, from 'sesame keygen')")
	}
	if s, ok := v["rotate"]; ok {
		d, err := time.ParseDuration(s)
		if err != nil {
			if n, nerr := strconv.Atoi(s); nerr == nil {
				d = time.Duration(n) * time.Second
			} else {
				return fmt.Errorf("knock: --rotate %q is not a duration", s)
			}
		}
		r.Period = d
	}
	if s, ok := v["rotate-ports"]; ok {
		lo, hi, found := strings.Cut(s, "-")
		l, err1 := strconv.ParseUint(lo, 10, 16)
		h, err2 := strconv.ParseUint(hi, 10, 16)
		if !found || err1 != nil || err2 != nil {
			return fmt.Errorf("knock: --rotate-ports %q: want LO-HI, as in 10000-60000", s)
		}
		r.Lo, r.Hi = uint16(l), uint16(h)
	}
	for name, dst := range map[string]*int{"rotate-length": &r.Length, "rotate-uses": &r.Uses} {
		if s, ok := v[name]; ok {
			n, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("knock: --%s %q is not a number", name, s)
			}
			*dst = n
		}
	}
	if err := r.Params.Check(); err != nil {
		return fmt.Errorf("knock: %w", err)
	}
	return nil
}

// DefaultStateFile is where the counter of host's door is kept: the user's cache directory,
// sesame/rotate/HOST_DOOR.
func DefaultStateFile(host, door string) (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("knock: no state file: %w (give --state-file)", err)
	}
	clean := strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' {
			return c
		}
		return '_'
	}, host+"_"+door)
	return filepath.Join(dir, "sesame", "rotate", clean), nil
}

// Next picks the window and counter of the next knock at now, given the last ones used
// (lastWindow, lastCounter; lastWindow < 0: none): counter 0 of the current window, or the one
// after the last used in it. When the window's Uses counters are spent it returns counter 0 of
// the next window and how long to wait for it to begin.
func Next(p rotate.Params, now time.Time, lastWindow int64, lastCounter int) (w int64, c int, wait time.Duration) {
	w = p.Window(now)
	if lastWindow == w {
		c = lastCounter + 1
	}
	if lastWindow > w { // the clock went back: never reuse a counter of a newer window
		w, c = lastWindow, lastCounter+1
	}
	if c >= p.Uses {
		w, c = w+1, 0
	}
	if start := p.Start(w); start.After(now) {
		wait = start.Sub(now)
	}
	return w, c, wait
}

// readState returns the last window and counter recorded in path (-1, 0 when there is none).
func readState(path string) (int64, int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return -1, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("knock: state file: %w", err)
	}
	f := strings.Fields(string(data))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("knock: state file %s: want \"WINDOW COUNTER\"", path)
	}
	w, err1 := strconv.ParseInt(f[0], 10, 64)
	c, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("knock: state file %s: want \"WINDOW COUNTER\"", path)
	}
	return w, c, nil
}

// writeState records window w and counter c in path (mode 0600, written whole).
func writeState(path string, w int64, c int) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("knock: state file: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("%d %d\n", w, c)), 0o600); err != nil {
		return fmt.Errorf("knock: state file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("knock: state file: %w", err)
	}
	return nil
}

// SendRotating knocks the next sequence of the rotating door opts.Rotate at now(): it picks the
// counter from the state file (Next), records it there before the first hit, waits for the
// next window when this one's sequences are spent, derives the sequence from key and sends it
// as Send does. With opts.Verbose it says which window and counter it used (never the key).
func SendRotating(ctx context.Context, opts Options, key spa.SharedKey, now func() time.Time, log func(string)) error {
	r := opts.Rotate
	if r == nil {
		return errors.New("knock: not a rotating knock")
	}
	state := r.StateFile
	if state == "" {
		var err error
		if state, err = DefaultStateFile(opts.Host, r.Door); err != nil {
			return err
		}
	}
	lw, lc, err := readState(state)
	if err != nil {
		return err
	}
	w, c, wait := Next(r.Params, now(), lw, lc)
	if wait > r.Period {
		return fmt.Errorf("knock: state file %s records window %d, ahead of this clock: check the clock, or remove the file", state, lw)
	}
	if wait > 0 {
		if log != nil {
			log(fmt.Sprintf("the %d sequences of this window are used: waiting %v for the next window", r.Uses, wait.Round(time.Millisecond)))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("knock: %w", ctx.Err())
		case <-t.C:
		}
	}
	seq, err := rotate.Sequence(key[:], r.Params, w, uint32(c))
	if err != nil {
		return fmt.Errorf("knock: %w", err)
	}
	if err := writeState(state, w, c); err != nil {
		return err
	}
	if opts.Verbose && log != nil {
		log(fmt.Sprintf("door %s: window %d, counter %d", r.Door, w, c))
	}
	opts.Hits = seq
	return Send(ctx, opts, log)
}

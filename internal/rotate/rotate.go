// Package rotate derives the knock sequences of rotating doors from a secret and the time
// window (docs/PROTOCOL.md, "Rotating knock sequences").
package rotate

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
)

// Label starts every HMAC input, so a rotation secret never authenticates anything else.
const Label = "sesame-rotate-v1"

// Limits of the parameters (docs/PROTOCOL.md, "Rotating knock sequences").
const (
	MinPeriod    = 2 * time.Second
	MaxPeriod    = 24 * time.Hour
	MinRange     = 256 // ports in the range
	MaxLength    = 32  // knocks in a sequence
	MaxUses      = 16  // sequences per window
	maxBlocks    = 256 // HMAC blocks drawn before giving up (never reached with MinRange)
	DefaultLo    = 10000
	DefaultHi    = 60000
	DefaultLen   = 4
	DefaultUses  = 3
	maxDoorBytes = 255
)

// Params are what both ends of a rotating door agree on, besides the secret.
type Params struct {
	Door   string
	Period time.Duration // whole seconds, MinPeriod-MaxPeriod
	Lo, Hi uint16        // the inclusive port range
	Length int           // knocks per sequence
	Uses   int           // sequences per window (counters 0 to Uses-1)
	Proto  netport.Proto // TCP or UDP
}

// Check reports what is wrong with p, if anything.
func (p Params) Check() error {
	switch {
	case p.Door == "" || len(p.Door) > maxDoorBytes:
		return fmt.Errorf("rotate: door name must be 1-%d bytes", maxDoorBytes)
	case p.Period < MinPeriod || p.Period > MaxPeriod || p.Period%time.Second != 0:
		return fmt.Errorf("rotate: period %v must be whole seconds in %v-%v", p.Period, MinPeriod, MaxPeriod)
	case p.Lo == 0 || p.Hi < p.Lo || int(p.Hi)-int(p.Lo)+1 < MinRange:
		return fmt.Errorf("rotate: port range %d-%d must be within 1-65535 and hold at least %d ports", p.Lo, p.Hi, MinRange)
	case p.Length < 1 || p.Length > MaxLength:
		return fmt.Errorf("rotate: length %d is out of range 1-%d", p.Length, MaxLength)
	case p.Uses < 1 || p.Uses > MaxUses:
		return fmt.Errorf("rotate: uses %d is out of range 1-%d", p.Uses, MaxUses)
	case p.Proto != netport.TCP && p.Proto != netport.UDP:
		return fmt.Errorf("rotate: protocol %v is not tcp or udp", p.Proto)
	}
	return nil
}

// Window returns the number of the window t falls in: floor(Unix seconds / period seconds).
func (p Params) Window(t time.Time) int64 {
	sec := int64(p.Period / time.Second)
	u := t.Unix()
	w := u / sec
	if u%sec < 0 {
		w--
	}
	return w
}

// Start returns when window w begins.
func (p Params) Start(w int64) time.Time {
	return time.Unix(w*int64(p.Period/time.Second), 0)
}

// ErrExhausted is returned when the HMAC stream ran out before the sequence was drawn; with a
// range of at least MinRange ports it does not happen.
var ErrExhausted = errors.New("rotate: no sequence within the draw limit")

// Sequence derives the knock sequence of counter c in window w: Length distinct ports of the
// range, drawn without bias from HMAC-SHA256(secret, Label || 0x00 || len(door) || door ||
// uint64be(w) || uint32be(c) || uint32be(block)) for block = 0, 1, ... (docs/PROTOCOL.md,
// "Rotating knock sequences", R.3).
func Sequence(secret []byte, p Params, w int64, c uint32) ([]netport.Port, error) {
	if err := p.Check(); err != nil {
		return nil, err
	}
	if len(secret) == 0 {
		return nil, errors.New("rotate: empty secret")
	}
	msg := make([]byte, 0, len(Label)+2+len(p.Door)+16)
	msg = append(msg, Label...)
	msg = append(msg, 0, byte(len(p.Door)))
	msg = append(msg, p.Door...)
	msg = binary.BigEndian.AppendUint64(msg, uint64(w))
	msg = binary.BigEndian.AppendUint32(msg, c)
	n := uint64(p.Hi) - uint64(p.Lo) + 1
	limit := (1 << 32) - (1<<32)%n // words at or above limit would bias the draw
	out := make([]netport.Port, 0, p.Length)
	mac := hmac.New(sha256.New, secret)
	var block [4]byte
	var sum []byte
	for j := uint32(0); j < maxBlocks; j++ {
		mac.Reset()
		mac.Write(msg)
		binary.BigEndian.PutUint32(block[:], j)
		mac.Write(block[:])
		sum = mac.Sum(sum[:0])
		for i := 0; i+4 <= len(sum); i += 4 {
			v := uint64(binary.BigEndian.Uint32(sum[i:]))
			if v >= limit {
				continue
			}
			port := netport.Port{Proto: p.Proto, Num: uint16(uint64(p.Lo) + v%n)}
			if slices.Contains(out, port) {
				continue
			}
			out = append(out, port)
			if len(out) == p.Length {
				return out, nil
			}
		}
	}
	return nil, ErrExhausted
}

package spa

import (
	"errors"
	"fmt"
)

// ErrNotSPA says a datagram is not in sesame's format: it does not start with Magic.
var ErrNotSPA = errors.New("not a sesame packet")

// Header is the clear start of a packet: its credential kind and key hint, unauthenticated.
type Header struct {
	Kind Kind
	Hint KeyHint
}

// Peek reads a datagram's clear header without authenticating anything, so that a caller can
// tell whose packet it claims to be before Open. It returns ErrNotSPA when the datagram does not
// start with Magic (it may be another format's), and ErrTooShort, wrapped, when it does but is
// cut before the end of the key hint.
func Peek(pkt []byte) (Header, error) {
	if len(pkt) < len(Magic) || string(pkt[:len(Magic)]) != Magic {
		return Header{}, ErrNotSPA
	}
	if len(pkt) < HeaderLen {
		return Header{}, fmt.Errorf("spa: peek: %w: %d bytes", ErrTooShort, len(pkt))
	}
	return Header{Kind: Kind(pkt[len(Magic)]), Hint: KeyHint(pkt[len(Magic)+1 : HeaderLen])}, nil
}

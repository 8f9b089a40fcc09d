package fwknop

import (
	"bytes"
	"errors"
	"testing"
)

func TestPrecheck(t *testing.T) {
	ok := bytes.Repeat([]byte("Ab+/9"), 40)
	tests := []struct {
		name string
		wire []byte
		err  error
	}{
		{"base64 text", ok, nil},
		{"short", ok[:MinPacketLen-1], ErrTooShort},
		{"long", bytes.Repeat([]byte("A"), MaxPacketLen+1), ErrTooLong},
		{"salted prefix", append([]byte("U2FsdGVkX1"), ok...), ErrMalformed},
		{"padding", append(bytes.Clone(ok), '='), ErrMalformed},
		{"binary", append(bytes.Clone(ok), 0), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := Precheck(tc.wire)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("Precheck = %v, want %v", err, tc.err)
			}
			// Decode makes the same checks first, whatever the keys.
			if _, derr := Decode(tc.wire, Keys{Key: []byte("k")}); tc.err != nil && !errors.Is(derr, tc.err) {
				t.Fatalf("Decode = %v, want %v", derr, tc.err)
			}
		})
	}
}

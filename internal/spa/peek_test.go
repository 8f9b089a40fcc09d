package spa

import (
	"errors"
	"testing"
)

func TestPeek(t *testing.T) {
	full := append([]byte(Magic), 2)
	for i := range 16 {
		full = append(full, byte(i+1))
	}
	tests := []struct {
		name string
		pkt  []byte
		err  error
		kind Kind
	}{
		{"empty", nil, ErrNotSPA, 0},
		{"short of the magic", []byte("SSM"), ErrNotSPA, 0},
		{"other format", []byte("U2FsdGVkX1aaaaaaaaaaaaaaaaaaaa"), ErrNotSPA, 0},
		{"cut in the hint", full[:HeaderLen-1], ErrTooShort, 0},
		{"header", full, nil, KindPair},
		{"header and more", append(full, 9, 9, 9), nil, KindPair},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := Peek(tc.pkt)
			if !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.err)
			}
			if err == nil && (h.Kind != tc.kind || h.Hint[0] != 1 || h.Hint[15] != 16) {
				t.Fatalf("header %+v", h)
			}
		})
	}
}

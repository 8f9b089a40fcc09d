package config

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/netport"
)

func TestKnockPayloads(t *testing.T) {
	door := func(name, seq string) string {
		return "[[door]]\nname = \"" + name + "\"\nsequence = " + seq + "\nopen = [\"tcp/22\"]\n"
	}
	cfg, err := Parse(filepath.Join(t.TempDir(), "s.toml"), []byte(
		door("a", `["7000/tcp", { port = "8000/udp", payload = "hex:cafe01" }, { port = "icmp", payload = "hex:00ff" }]`)+
			door("b", `[{ port = "8000/udp", payload = "hex:CAFE01" }, "9000/udp"]`)))
	if err != nil {
		t.Fatal(err)
	}
	a, b := cfg.Doors[0], cfg.Doors[1]
	wantSeq := []knock.Element{{Proto: netport.TCP, Num: 7000}, {Proto: netport.UDP, Num: 8000}, {Proto: netport.ICMP}}
	if len(a.Sequence) != 3 || a.Sequence[0] != wantSeq[0] || a.Sequence[1] != wantSeq[1] || a.Sequence[2] != wantSeq[2] {
		t.Fatalf("sequence %v", a.Sequence)
	}
	for i, want := range [][]byte{nil, {0xca, 0xfe, 0x01}, {0x00, 0xff}} {
		if got := a.Payload(i); !bytes.Equal(got, want) || (want == nil) != (got == nil) {
			t.Errorf("door a payload %d = %x, want %x", i, got, want)
		}
	}
	if !bytes.Equal(b.Payload(0), []byte{0xca, 0xfe, 0x01}) || b.Payload(1) != nil || b.Payload(5) != nil {
		t.Errorf("door b payloads %x", b.Payloads)
	}
	if cfg, err := Parse(filepath.Join(t.TempDir(), "s.toml"), []byte(door("c", `["7000/tcp", "8000/udp"]`))); err != nil || cfg.Doors[0].Payloads != nil {
		t.Errorf("a door without payloads: %v, %v", err, cfg)
	}

	for _, tc := range []struct{ name, seq, want string }{
		{"tcp payload", `[{ port = "7000/tcp", payload = "hex:01" }]`, `7000/tcp: only a udp or icmp knock carries a payload`},
		{"not hex", `[{ port = "8000/udp", payload = "hex:xyz" }]`, `"hex:xyz": not hexadecimal bytes`},
		{"no prefix", `[{ port = "8000/udp", payload = "cafe" }]`, `a payload is written hex:BYTES`},
		{"empty", `[{ port = "8000/udp", payload = "hex:" }]`, `a payload is 1-64 bytes`},
		{"too long", `[{ port = "8000/udp", payload = "hex:` + strings.Repeat("00", 65) + `" }]`, `a payload is 1-64 bytes`},
		{"unknown key", `[{ port = "8000/udp", data = "hex:01" }]`, `element 1: unknown key "data"`},
		{"no port", `[{ payload = "hex:01" }]`, `element 1: port: want a string`},
		{"no payload", `[{ port = "8000/udp" }]`, `element 1: payload: want a string`},
		{"number", `[8000]`, `element 1: want "PORT/PROTO"`},
		{"bad port", `["7000/tcp", { port = "80000/udp", payload = "hex:01" }]`, `element 2: "80000/udp"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(t.TempDir(), "s.toml"), []byte(door("x", tc.seq)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	for _, tc := range []struct{ name, cfg, want string }{
		{"two payloads", door("a", `[{ port = "8000/udp", payload = "hex:01" }]`) + door("b", `["7000/tcp", { port = "8000/udp", payload = "hex:02" }]`),
			`door "b": sequence: element 2: 8000/udp with payload hex:02, but door "a" element 1 has payload hex:01`},
		{"payload and none", door("a", `[{ port = "8000/udp", payload = "hex:01" }, "7000/tcp"]`) + door("b", `["8000/udp", "7001/tcp"]`),
			`door "b": sequence: element 1: 8000/udp with no payload, but door "a" element 1 has payload hex:01`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(t.TempDir(), "s.toml"), []byte(tc.cfg))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

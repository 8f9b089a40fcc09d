package config

import (
	"strings"
	"testing"
	"time"

	"github.com/sesame-knock/sesame/internal/netport"
	"github.com/sesame-knock/sesame/internal/rotate"
)

// rotDoor is a rotating door with key file DIR/alice.key and extra keys.
func rotDoor(extra string) string {
	return "[[door]]\nname = \"rot\"\nsecret_file = \"DIR/alice.key\"\nrotate = \"30s\"\nopen = [\"tcp/22\"]\n" + extra + "\n"
}

func TestRotatingDoorConfig(t *testing.T) {
	dir, _ := spaKeys(t)
	tests := []struct {
		name    string
		text    string
		wantErr string
		check   func(t *testing.T, r *Rotation)
	}{
		{name: "defaults", text: rotDoor(""), check: func(t *testing.T, r *Rotation) {
			want := rotate.Params{Door: "rot", Period: 30 * time.Second, Lo: 10000, Hi: 60000, Length: 4, Uses: 3, Proto: netport.TCP}
			if r.Params != want {
				t.Errorf("params %+v, want %+v", r.Params, want)
			}
			if r.Secret == ([32]byte{}) {
				t.Error("no secret read")
			}
		}},
		{name: "every key", text: rotDoor(`rotate_ports = "20000-20999"` + "\nrotate_length = 6\nrotate_uses = 5\nrotate_proto = \"UDP\""), check: func(t *testing.T, r *Rotation) {
			want := rotate.Params{Door: "rot", Period: 30 * time.Second, Lo: 20000, Hi: 20999, Length: 6, Uses: 5, Proto: netport.UDP}
			if r.Params != want {
				t.Errorf("params %+v, want %+v", r.Params, want)
			}
		}},
		{name: "with sequence", text: rotDoor(`sequence = ["7000"]`), wantErr: "leave sequence out"},
		{name: "no secret_file", text: "[[door]]\nname = \"rot\"\nrotate = \"30s\"\nopen = [\"tcp/22\"]\n", wantErr: "needs secret_file"},
		{name: "no rotate", text: "[[door]]\nname = \"rot\"\nsecret_file = \"DIR/alice.key\"\nopen = [\"tcp/22\"]\n", wantErr: "secret_file needs rotate"},
		{name: "rotate key on a static door", text: "[[door]]\nname = \"s\"\nsequence = [\"7000\"]\nrotate_length = 3\nopen = [\"tcp/22\"]\n", wantErr: "only a rotating door"},
		{name: "world-readable key", text: strings.Replace(rotDoor(""), "alice.key", "open.key", 1), wantErr: "readable by group or others"},
		{name: "not a shared key", text: strings.Replace(rotDoor(""), "alice.key", "fwknop.keys", 1), wantErr: "not a sesame shared key"},
		{name: "missing key", text: strings.Replace(rotDoor(""), "alice.key", "nope", 1), wantErr: "secret_file"},
		{name: "short period", text: strings.Replace(rotDoor(""), `"30s"`, `"1s"`, 1), wantErr: "rotate: period"},
		{name: "fractional period", text: strings.Replace(rotDoor(""), `"30s"`, `"2.5s"`, 1), wantErr: "whole seconds"},
		{name: "small range", text: rotDoor(`rotate_ports = "20000-20100"`), wantErr: "rotate_ports"},
		{name: "bad range", text: rotDoor(`rotate_ports = "20000"`), wantErr: "want a range"},
		{name: "reversed range", text: rotDoor(`rotate_ports = "3000-2000"`), wantErr: "ends before it starts"},
		{name: "long", text: rotDoor("rotate_length = 33"), wantErr: "rotate_length"},
		{name: "no uses", text: rotDoor("rotate_uses = 0"), wantErr: "rotate_uses"},
		{name: "icmp", text: rotDoor(`rotate_proto = "icmp"`), wantErr: "want tcp or udp"},
		{name: "range holds an opened port", text: strings.Replace(rotDoor(""), `"tcp/22"`, `"tcp/22", "tcp/30000"`, 1), wantErr: "holds a port a door opens (tcp/30000)"},
		{name: "udp range holds the SPA port", text: rotDoor(`rotate_proto = "udp"`+"\nrotate_ports = \"60000-65000\"") + "[spa]\nlisten = \"udp/62201\"\n[[spa.client]]\nname = \"a\"\nkey_file = \"DIR/alice.key\"\nopen = [\"tcp/443\"]\n",
			wantErr: "holds the SPA port (udp/62201)"},
		{name: "tcp range may hold the SPA port number", text: rotDoor(`rotate_ports = "60000-65000"`) + "[spa]\nlisten = \"udp/62201\"\n[[spa.client]]\nname = \"a\"\nkey_file = \"DIR/alice.key\"\nopen = [\"tcp/443\"]\n"},
		{name: "range holds a decoy", text: rotDoor("") + "[[decoy]]\nports = [\"tcp/23000\"]\n", wantErr: "holds a decoy port (tcp/23000)"},
		{name: "range holds another door's knock", text: rotDoor("") + "[[door]]\nname = \"s\"\nsequence = [\"7000\", \"12345\"]\nopen = [\"tcp/22\"]\n", wantErr: `holds a knock of door "s" (tcp/12345)`},
		{name: "overlapping rotating doors", text: rotDoor("") + strings.Replace(rotDoor(`rotate_ports = "59000-65000"`), `"rot"`, `"rot2"`, 1), wantErr: `overlaps the range of door "rot"`},
		{name: "disjoint rotating doors", text: rotDoor("") + strings.Replace(rotDoor(`rotate_ports = "60001-65000"`), `"rot"`, `"rot2"`, 1)},
		{name: "too many armed knocks without the guard", text: "[server]\nsweep_guard = 0\n" + rotDoor("rotate_uses = 16\nrotate_length = 32") +
			strings.Replace(rotDoor(`rotate_ports = "60001-65000"`), `"rot"`, `"rot2"`, 1), wantErr: "must be at most 1536 (is 1572)"},
		{name: "many armed knocks with the guard", text: rotDoor("rotate_uses = 16\nrotate_length = 32") +
			strings.Replace(rotDoor(`rotate_ports = "60001-65000"`), `"rot"`, `"rot2"`, 1)},
		{name: "same range, other protocols", text: rotDoor("") + strings.Replace(rotDoor(`rotate_proto = "udp"`), `"rot"`, `"rot2"`, 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("test.toml", []byte(strings.ReplaceAll(tc.text, "DIR", dir)))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "sesame-shared-v1 ") {
					t.Fatalf("the error shows the key: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r := cfg.Doors[0].Rotate
			if r == nil || len(cfg.Doors[0].Sequence) != 0 {
				t.Fatalf("door %+v is not a rotating door", cfg.Doors[0])
			}
			if tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

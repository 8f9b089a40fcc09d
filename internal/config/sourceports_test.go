package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestSourcePorts(t *testing.T) {
	dir, _ := spaKeys(t)
	door := func(name, seq, extra string) string {
		return "[[door]]\nname = \"" + name + "\"\nsequence = " + seq + "\nopen = [\"tcp/22\"]\n" + extra
	}
	client := "[spa]\n[[spa.client]]\nname = \"a\"\nkey_file = \"alice.key\"\nopen = [\"tcp/22\"]\n"
	cfg, err := Parse(filepath.Join(dir, "s.toml"), []byte(door("a", `["7000/tcp", "8000/udp"]`, `source_ports = ["40000-40100", "50000"]`+"\n")+
		door("b", `["7001/tcp"]`, "")+client+`source_ports = ["62201"]`+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Doors[0].SourcePorts, []PortRange{{40000, 40100}, {50000, 50000}}; !slices.Equal(got, want) {
		t.Errorf("door a source ports %v, want %v", got, want)
	}
	if cfg.Doors[1].SourcePorts != nil {
		t.Errorf("door b source ports %v", cfg.Doors[1].SourcePorts)
	}
	if got := cfg.SPA.Clients[0].SourcePorts; !slices.Equal(got, []PortRange{{62201, 62201}}) {
		t.Errorf("client source ports %v", got)
	}
	for _, tc := range []struct {
		rs   []PortRange
		port uint16
		want bool
	}{
		{nil, 0, true}, {nil, 1234, true},
		{[]PortRange{{40000, 40100}}, 40000, true}, {[]PortRange{{40000, 40100}}, 40100, true},
		{[]PortRange{{40000, 40100}}, 39999, false}, {[]PortRange{{40000, 40100}}, 40101, false},
		{[]PortRange{{40000, 40100}, {5, 5}}, 5, true}, {[]PortRange{{1, 65535}}, 0, false},
	} {
		if got := PortsAllow(tc.rs, tc.port); got != tc.want {
			t.Errorf("PortsAllow(%v, %d) = %v, want %v", tc.rs, tc.port, got, tc.want)
		}
	}
	for _, tc := range []struct{ name, src, want string }{
		{"reversed", door("a", `["7000/tcp"]`, `source_ports = ["2-1"]`), `"2-1": the first port is above the last`},
		{"zero", door("a", `["7000/tcp"]`, `source_ports = ["0"]`), `"0"`},
		{"too big", door("a", `["7000/tcp"]`, `source_ports = ["1-70000"]`), `"1-70000"`},
		{"not a port", door("a", `["7000/tcp"]`, `source_ports = ["ssh"]`), `"ssh"`},
		{"empty", door("a", `["7000/tcp"]`, `source_ports = []`), `source_ports: is empty`},
		{"number", door("a", `["7000/tcp"]`, `source_ports = [40000]`), `source_ports: want a list of strings`},
		{"icmp", door("a", `["7000/tcp", "icmp"]`, `source_ports = ["1-2"]`), `a door with source_ports cannot have an icmp knock`},
		{"shared port", door("a", `["7000/tcp"]`, `source_ports = ["1-2"]`+"\n") + door("b", `["7000/tcp", "7001/tcp"]`, ""),
			`door "b": source_ports: 7000/tcp is also a knock of door "a", whose source_ports differ`},
		{"client empty", client + "source_ports = []\n", `spa client "a": source_ports: is empty`},
		{"client reversed", client + `source_ports = ["9-8"]` + "\n", `spa client "a": source_ports: "9-8"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(dir, "s.toml"), []byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

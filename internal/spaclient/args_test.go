package spaclient

import (
	"errors"
	"flag"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    string
		want    Options
		wantErr string
	}{
		{"issue shared", "192.0.2.7 -A tcp/22 --id alice --key-file alice.key",
			Options{Host: "192.0.2.7", Access: []string{"tcp/22"}, ID: "alice", KeyFile: "alice.key"}, ""},
		{"issue pair", "192.0.2.7 -A tcp/22 --id alice --key-file alice --server-key server.pub",
			Options{Host: "192.0.2.7", Access: []string{"tcp/22"}, ID: "alice", KeyFile: "alice", ServerKey: "server.pub"}, ""},
		{"flags first", "-A tcp/22,udp/53 -s -f 30 192.0.2.7",
			Options{Host: "192.0.2.7", Access: []string{"tcp/22", "udp/53"}, Source: true, OpenFor: "30"}, ""},
		{"flags around", "-n home 192.0.2.7 -A tcp/22 -A udp/53 -6 -v",
			Options{Host: "192.0.2.7", Profile: "home", Access: []string{"tcp/22", "udp/53"}, Family: 6, Verbose: true}, ""},
		{"fwknop flags", "-D 192.0.2.7 -A tcp/22 -a 198.51.100.4 --fwknop -p 6000 -U bob --get-key k --use-hmac",
			Options{Host: "192.0.2.7", Access: []string{"tcp/22"}, Allow: "198.51.100.4", Fwknop: true, Port: 6000, ID: "bob", KeyFile: "k"}, ""},
		{"double dash", "-A tcp/22 -- -weird-host",
			Options{Host: "-weird-host", Access: []string{"tcp/22"}}, ""},
		{"duration", "h -A tcp/22 -f 2m", Options{Host: "h", Access: []string{"tcp/22"}, OpenFor: "2m"}, ""},
		{"icmp", "h -A tcp/22 --icmp", Options{Host: "h", Access: []string{"tcp/22"}, ICMP: true}, ""},
		{"-P icmp", "h -A tcp/22 -P icmp", Options{Host: "h", Access: []string{"tcp/22"}, ICMP: true, Proto: "icmp"}, ""},
		{"-P udp", "h -A tcp/22 --server-proto udp", Options{Host: "h", Access: []string{"tcp/22"}, Proto: "udp"}, ""},
		{"-P tcp", "h -A tcp/22 -P tcp", Options{}, "-P tcp: sesame open sends udp or icmp"},
		{"source port", "h -A tcp/22 --source-port 40000", Options{Host: "h", Access: []string{"tcp/22"}, SourcePort: 40000}, ""},
		{"-S", "h -A tcp/22 -S 1", Options{Host: "h", Access: []string{"tcp/22"}, SourcePort: 1}, ""},
		{"source port big", "h --source-port 65536", Options{}, "--source-port 65536: port out of range"},
		{"source port icmp", "h --source-port 4000 --icmp", Options{}, "a ping has no source port"},
		{"two hosts", "a b -A tcp/22", Options{}, "want one HOST"},
		{"host and -D", "a -D b", Options{}, "disagree"},
		{"a and s", "h -a 192.0.2.1 -s", Options{}, "mutually exclusive"},
		{"4 and 6", "h -4 -6", Options{}, "mutually exclusive"},
		{"bad port", "h -p 70000", Options{}, "out of range"},
		{"bad open-for", "h -f soon", Options{}, "not a number of seconds"},
		{"zero open-for", "h -f 0", Options{}, "at least one second"},
		{"unknown flag", "h --frobnicate", Options{}, "not defined"},
		{"missing value", "h -A", Options{}, "needs an argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseArgs(strings.Fields(tt.args))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseArgs(%q) error = %v, want %q", tt.args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseArgs(%q): %v", tt.args, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseArgs(%q)\n got %+v\nwant %+v", tt.args, got, tt.want)
			}
		})
	}
}

func TestParseArgsHelp(t *testing.T) {
	for _, a := range []string{"-h", "--help", "-help"} {
		if _, err := ParseArgs([]string{"192.0.2.7", a}); !errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s: err = %v, want flag.ErrHelp", a, err)
		}
	}
}

func TestParseOpenFor(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30", 30 * time.Second, true},
		{"90s", 90 * time.Second, true},
		{"1h", time.Hour, true},
		{"65536", MaxOpenFor, true},
		{"65537", 0, false},
		{"1.5s", 0, false},
		{"-1", 0, false},
		{"0", 0, false},
		{"", 0, false},
	} {
		got, err := ParseOpenFor(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseOpenFor(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

package knockdconf

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that Parse never panics and that whatever it accepts is a valid configuration
// of commands-only doors.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.conf"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(""))
	f.Add([]byte("UseSyslog\n[options]\r\nInterface = eth0\n[d]\nsequence = ,1:udp:x, 2 ,\ntcpflags = syn,!ack\ncommand_6 =\n"))
	f.Add([]byte("[d]\nsequence = -1,abc,0,70000\nseq_timeout = 5s\n"))
	f.Add([]byte("[d]\none_time_sequences = testdata/ots.txt\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.conf", data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v\n%q", err, data)
		}
		if cfg.Server.Firewall != "none" {
			t.Fatalf("firewall = %q", cfg.Server.Firewall)
		}
		for _, d := range cfg.Doors {
			if len(d.Open) != 0 {
				t.Fatalf("door %q opens ports", d.Name)
			}
		}
	})
}

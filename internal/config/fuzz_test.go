package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that Parse never panics and that whatever it accepts is a valid configuration.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.toml"))
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(""))
	f.Add([]byte("[server]\nfirewall = \"none\"\n[[door]]\nname = \"a\"\nsequence = [\"icmp\", \"1/udp\"]\ncommand = \"\"\ncommand_6 = \"x\"\n"))
	f.Add([]byte("door = [{name = \"a\", sequence = [\"1\"], open = [\"tcp/1\"], min_gap = 1, max_gap = 1}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.toml", data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("accepted config does not validate: %v\n%s", err, data)
		}
		for _, d := range cfg.Doors {
			if len(d.Open) == 0 && d.StartCommand == "" && d.StartCommand6 == "" {
				t.Fatalf("door %q opens nothing", d.Name)
			}
			for i := 1; i < len(d.Sequence); i++ {
				if d.Sequence[i] == d.Sequence[i-1] {
					t.Fatalf("door %q repeats an element", d.Name)
				}
			}
		}
	})
}

package cli

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSSHProxy(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		access  []string
		knock   []string
		wait    time.Duration
		wantErr string
	}{
		{args: []string{"--id", "alice", "--key-file", "k", "host", "22"}, access: []string{"tcp/22"}, wait: 10 * time.Second},
		{args: []string{"host", "2222", "-A", "tcp/2222,udp/53", "--wait", "3s"}, access: []string{"tcp/2222", "udp/53"}, wait: 3 * time.Second},
		{args: []string{"-n", "home", "host", "22"}, wait: 10 * time.Second}, // the profile's access
		{args: []string{"--knock", "7000,8000:udp", "--knock", "9000", "host", "22"}, knock: []string{"7000", "8000:udp", "9000"}, wait: 10 * time.Second},
		{args: []string{"host"}, wantErr: "want HOST PORT"},
		{args: []string{"host", "22", "x"}, wantErr: "want HOST PORT"},
		{args: []string{"host", "0"}, wantErr: "PORT"},
		{args: []string{"host", "65536"}, wantErr: "PORT"},
		{args: []string{"host", "22", "--wait", "0s"}, wantErr: "--wait"},
		{args: []string{"host", "22", "--wait", "1h"}, wantErr: "--wait"},
		{args: []string{"host", "22", "-T"}, wantErr: "-T"},
		{args: []string{"host", "22", "--knock", "7000", "--key-file", "k"}, wantErr: "do not apply"},
		{args: []string{"host", "22", "--knock-delay", "5"}, wantErr: "needs --knock"},
		{args: []string{"host", "22", "-a", "198.18.0.2", "-s"}, wantErr: "mutually exclusive"},
		{args: []string{"host", "22", "-R"}, wantErr: "not supported"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			a, err := parseSSHProxy(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a.open.Access, tc.access) || !slices.Equal(a.knock, tc.knock) || a.wait != tc.wait || a.open.Host != "host" {
				t.Errorf("got access %q knock %q wait %v host %q", a.open.Access, a.knock, a.wait, a.open.Host)
			}
		})
	}
}

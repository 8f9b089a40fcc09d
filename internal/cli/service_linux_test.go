package cli

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMissingFrom(t *testing.T) {
	const admin, raw = 1 << unix.CAP_NET_ADMIN, 1 << unix.CAP_NET_RAW
	cases := []struct {
		eff  uint64
		want []string
	}{
		{admin | raw, nil},
		{^uint64(0), nil},
		{admin, []string{"CAP_NET_RAW"}},
		{raw | 1<<unix.CAP_SYS_ADMIN, []string{"CAP_NET_ADMIN"}},
		{0, []string{"CAP_NET_ADMIN", "CAP_NET_RAW"}},
	}
	for _, tc := range cases {
		if got := missingFrom(tc.eff); !slices.Equal(got, tc.want) {
			t.Errorf("missingFrom(%#x) = %v, want %v", tc.eff, got, tc.want)
		}
	}
}

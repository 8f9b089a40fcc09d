package benchkit

import (
	"slices"
	"time"
)

// Summary holds order statistics of a set of durations, in milliseconds for JSON and tables.
type Summary struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P95 float64 `json:"p95_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// Summarize returns the order statistics of d (zero when d is empty).
func Summarize(d []time.Duration) Summary {
	if len(d) == 0 {
		return Summary{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	q := func(p float64) float64 { return ms(s[int(p*float64(len(s)-1)+0.5)]) }
	return Summary{N: len(s), P50: q(0.5), P95: q(0.95), P99: q(0.99), Max: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

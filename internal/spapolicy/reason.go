package spapolicy

import (
	"sync/atomic"

	"github.com/sesame-knock/sesame/internal/config"
)

// Reason is the outcome of one packet: accepted, or why it was refused. Its String is the name
// logged in the "reason" attribute of every decision. The zero Reason is no decision yet.
type Reason uint8

// Reasons.
const (
	ReasonAccepted Reason = iota + 1
	ReasonReplay
	ReasonStale
	ReasonFuture
	ReasonBadMAC
	ReasonUnknownClient
	ReasonPortNotAllowed
	ReasonSourceNotAllowed
	ReasonAddrNotAllowed
	ReasonSourceAddrNeeded // an explicit address: require_address, REQUIRE_SOURCE_ADDRESS
	ReasonUserNotAllowed
	ReasonAccessExpired
	ReasonNATRefused
	ReasonForwardNotAllowed // a forward (fwknop -N, --nat-local) the client's forward list lacks
	ReasonCommandRefused
	ReasonBadSource
	ReasonMalformed
	ReasonTooShort
	ReasonTooLong
	ReasonInternal
	ReasonSourcePortNotAllowed
	// NumReasons bounds the reasons, for arrays indexed by Reason.
	NumReasons
)

var reasonNames = [NumReasons]string{
	ReasonAccepted:             "accepted",
	ReasonReplay:               "replay",
	ReasonStale:                "stale",
	ReasonFuture:               "future",
	ReasonBadMAC:               "bad MAC",
	ReasonUnknownClient:        "unknown client",
	ReasonPortNotAllowed:       "port not allowed",
	ReasonSourceNotAllowed:     "source not allowed",
	ReasonAddrNotAllowed:       "address not allowed",
	ReasonSourceAddrNeeded:     "source address required",
	ReasonUserNotAllowed:       "username not allowed",
	ReasonAccessExpired:        "access expired",
	ReasonNATRefused:           "NAT not supported",
	ReasonForwardNotAllowed:    "forward not allowed",
	ReasonCommandRefused:       "command not supported",
	ReasonBadSource:            "bad source",
	ReasonMalformed:            "malformed",
	ReasonTooShort:             "too short",
	ReasonTooLong:              "too long",
	ReasonInternal:             "internal error",
	ReasonSourcePortNotAllowed: "source port not allowed",
}

// String is the reason's log name.
func (r Reason) String() string {
	if r < NumReasons && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return "none"
}

// Format is the wire format a packet was read as.
type Format uint8

// Formats. A packet refused before its format is known (a bad source; not sesame's format
// while no fwknop clients are configured) is formatUnknown.
const (
	formatUnknown Format = iota
	FormatNative
	FormatFwknop
	numFormats
)

// String is the format's name in configurations and logs ("unknown" for formatUnknown).
func (f Format) String() string {
	switch f {
	case FormatNative:
		return config.SPAFormatNative
	case FormatFwknop:
		return config.SPAFormatFwknop
	}
	return "unknown"
}

// Counts returns how many packets ended with each reason so far, all formats together.
func (h *Policy) Counts() map[Reason]uint64 {
	out := map[Reason]uint64{}
	for f := range h.counts {
		for r := range h.counts[f] {
			if n := h.counts[f][r].Load(); n > 0 {
				out[Reason(r)] += n
			}
		}
	}
	return out
}

// Decisions returns the counts by format name and reason name (only those not zero).
func (h *Policy) Decisions() map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	for f := range h.counts {
		for r := range h.counts[f] {
			if n := h.counts[f][r].Load(); n > 0 {
				m := out[Format(f).String()]
				if m == nil {
					m = map[string]uint64{}
					out[Format(f).String()] = m
				}
				m[Reason(r).String()] = n
			}
		}
	}
	return out
}

// ClientCounts are one client's authenticated packets: accepted, and refused (by policy,
// replay or age).
type ClientCounts struct {
	Accepted, Refused uint64
}

type clientCounters struct{ accepted, refused atomic.Uint64 }

// Clients returns the counts of every client of the running configuration, by name.
func (h *Policy) Clients() map[string]ClientCounts {
	r := h.rules.Load()
	out := make(map[string]ClientCounts, len(r.clients))
	for name, c := range r.clients {
		out[name] = ClientCounts{Accepted: c.accepted.Load(), Refused: c.refused.Load()}
	}
	return out
}

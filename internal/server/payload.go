package server

import (
	"crypto/subtle"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/knock"
)

// knockPayloads maps each knock element that must carry a payload to it ([[door]] sequence
// entries with payload; config.Load makes them the same wherever an element is used).
func knockPayloads(cfg *config.Config) map[knock.Element][]byte {
	var m map[knock.Element][]byte
	for _, d := range cfg.Doors {
		for i, el := range d.Sequence {
			if p := d.Payload(i); p != nil {
				if m == nil {
					m = map[knock.Element][]byte{}
				}
				m[el] = p
			}
		}
	}
	return m
}

// payloadOK reports whether a knock on el with payload may count: el needs no payload, or
// payload is exactly the one it needs. The kernel filter already drops most wrong ones; this
// holds where it passes more (a UDP guard range over the port, every ping with [spa] icmp).
func (st *state) payloadOK(el knock.Element, payload []byte) bool {
	want, ok := st.payloads[el]
	return !ok || subtle.ConstantTimeCompare(payload, want) == 1
}

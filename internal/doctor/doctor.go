package doctor

import (
	"time"

	"github.com/sesame-knock/sesame/internal/config"
)

// Options configure a diagnosis.
type Options struct {
	// Config is the configuration whose gate, doors and commands are checked.
	Config *config.Config
	// ProbeTimeout bounds each test connection; 0 means one second.
	ProbeTimeout time.Duration
	// Timeout bounds the whole diagnosis; 0 means two minutes.
	Timeout time.Duration
}

func (o Options) probeTimeout() time.Duration {
	if o.ProbeTimeout > 0 {
		return o.ProbeTimeout
	}
	return time.Second
}

func (o Options) timeout() time.Duration {
	if o.Timeout > 0 {
		return o.Timeout
	}
	return 2 * time.Minute
}

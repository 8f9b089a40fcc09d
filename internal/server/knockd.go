package server

import (
	"strings"

	"github.com/sesame-knock/sesame/internal/config"
	"github.com/sesame-knock/sesame/internal/knock"
	"github.com/sesame-knock/sesame/internal/knockdconf"
	"github.com/sesame-knock/sesame/internal/knockdlog"
)

// openKnockdLog opens cfg's log_file and syslog for knockd-style lines, unless Deps.KnockdLog
// stands in for them; the returned function closes them.
func (s *Server) openKnockdLog(cfg *config.Config) (closeLog func(), err error) {
	if s.deps.KnockdLog != nil {
		return func() {}, nil
	}
	l, err := knockdlog.Open(cfg.Server.LogFile, cfg.Server.UseSyslog)
	if err != nil {
		return nil, err
	}
	if l.Enabled() { // else nothing is ever formatted
		line := l.Line
		s.knockd.Store(&line)
	}
	return func() {
		s.knockd.Store(nil)
		l.Close()
	}, nil
}

func ifaceList(ifs []string) string {
	if len(ifs) == 0 {
		return "all interfaces"
	}
	return strings.Join(ifs, ",")
}

// KnockdOneTime consumes knockd one-time sequence files (knockdconf).
type KnockdOneTime struct{}

// Consume marks used as used in the file at path and returns the next sequence; none when no
// valid line is left (the door is then disabled).
func (KnockdOneTime) Consume(path string, used []knock.Element) ([]knock.Element, error) {
	if err := knockdconf.ConsumeOneTime(path, used); err != nil {
		return nil, err
	}
	next, err := knockdconf.NextOneTime(path)
	if err != nil {
		return nil, nil
	}
	return next, nil
}

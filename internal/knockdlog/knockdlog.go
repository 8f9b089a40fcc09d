// Package knockdlog writes knockd-style event lines to a log file and to syslog, as knockd does.
package knockdlog

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sesame-knock/sesame/internal/safefile"
)

// Log writes knockd-style lines. A nil *Log, or one with neither a file nor syslog, writes
// nothing. It is safe for concurrent use.
type Log struct {
	now    func() time.Time
	mu     sync.Mutex
	file   *os.File
	syslog syslogWriter
}

type syslogWriter interface {
	Notice(string) error
	Close() error
}

// Open opens the log file (appending, created 0640, never through a link: safefile.Open) when
// file is not empty, and syslog (LOG_USER, tag sesame) when useSyslog is set; syslog being
// unreachable is not an error, as with knockd.
func Open(file string, useSyslog bool) (*Log, error) {
	l := &Log{now: time.Now}
	if file != "" {
		f, err := safefile.Open(file, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o640)
		if err != nil {
			return nil, fmt.Errorf("log file: %w", err)
		}
		l.file = f
	}
	if useSyslog {
		l.syslog = openSyslog()
	}
	return l, nil
}

// Enabled reports whether lines go anywhere: callers skip formatting them otherwise.
func (l *Log) Enabled() bool { return l != nil && (l.file != nil || l.syslog != nil) }

// Line writes one event line.
func (l *Log) Line(s string) {
	if !l.Enabled() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.file != nil {
		fmt.Fprintf(l.file, "[%s] %s\n", l.now().Format("2006-01-02 15:04"), s)
	}
	if l.syslog != nil {
		l.syslog.Notice(s)
	}
}

// Close closes the file and the syslog connection.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	var errs []error
	if l.file != nil {
		errs = append(errs, l.file.Close())
	}
	if l.syslog != nil {
		errs = append(errs, l.syslog.Close())
	}
	return errors.Join(errs...)
}

// Package doctor diagnoses a host's firewall for sesame: it replays the live ruleset with
// sesame's gate in a scratch network namespace, traces test packets through it, and says for
// every protected port whether a granted client gets in and an ungranted one is refused.
package doctor

import (
	"fmt"
	"io"
	"strings"
)

// Status is the verdict of one check.
type Status int

// Statuses, from good to bad.
const (
	OK Status = iota
	Warn
	Fail
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Warn:
		return "warn"
	}
	return "FAIL"
}

// Check is one line of the diagnosis.
type Check struct {
	Status Status
	// Subject is what was checked: "tcp/22 granted client", "knock tcp/7000", "ruleset".
	Subject string
	// Text says what was found, naming the deciding rule where there is one.
	Text string
	// Fix, when not empty, says how to repair it.
	Fix string
}

// String is the check's line: "FAIL tcp/22 granted client: dropped by ip filter INPUT rule 3: tcp dport 22 drop".
func (c Check) String() string {
	return fmt.Sprintf("%-4s %s: %s", c.Status, c.Subject, c.Text)
}

// Report is the result of a diagnosis: every check, in order.
type Report struct {
	Checks []Check
}

func (r *Report) add(st Status, subject, text, fix string) {
	r.Checks = append(r.Checks, Check{Status: st, Subject: subject, Text: text, Fix: fix})
}

// Worst is the worst status of the report (OK for an empty one).
func (r *Report) Worst() Status {
	w := OK
	for _, c := range r.Checks {
		w = max(w, c.Status)
	}
	return w
}

// Write prints one line per check, each fix indented on the line after it.
func (r *Report) Write(w io.Writer) error {
	var b strings.Builder
	for _, c := range r.Checks {
		b.WriteString(c.String())
		b.WriteByte('\n')
		if c.Fix != "" && c.Status != OK {
			b.WriteString("     fix: " + c.Fix + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

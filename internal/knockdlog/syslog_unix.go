//go:build unix

package knockdlog

import "log/syslog"

func openSyslog() syslogWriter {
	w, err := syslog.New(syslog.LOG_NOTICE|syslog.LOG_USER, "sesame")
	if err != nil {
		return nil
	}
	return w
}

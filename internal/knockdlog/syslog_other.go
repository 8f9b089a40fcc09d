//go:build !unix

package knockdlog

func openSyslog() syslogWriter { return nil }

// Package dist holds the files a system installs to run sesame as a service: the systemd unit,
// its sysusers.d and tmpfiles.d entries; its tests check them with systemd's own tools.
package dist

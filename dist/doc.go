// Package dist holds the files a system installs to run sesame as a service (the systemd unit,
// its sysusers.d and tmpfiles.d entries) and its Debian packaging; its tests check them with
// systemd's own tools and by installing the package.
package dist

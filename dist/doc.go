// Package dist holds sesame's packaging; its test builds the Debian package and installs it.
package dist

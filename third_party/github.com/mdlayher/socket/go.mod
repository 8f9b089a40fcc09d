module github.com/mdlayher/socket

go 1.20

require (
	github.com/google/go-cmp v0.5.9
	golang.org/x/net v0.14.0
	golang.org/x/sync v0.3.0
	golang.org/x/sys v0.11.0
)

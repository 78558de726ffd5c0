module github.com/procsync/procsync/go

go 1.23.0

require (
	golang.org/x/sys v0.35.0
	google.golang.org/protobuf v1.36.12
)

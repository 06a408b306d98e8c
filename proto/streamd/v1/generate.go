// Package streamdv1 holds the wire types and gRPC services of streamd,
// generated from streamd.proto (events, the stream, publishing), admin.proto
// (the consumers a process runs), primary.proto (single-writer entities:
// forwarded writes, handovers, pinned primaries), aggregate.proto (the
// aggregation stages a process runs) and interest.proto (the entities a
// region replicates on demand). Regenerate with `go generate ./...` (needs
// protoc on PATH; the Go plugins are pinned as tool directives in go.mod).
package streamdv1

//go:generate sh -c "protoc --plugin=protoc-gen-go=$(go tool -n protoc-gen-go) --plugin=protoc-gen-go-grpc=$(go tool -n protoc-gen-go-grpc) -I ../.. --go_out=../.. --go_opt=paths=source_relative --go-grpc_out=../.. --go-grpc_opt=paths=source_relative streamd/v1/streamd.proto streamd/v1/admin.proto streamd/v1/primary.proto streamd/v1/aggregate.proto streamd/v1/interest.proto"

// Package buildinfo says which build of streamd is running: the module
// version and the VCS revision the Go toolchain stamps into every binary
// built from a checkout (runtime/debug.ReadBuildInfo). Both binaries print
// it for --version, streamd exports it as the streamd_build_info metric and
// sends it to clients in response headers, and deploy/image labels the
// image with it.
//
// A build may set the version with
// -ldflags "-X github.com/streamd/streamd/internal/buildinfo.version=v1.2.3"
// (deploy/image -version does); it then wins over the module's. It does not
// invent one: a build without (go run, go test, a build with
// -buildvcs=false) says "dev" and "unknown".
package buildinfo

import (
	"fmt"
	"runtime/debug"
)

// Info is a build's identity.
type Info struct {
	// Version is the main module's version: a tag (v1.2.3), a pseudo-version
	// from the VCS (v0.0.0-20261204120000-abcdef123456, "+dirty" when the
	// tree had changes), or "dev" when unknown.
	Version string
	// Revision is the VCS commit, with "-dirty" when the tree had changes;
	// "unknown" when not stamped.
	Revision string
	// GoVersion is the toolchain that built it (go1.26.8).
	GoVersion string
}

// UnknownVersion and UnknownRevision are what a build without them says.
const (
	UnknownVersion  = "dev"
	UnknownRevision = "unknown"
)

// version, when set with -ldflags -X, is the Version.
var version string

// Read is the running binary's Info.
func Read() Info {
	info := Info{Version: UnknownVersion, Revision: UnknownRevision}
	if bi, ok := debug.ReadBuildInfo(); ok {
		info = From(bi)
	}
	if version != "" {
		info.Version = version
	}
	return info
}

// From is the Info of bi, from runtime/debug.ReadBuildInfo or, for another
// binary, debug/buildinfo.Read; it does not see a version set with -X.
func From(bi *debug.BuildInfo) Info {
	info := Info{Version: bi.Main.Version, Revision: UnknownRevision, GoVersion: bi.GoVersion}
	if info.Version == "" || info.Version == "(devel)" {
		info.Version = UnknownVersion
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			info.Revision = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && info.Revision != UnknownRevision {
		info.Revision += "-dirty"
	}
	return info
}

// String is "VERSION (revision REVISION, GOVERSION)", what --version prints
// after the program's name.
func (i Info) String() string {
	return fmt.Sprintf("%s (revision %s, %s)", i.Version, i.Revision, i.GoVersion)
}

// The gRPC response header keys in which streamd sends its Version and
// Revision on every call, health checks included.
const (
	VersionHeader  = "streamd-version"
	RevisionHeader = "streamd-revision"
)

// VersionVar is the -X name that sets the Version at link time.
const VersionVar = "github.com/streamd/streamd/internal/buildinfo.version"

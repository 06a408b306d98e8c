// Command image builds the streamd container image without a Docker daemon
// and without pulling a base image.
//
//	go run ./deploy/image -o streamd.oci.tar
//
// It compiles cmd/streamd as a static Linux binary (CGO_ENABLED=0, -trimpath)
// and assembles, with go-containerregistry, an image of one layer on an empty
// base: /streamd, and /var/lib/streamd (the journal's volume) owned by the
// non-root user 65532. The labels org.opencontainers.image.version and
// .revision carry what the binary's --version prints (-version sets it;
// the revision is stamped when built from a git clone). Timestamps are
// fixed (SOURCE_DATE_EPOCH, default 0), so the same binary always gives the
// same image digest.
//
// The output is an OCI image layout in a tar (oci-layout, index.json,
// blobs/sha256/...) that also carries Docker's manifest.json pointing at the
// same blobs, as `docker save` writes since Docker 25: `docker load`,
// `podman load`, `ctr images import` (kind, k3s), skopeo's oci-archive: and
// docker-archive: transports and `crane push` all read it.
package main

import (
	"archive/tar"
	"bytes"
	"context"
	debugbuildinfo "debug/buildinfo"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/streamd/streamd/internal/buildinfo"
)

// What the image holds; the manifests in deploy/k8s use the same paths,
// user and ports.
const (
	binaryPath = "/streamd"
	dataDir    = "/var/lib/streamd"
	uid        = 65532 // "nonroot", as in distroless images
	grpcPort   = 7070
	metricPort = 9464
	source     = "https://github.com/streamd/streamd"
	streamdPkg = "github.com/streamd/streamd/cmd/streamd"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fl := flag.NewFlagSet("image", flag.ContinueOnError)
	fl.SetOutput(stderr)
	out := fl.String("o", "streamd.oci.tar", "output `FILE`: an OCI image layout tarball that docker/podman load")
	tag := fl.String("tag", "streamd:dev", "name the loaded image gets")
	version := fl.String("version", "", "version streamd --version prints and the org.opencontainers.image.version label carries (default: the module's, from the VCS, or dev)")
	arch := fl.String("arch", runtime.GOARCH, "GOARCH to build for (the image is linux/ARCH)")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	if _, err := name.NewTag(*tag); err != nil {
		return fmt.Errorf("-tag %q: %w", *tag, err)
	}
	created, err := sourceDateEpoch()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "streamd-image")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "streamd")
	if err := buildBinary(ctx, bin, *arch, *version); err != nil {
		return err
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	bi, err := debugbuildinfo.Read(bytes.NewReader(binary))
	if err != nil {
		return fmt.Errorf("build info of %s: %w", bin, err)
	}
	build := buildinfo.From(bi)
	if *version != "" {
		build.Version = *version
	}
	img, err := newImage(binary, imageOptions{Arch: *arch, Version: build.Version, Revision: build.Revision, Created: created})
	if err != nil {
		return err
	}
	if err := writeArchive(*out, img, *tag); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s: %s linux/%s %s\n", *out, *tag, *arch, digest)
	return nil
}

// sourceDateEpoch is the time stamped on the image and its files:
// $SOURCE_DATE_EPOCH (reproducible-builds.org), else the Unix epoch.
func sourceDateEpoch() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	sec, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: want seconds since 1970", s)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// buildBinary compiles streamd for linux/arch as a static binary at out,
// stamped with the VCS revision when built from a git clone, and with
// version ("": the module's) as what --version prints.
func buildBinary(ctx context.Context, out, arch, version string) error {
	ldflags := "-s -w"
	if version != "" {
		ldflags += " -X " + buildinfo.VersionVar + "=" + version
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=auto", "-ldflags="+ldflags, "-o", out, streamdPkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", streamdPkg, err, msg)
	}
	return nil
}

type imageOptions struct {
	Arch string
	// Version and Revision are the binary's (internal/buildinfo); an
	// unknown revision gets no label.
	Version, Revision string
	Created           time.Time
}

// newImage assembles the image around the streamd binary.
func newImage(binary []byte, o imageOptions) (v1.Image, error) {
	layerTar, err := rootfs(binary, o.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: o.Created}, CreatedBy: "go run ./deploy/image", Comment: "static streamd binary"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", o.Arch, v1.Time{Time: o.Created}
	labels := map[string]string{
		"org.opencontainers.image.title":       "streamd",
		"org.opencontainers.image.description": "brokerless event streaming daemon: a durable local journal served over gRPC",
		"org.opencontainers.image.source":      source,
		"org.opencontainers.image.version":     o.Version,
	}
	if o.Revision != buildinfo.UnknownRevision {
		labels["org.opencontainers.image.revision"] = o.Revision
	}
	cf.Config = v1.Config{
		Entrypoint: []string{binaryPath},
		// Defaults through streamd's own STREAMD_* variables, so that
		// arguments given to `docker run` or a pod add to them instead of
		// replacing them. ":port" listens on every address, IPv4 and IPv6.
		Env: []string{
			"STREAMD_DATA_DIR=" + dataDir,
			"STREAMD_LISTEN=:" + strconv.Itoa(grpcPort),
			"STREAMD_METRICS_LISTEN=:" + strconv.Itoa(metricPort),
		},
		User:         fmt.Sprintf("%d:%d", uid, uid),
		WorkingDir:   dataDir,
		ExposedPorts: map[string]struct{}{fmt.Sprintf("%d/tcp", grpcPort): {}, fmt.Sprintf("%d/tcp", metricPort): {}},
		Volumes:      map[string]struct{}{dataDir: {}},
		Labels:       labels,
		// streamd shuts down gracefully on SIGTERM (the default); named for
		// runtimes that read it.
		StopSignal: "SIGTERM",
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	return mutate.Annotations(img, labels).(v1.Image), nil
}

// rootfs is the image's only layer, uncompressed: the binary and the
// journal directory, owned by the non-root user.
func rootfs(binary []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := []struct {
		name string
		uid  int
		mode int64
	}{{"var/", 0, 0o755}, {"var/lib/", 0, 0o755}, {strings.TrimPrefix(dataDir, "/") + "/", uid, 0o700}}
	for _, d := range dirs {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d.name, Mode: d.mode, Uid: d.uid, Gid: d.uid, ModTime: mtime, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(binaryPath, "/"), Mode: 0o555, Size: int64(len(binary)), ModTime: mtime, Format: tar.FormatPAX}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeArchive writes img to path as an OCI image layout tarball that also
// holds Docker's manifest.json, both naming the image tag.
func writeArchive(path string, img v1.Image, tag string) error {
	t, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("-tag %q: %w", tag, err)
	}
	dir, err := os.MkdirTemp("", "streamd-layout")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	// Docker 25+ and containerd name the image by io.containerd.image.name,
	// podman and skopeo by org.opencontainers.image.ref.name.
	fullName := strings.Replace(t.Name(), name.DefaultRegistry+"/", "docker.io/", 1)
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"io.containerd.image.name":          fullName,
		"org.opencontainers.image.ref.name": t.TagStr(),
	})); err != nil {
		return err
	}
	dockerManifest, err := dockerManifest(img, tag)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), dockerManifest, 0o644); err != nil {
		return err
	}
	return tarDir(path, dir)
}

// dockerManifest is `docker save`'s manifest.json for img, pointing into the
// layout's blobs.
func dockerManifest(img v1.Image, tag string) ([]byte, error) {
	cfg, err := img.ConfigName()
	if err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	d := tarball.Descriptor{Config: blobPath(cfg), RepoTags: []string{tag}}
	for _, l := range layers {
		digest, err := l.Digest()
		if err != nil {
			return nil, err
		}
		d.Layers = append(d.Layers, blobPath(digest))
	}
	return json.Marshal(tarball.Manifest{d})
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

// tarDir writes the files under dir into a tar at path, in name order, with
// fixed times and owners, so that the same image gives the same bytes.
func tarDir(path, dir string) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel := filepath.ToSlash(p[len(dir)+1:])
		hdr := &tar.Header{Name: rel, Mode: 0o644, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if d.IsDir() {
			hdr.Typeflag, hdr.Name, hdr.Mode = tar.TypeDir, rel+"/", 0o755
			return tw.WriteHeader(hdr)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file", p)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err = tw.Write(data)
		return err
	})
	if err != nil {
		return errors.Join(err, tw.Close())
	}
	return tw.Close()
}

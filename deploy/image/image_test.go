package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// TestImage builds the image as `go run ./deploy/image` does, opens the
// tarball both as an OCI layout and as `docker save` output, and checks that
// its entrypoint is the static streamd binary, run as a non-root user.
func TestImage(t *testing.T) {
	const epoch = 1700000000
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	out := filepath.Join(t.TempDir(), "streamd.oci.tar")
	var log bytes.Buffer
	if err := run(context.Background(), []string{"-o", out, "-tag", "streamd:test", "-version", "1.2.3"}, &log); err != nil {
		t.Fatalf("build: %v\n%s", err, log.String())
	}

	img := openLayout(t, out)
	dockerImg, err := tarball.ImageFromPath(out, nil)
	if err != nil {
		t.Fatalf("open as docker archive: %v", err)
	}
	// Every blob of the OCI view is read and digested; manifest.json must
	// point at the same config and layers.
	if err := validate.Image(img); err != nil {
		t.Fatalf("oci layout: %v", err)
	}
	if err := validate.Image(dockerImg, validate.Fast); err != nil {
		t.Fatalf("docker manifest.json: %v", err)
	}
	if a, b := configName(t, img), configName(t, dockerImg); a != b {
		t.Fatalf("index.json and manifest.json name different configs: %s, %s", a, b)
	}
	if a, b := layerDigests(t, img), layerDigests(t, dockerImg); !slices.Equal(a, b) {
		t.Fatalf("index.json and manifest.json name different layers: %v, %v", a, b)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/streamd"}) || len(cf.Config.Cmd) != 0 {
		t.Fatalf("entrypoint %q cmd %q, want [/streamd] and no cmd", cf.Config.Entrypoint, cf.Config.Cmd)
	}
	if cf.Config.User != "65532:65532" {
		t.Fatalf("user %q, want the numeric non-root 65532:65532 (runAsNonRoot needs a number)", cf.Config.User)
	}
	for _, port := range []string{"7070/tcp", "9464/tcp"} {
		if _, ok := cf.Config.ExposedPorts[port]; !ok {
			t.Errorf("port %s not exposed: %v", port, cf.Config.ExposedPorts)
		}
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if !cf.Created.Equal(time.Unix(epoch, 0)) {
		t.Errorf("created %v, want SOURCE_DATE_EPOCH %d", cf.Created, epoch)
	}
	if got := cf.Config.Labels["org.opencontainers.image.version"]; got != "1.2.3" {
		t.Errorf("version label %q, want 1.2.3", got)
	}
	if got := cf.Config.Labels["org.opencontainers.image.source"]; got != source {
		t.Errorf("source label %q, want %s", got, source)
	}

	files := layerFiles(t, img)
	entry := strings.TrimPrefix(cf.Config.Entrypoint[0], "/")
	bin, ok := files[entry]
	if !ok {
		t.Fatalf("no file %s in the layer (it has %v)", entry, slices.Sorted(maps.Keys(files)))
	}
	if bin.hdr.Mode&0o111 == 0 || bin.hdr.Uid != 0 {
		t.Errorf("%s: mode %o uid %d, want executable and owned by root (not writable by streamd)", entry, bin.hdr.Mode, bin.hdr.Uid)
	}
	if d, ok := files["var/lib/streamd"]; !ok || d.hdr.Uid != uid || d.hdr.Typeflag != tar.TypeDir {
		t.Errorf("var/lib/streamd must be a directory owned by %d: %+v", uid, d.hdr)
	}
	for name, f := range files {
		if !f.hdr.ModTime.Equal(time.Unix(epoch, 0)) {
			t.Errorf("%s: mtime %v, want SOURCE_DATE_EPOCH", name, f.hdr.ModTime)
		}
	}
	revision, ok := cf.Config.Labels["org.opencontainers.image.revision"]
	if !ok {
		revision = "unknown" // not built from a git clone
	}
	checkStreamdBinary(t, bin.data, cf.Config.Env, "1.2.3", revision)

	// Same binary, same options: same image and the same archive bytes.
	again, err := newImage(bin.data, imageOptions{Arch: runtime.GOARCH, Version: "1.2.3", Revision: revision, Created: time.Unix(epoch, 0).UTC()})
	if err != nil {
		t.Fatal(err)
	}
	if a, b := digest(t, img), digest(t, again); a != b {
		t.Fatalf("rebuilt image %s differs from %s", b, a)
	}
	out2 := filepath.Join(t.TempDir(), "again.tar")
	if err := writeArchive(out2, again, "streamd:test"); err != nil {
		t.Fatal(err)
	}
	if a, b := fileSum(t, out), fileSum(t, out2); a != b {
		t.Fatalf("rewritten archive differs: %x vs %x", a, b)
	}
}

// checkStreamdBinary checks that bin is a static Linux executable built from
// cmd/streamd, and runs it: --help must list every STREAMD_* variable the
// image sets, --version the version and revision of its labels.
func checkStreamdBinary(t *testing.T, bin []byte, env []string, version, revision string) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("entrypoint is not an ELF binary: %v", err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("entrypoint has an ELF interpreter: not static, it cannot run on an empty base")
		}
	}
	info, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("entrypoint has no Go build info: %v", err)
	}
	if info.Path != streamdPkg {
		t.Fatalf("entrypoint is built from %s, want %s", info.Path, streamdPkg)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings CGO_ENABLED=%q -trimpath=%q, want 0 and true", settings["CGO_ENABLED"], settings["-trimpath"])
	}
	if runtime.GOOS != "linux" {
		t.Skip("the binary is linux/" + runtime.GOARCH + "; not running it on " + runtime.GOOS)
	}
	path := filepath.Join(t.TempDir(), "streamd")
	if err := os.WriteFile(path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	help, err := exec.Command(path, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("streamd --help: %v\n%s", err, help)
	}
	if !strings.Contains(string(help), "streamd - a brokerless event streaming daemon") {
		t.Fatalf("--help of the entrypoint is not streamd's:\n%s", help)
	}
	printed, err := exec.Command(path, "--version").Output()
	if want := "streamd " + version + " (revision " + revision + ", " + info.GoVersion + ")\n"; err != nil || string(printed) != want {
		t.Errorf("streamd --version: %q, %v; want %q (the labels)", printed, err, want)
	}
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "STREAMD_") && !strings.Contains(string(help), "$"+name+"]") {
			t.Errorf("the image sets %s, which no streamd flag reads", name)
		}
	}
}

func TestBadArguments(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		epoch string
		want  string
	}{
		{[]string{"-tag", "Not A Tag"}, "", `-tag "Not A Tag"`},
		{[]string{"extra"}, "", "unexpected arguments"},
		{nil, "yesterday", `SOURCE_DATE_EPOCH "yesterday"`},
	} {
		t.Setenv("SOURCE_DATE_EPOCH", tc.epoch)
		out := filepath.Join(t.TempDir(), "x.tar")
		err := run(context.Background(), append(tc.args, "-o", out), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q SOURCE_DATE_EPOCH=%q: got %v, want an error with %q", tc.args, tc.epoch, err, tc.want)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%q: an output was written despite the error", tc.args)
		}
	}
}

// openLayout reads the tarball as an OCI image layout and returns its only
// image, checking the names loaders give it.
func openLayout(t *testing.T, archive string) v1.Image {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if hdr.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatalf("open as OCI layout: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json lists %d manifests, want 1", len(im.Manifests))
	}
	d := im.Manifests[0]
	if got := d.Annotations["io.containerd.image.name"]; got != "docker.io/library/streamd:test" {
		t.Errorf("io.containerd.image.name %q", got)
	}
	if got := d.Annotations["org.opencontainers.image.ref.name"]; got != "test" {
		t.Errorf("org.opencontainers.image.ref.name %q", got)
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

type file struct {
	hdr  *tar.Header
	data []byte
}

// layerFiles returns the image's filesystem by cleaned path.
func layerFiles(t *testing.T, img v1.Image) map[string]file {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	files := map[string]file{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = file{hdr, data}
	}
}

func configName(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func layerDigests(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var hs []v1.Hash
	for _, l := range layers {
		h, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	return hs
}

func digest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(data)
}

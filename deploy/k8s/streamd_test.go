package k8s

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/streamd/streamd/internal/dialopts"
	"github.com/streamd/streamd/internal/kubetest"
	"github.com/streamd/streamd/internal/streamdtest"
	"github.com/streamd/streamd/internal/testpki"
	"github.com/streamd/streamd/internal/testwait"
)

// streamdBinary is the streamd the tests run, built once.
var streamdBinary string

func TestMain(m *testing.M) {
	var err error
	if streamdBinary, err = streamdtest.Binary(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(streamdtest.M(m).Run())
}

// imageEnv is the environment the streamd image sets (deploy/image).
var imageEnv = []string{"STREAMD_DATA_DIR=" + imageDataDir, "STREAMD_LISTEN=" + imageListen, "STREAMD_METRICS_LISTEN=" + imageMetricsListen}

// TestStreamdRunsAsThePodSays runs streamd with the arguments and environment
// of every streamd container in the manifests, with the files its volumes
// would hold (the ConfigMaps' data, stand-ins for the Secrets), listening on
// 127.0.0.1: streamd itself checks every flag, the --config file, the TLS
// files and the token file. Then it answers gRPC health (what the kubelet
// probes), serves the HTTP probe paths, and stops cleanly on SIGTERM.
func TestStreamdRunsAsThePodSays(t *testing.T) {
	for _, root := range roots {
		objs, err := render(root)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range objs.workloads() {
			for _, c := range allContainers(w.pod.Spec) {
				if c.Name != "streamd" {
					continue
				}
				t.Run(root+"/"+w.name, func(t *testing.T) {
					d, err := startAsPod(t, w, c, objs)
					if err != nil {
						t.Fatal(err)
					}
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					// What the pod asks for is what streamd says it serves.
					wantTLS, wantAuth := "tls=off", "auth=false"
					if flagValue(c, "tls-cert", "") != "" {
						wantTLS = "tls=tls"
					}
					if flagValue(c, "auth-token-file", "") != "" {
						wantAuth = "auth=true"
					}
					if !strings.Contains(d.serving, wantTLS) || !strings.Contains(d.serving, wantAuth) {
						t.Fatalf("streamd serves %q, want %s %s", d.serving, wantTLS, wantAuth)
					}
					// A pod that knows its name joins its replication's group.
					if slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "STREAMD_POD_NAME" }) &&
						!testwait.Until(20*time.Second, func() bool {
							for _, l := range d.api.Snapshot().Leases {
								if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == podName(w) {
									return true
								}
							}
							return false
						}) {
						t.Fatalf("%s did not join its consumer group: no Lease held by it\n%s", podName(w), d.Log())
					}
					h, err := healthpb.NewHealthClient(d.conn).Check(ctx, &healthpb.HealthCheckRequest{})
					if err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
						t.Fatalf("gRPC health: %v %v", h, err)
					}
					for _, p := range []*corev1.Probe{c.StartupProbe, c.ReadinessProbe, c.LivenessProbe} {
						if p == nil || p.HTTPGet == nil {
							continue
						}
						if p.HTTPGet.Port.String() != "metrics" {
							t.Fatalf("httpGet probe on port %s: only the metrics port serves HTTP", p.HTTPGet.Port.String())
						}
						resp, err := http.Get("http://" + d.MetricsAddr + p.HTTPGet.Path)
						if err != nil {
							t.Fatal(err)
						}
						resp.Body.Close()
						if resp.StatusCode != http.StatusOK {
							t.Fatalf("httpGet probe path %s: %s", p.HTTPGet.Path, resp.Status)
						}
					}
					if err := d.Stop(t, syscall.SIGTERM, 30*time.Second); err != nil {
						t.Fatalf("after SIGTERM: %v\n%s", err, d.Log())
					}
				})
			}
		}
	}
}

// TestStreamdRefusesBadPods shows that the run above can fail: a flag or a
// variable streamd does not have, and a config it cannot read.
func TestStreamdRefusesBadPods(t *testing.T) {
	objs, err := render("base")
	if err != nil {
		t.Fatal(err)
	}
	w := objs.workloads()[0]
	for _, tc := range []struct {
		name   string
		mutate func(c *corev1.Container, cm *corev1.ConfigMap)
		want   string
	}{
		{"unknown flag", func(c *corev1.Container, _ *corev1.ConfigMap) {
			c.Args = append(c.Args, "--journal-dir=/var/lib/streamd")
		}, "flag provided but not defined: -journal-dir"},
		{"unknown variable", func(c *corev1.Container, _ *corev1.ConfigMap) {
			c.Env = append(c.Env, corev1.EnvVar{Name: "STREAMD_TLS_CRT", Value: "/etc/streamd/tls/tls.crt"})
		}, "env STREAMD_TLS_CRT: streamd reads no such variable"},
		{"bad config", func(_ *corev1.Container, cm *corev1.ConfigMap) { cm.Data["streamd.yaml"] = "stream:\n  - name: all\n" }, `unknown key "stream" in the file's top level`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := w.pod.Spec.Containers[0].DeepCopy()
			o := *objs
			o.configMaps = []*corev1.ConfigMap{objs.configMaps[0].DeepCopy()}
			tc.mutate(c, o.configMaps[0])
			_, err := startAsPod(t, w, *c, &o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want streamd to refuse with %q", err, tc.want)
			}
		})
	}
}

// secretStandIns are what the operator's Secrets hold, for tests.
func secretStandIns(t *testing.T, pki testpki.Files) map[string]map[string]string {
	read := func(p string) string {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	return map[string]map[string]string{
		"streamd-tls":  {"tls.crt": read(pki.ServerCert), "tls.key": read(pki.ServerKey), "ca.crt": read(pki.CA)},
		"streamd-auth": {"tokens": "k8s-test-token *\n"},
	}
}

type daemon struct {
	*streamdtest.Daemon
	serving string // the line streamd logs when it serves
	conn    *grpc.ClientConn
	// api stands in for the Kubernetes API (STREAMD_KUBE_API), for the
	// consumer groups of replicate: entries with group:.
	api *kubetest.API
}

// podName is the name of the first pod of w, as the downward API gives it.
func podName(w workload) string { return w.name + "-0" }

// streamdEnv returns the STREAMD_* variables streamd reads, from its --help.
func streamdEnv(t *testing.T) map[string]bool {
	t.Helper()
	help, err := exec.Command(streamdBinary, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("streamd --help: %v\n%s", err, help)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`\[\$(STREAMD_[A-Z0-9_]+)\]`).FindAllStringSubmatch(string(help), -1) {
		known[m[1]] = true
	}
	if !known["STREAMD_LISTEN"] {
		t.Fatalf("no STREAMD_LISTEN in streamd --help:\n%s", help)
	}
	return known
}

// startAsPod starts streamd as container c of w would run, its volumes in a
// temporary directory. It returns once streamd serves, or streamd's error.
func startAsPod(t *testing.T, w workload, c corev1.Container, o *objects) (*daemon, error) {
	t.Helper()
	dir := t.TempDir()
	pki, err := testpki.Write(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	secrets := secretStandIns(t, pki)
	for name, keys := range externalSecrets {
		if got := slices.Sorted(maps.Keys(secrets[name])); !isSubset(keys, got) {
			t.Fatalf("stand-in for Secret %s has %v, want %v", name, got, keys)
		}
	}
	mounts := map[string]string{} // mountPath -> directory here
	for _, m := range c.VolumeMounts {
		host := filepath.Join(dir, m.Name)
		if err := os.MkdirAll(host, 0o700); err != nil {
			t.Fatal(err)
		}
		mounts[m.MountPath] = host
		var files map[string]string
		for _, v := range w.pod.Spec.Volumes {
			switch {
			case v.Name != m.Name:
			case v.ConfigMap != nil:
				for _, cm := range o.configMaps {
					if cm.Name == v.ConfigMap.Name {
						files = cm.Data
					}
				}
			case v.Secret != nil:
				files = secrets[v.Secret.SecretName]
			}
		}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(host, name), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A path in the container is the same path under the longest mount.
	local := func(p string) string {
		best := ""
		for mp := range mounts {
			if (p == mp || strings.HasPrefix(p, mp+"/")) && len(mp) > len(best) {
				best = mp
			}
		}
		if best == "" {
			return p
		}
		return mounts[best] + p[len(best):]
	}
	var args []string
	for _, a := range c.Args {
		if flag, val, ok := strings.Cut(a, "="); ok && strings.HasPrefix(flag, "--") {
			a = flag + "=" + local(val)
		}
		args = append(args, a)
	}
	args = append(args, "--listen=127.0.0.1:0", "--metrics-listen=127.0.0.1:0")
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STREAMD_") {
			env = append(env, kv)
		}
	}
	for _, kv := range imageEnv {
		name, val, _ := strings.Cut(kv, "=")
		env = append(env, name+"="+local(val))
	}
	// streamd ignores variables it does not read: a misspelt one would
	// silently leave a setting at its default.
	known := streamdEnv(t)
	defined := map[string]string{} // the container's variables so far, for $(NAME)
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "STREAMD_") && !known[e.Name] {
			return nil, fmt.Errorf("env %s: streamd reads no such variable", e.Name)
		}
		val := local(expand(e.Value, defined))
		if e.ValueFrom != nil {
			switch f := e.ValueFrom.FieldRef; {
			case f != nil && f.FieldPath == "metadata.name":
				val = podName(w)
			case f != nil && f.FieldPath == "metadata.namespace":
				val = "default"
			case f != nil && f.FieldPath == "status.podIP":
				val = "127.0.0.1"
			default:
				t.Fatalf("env %s: this valueFrom is not run by this test; add it", e.Name)
			}
		}
		defined[e.Name] = val
		env = append(env, e.Name+"="+val)
	}
	api := kubetest.New()
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	env = append(env, "STREAMD_KUBE_API="+srv.URL)
	sd, err := streamdtest.Run(streamdtest.Options{Args: args, Metrics: true, Env: env, Dir: dir})
	if sd != nil {
		t.Cleanup(sd.Kill)
	}
	if err != nil {
		return nil, err
	}
	d := &daemon{Daemon: sd, api: api}
	// streamd logs the line after it wrote its ready file.
	if !testwait.Until(10*time.Second, func() bool {
		for line := range strings.Lines(d.Log()) {
			if strings.Contains(line, "streamd serving") {
				d.serving = line
				return true
			}
		}
		return false
	}) {
		return nil, fmt.Errorf("streamd %q is ready but did not log that it serves:\n%s", args, d.Log())
	}
	creds := dialopts.Client{CAName: "ca", CertName: "cert", KeyName: "key"}
	if flagValue(c, "tls-cert", "") != "" {
		creds.CA = pki.CA
		if flagValue(c, "tls-client-ca", "") != "" {
			creds.Cert, creds.Key = pki.ClientCert, pki.ClientKey
		}
	}
	opts, err := creds.Options()
	if err != nil {
		t.Fatal(err)
	}
	if d.conn, err = grpc.NewClient(d.Addr, opts...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.conn.Close() })
	return d, nil
}

func isSubset(want, have []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// expand replaces $(NAME) in v with the value of a variable defined before
// it, as the kubelet does; a reference to another name stays as written.
func expand(v string, defined map[string]string) string {
	return refPattern.ReplaceAllStringFunc(v, func(ref string) string {
		if val, ok := defined[ref[2:len(ref)-1]]; ok {
			return val
		}
		return ref
	})
}

var refPattern = regexp.MustCompile(`\$\([A-Za-z_][A-Za-z0-9_]*\)`)

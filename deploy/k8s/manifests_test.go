package k8s

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"

	"github.com/streamd/streamd/internal/bytesize"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// roots are the kustomizations meant for `kubectl apply -k`; every other
// kustomization must be used by one of them.
var roots = []string{"base", "overlays/production", "overlays/shared-replication", "overlays/shared-entities", "sidecar"}

// externalSecrets are the Secrets the operator creates (deploy/README.md,
// "TLS and tokens"), with the keys streamd reads from each.
var externalSecrets = map[string][]string{
	"streamd-tls":  {"tls.crt", "tls.key"},
	"streamd-auth": {"tokens"},
}

// What the image provides (deploy/image): its streamd listens here unless
// the pod says otherwise.
const (
	imageDataDir       = "/var/lib/streamd"
	imageListen        = ":7070"
	imageMetricsListen = ":9464"
)

func TestKustomizationsListEveryFile(t *testing.T) {
	for _, err := range checkFiles(".") {
		t.Error(err)
	}
}

func TestManifests(t *testing.T) {
	for _, root := range roots {
		t.Run(root, func(t *testing.T) {
			objs, err := render(root)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs.workloads()) == 0 {
				t.Fatal("no workload")
			}
			for _, err := range check(objs) {
				t.Error(err)
			}
		})
	}
}

// kustomization is the part of kustomize's file format the manifests use;
// decoding is strict, so a new feature must be added here (and checked).
type kustomization struct {
	APIVersion         string          `json:"apiVersion"`
	Kind               string          `json:"kind"`
	Namespace          string          `json:"namespace,omitempty"`
	Resources          []string        `json:"resources,omitempty"`
	Components         []string        `json:"components,omitempty"`
	Patches            []patch         `json:"patches,omitempty"`
	ConfigMapGenerator []generator     `json:"configMapGenerator,omitempty"`
	Images             []imageOverride `json:"images,omitempty"`
	Replicas           []replicaCount  `json:"replicas,omitempty"`
}

type replicaCount struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
}

type patch struct {
	Path   string `json:"path"`
	Target *struct {
		Kind string `json:"kind,omitempty"`
		Name string `json:"name,omitempty"`
	} `json:"target,omitempty"`
}

type generator struct {
	Name     string   `json:"name"`
	Behavior string   `json:"behavior,omitempty"`
	Files    []string `json:"files"`
}

type imageOverride struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
}

// checkFiles checks the tree under dir: every directory with YAML has a
// kustomization.yaml that lists exactly its files, every directory it names
// is a kustomization, and every kustomization is a root or used by another.
func checkFiles(dir string) []error {
	var errs []error
	used := map[string]bool{}
	var found []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		files := map[string]bool{}
		for _, e := range entries {
			if !e.IsDir() && !strings.HasSuffix(e.Name(), ".go") {
				files[e.Name()] = true
			}
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if !files["kustomization.yaml"] {
			if len(files) > 0 {
				errs = append(errs, fmt.Errorf("%s: files %v but no kustomization.yaml", rel, slices.Sorted(maps.Keys(files))))
			}
			return nil
		}
		found = append(found, rel)
		k, err := readKustomization(filepath.Join(p, "kustomization.yaml"))
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		listed := map[string]bool{"kustomization.yaml": true}
		var dirs []string
		for _, r := range k.Resources {
			if fi, err := os.Stat(filepath.Join(p, r)); err == nil && fi.IsDir() {
				dirs = append(dirs, r)
			} else {
				listed[r] = true
			}
		}
		dirs = append(dirs, k.Components...)
		for _, pt := range k.Patches {
			listed[pt.Path] = true
		}
		for _, g := range k.ConfigMapGenerator {
			for _, f := range g.Files {
				listed[f] = true
			}
		}
		for f := range listed {
			if !files[f] {
				errs = append(errs, fmt.Errorf("%s/kustomization.yaml names %s, which is not in %s", rel, f, rel))
			}
		}
		for f := range files {
			if !listed[f] {
				errs = append(errs, fmt.Errorf("%s/%s is not named in %s/kustomization.yaml", rel, f, rel))
			}
		}
		for _, d := range dirs {
			target := filepath.ToSlash(filepath.Clean(filepath.Join(rel, d)))
			if _, err := os.Stat(filepath.Join(dir, target, "kustomization.yaml")); err != nil {
				errs = append(errs, fmt.Errorf("%s/kustomization.yaml names %s, which has no kustomization.yaml", rel, d))
			}
			used[target] = true
		}
		return nil
	})
	if err != nil {
		return append(errs, err)
	}
	for _, f := range found {
		if !used[f] && !slices.Contains(roots, f) {
			errs = append(errs, fmt.Errorf("%s: no kustomization uses it and it is not one of the roots %v", f, roots))
		}
	}
	for _, r := range roots {
		if !slices.Contains(found, r) {
			errs = append(errs, fmt.Errorf("root %s has no kustomization.yaml", r))
		}
	}
	return errs
}

func readKustomization(path string) (kustomization, error) {
	var k kustomization
	raw, err := os.ReadFile(path)
	if err != nil {
		return k, err
	}
	if err := decodeStrict(raw, &k); err != nil {
		return k, fmt.Errorf("%s: %w", path, err)
	}
	want := map[string]string{"Kustomization": "kustomize.config.k8s.io/v1beta1", "Component": "kustomize.config.k8s.io/v1alpha1"}
	if want[k.Kind] == "" || want[k.Kind] != k.APIVersion {
		return k, fmt.Errorf("%s: %s %s, want a Kustomization or a Component", path, k.APIVersion, k.Kind)
	}
	return k, nil
}

// objects are the rendered output of one kustomization, decoded.
type objects struct {
	statefulSets    []*appsv1.StatefulSet
	services        []*corev1.Service
	pdbs            []*policyv1.PodDisruptionBudget
	configMaps      []*corev1.ConfigMap
	serviceMonitors []*serviceMonitor
	networkPolicies []*networkingv1.NetworkPolicy
	serviceAccounts []*corev1.ServiceAccount
	roles           []*rbacv1.Role
	roleBindings    []*rbacv1.RoleBinding
}

// serviceMonitor is the part of the prometheus-operator's ServiceMonitor
// (monitoring.coreos.com/v1) the manifests use; decoding is strict.
type serviceMonitor struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Selector  metav1.LabelSelector `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path,omitempty"`
			Interval string `json:"interval,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// workload is a pod template with what the checks need of its owner.
type workload struct {
	kind, name string
	selector   *metav1.LabelSelector
	pod        corev1.PodTemplateSpec
	claims     []string // volumeClaimTemplates
}

func (o *objects) workloads() []workload {
	var ws []workload
	for _, s := range o.statefulSets {
		w := workload{kind: "StatefulSet", name: s.Name, selector: s.Spec.Selector, pod: s.Spec.Template}
		for _, c := range s.Spec.VolumeClaimTemplates {
			w.claims = append(w.claims, c.Name)
		}
		ws = append(ws, w)
	}
	return ws
}

// render builds the kustomization in dir as `kubectl kustomize` does and
// decodes every object strictly.
func render(dir string) (*objects, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	objs := &objects{}
	for _, r := range m.Resources() {
		raw, err := r.AsYAML()
		if err != nil {
			return nil, err
		}
		if err := objs.add(raw); err != nil {
			return nil, fmt.Errorf("%s: %s %s: %w", dir, r.GetKind(), r.GetName(), err)
		}
	}
	return objs, nil
}

// add decodes one object strictly into its type: an unknown or duplicate
// field, or a kind the manifests are not expected to hold, is an error.
func (o *objects) add(raw []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 StatefulSet":
		s := &appsv1.StatefulSet{}
		o.statefulSets, obj = append(o.statefulSets, s), s
	case "v1 Service":
		s := &corev1.Service{}
		o.services, obj = append(o.services, s), s
	case "policy/v1 PodDisruptionBudget":
		p := &policyv1.PodDisruptionBudget{}
		o.pdbs, obj = append(o.pdbs, p), p
	case "v1 ConfigMap":
		c := &corev1.ConfigMap{}
		o.configMaps, obj = append(o.configMaps, c), c
	case "networking.k8s.io/v1 NetworkPolicy":
		n := &networkingv1.NetworkPolicy{}
		o.networkPolicies, obj = append(o.networkPolicies, n), n
	case "v1 ServiceAccount":
		a := &corev1.ServiceAccount{}
		o.serviceAccounts, obj = append(o.serviceAccounts, a), a
	case "rbac.authorization.k8s.io/v1 Role":
		r := &rbacv1.Role{}
		o.roles, obj = append(o.roles, r), r
	case "rbac.authorization.k8s.io/v1 RoleBinding":
		b := &rbacv1.RoleBinding{}
		o.roleBindings, obj = append(o.roleBindings, b), b
	case "monitoring.coreos.com/v1 ServiceMonitor":
		s := &serviceMonitor{}
		o.serviceMonitors, obj = append(o.serviceMonitors, s), s
	default:
		return fmt.Errorf("unexpected kind %s %s (add it to the validation)", tm.APIVersion, tm.Kind)
	}
	return decodeStrict(raw, obj)
}

// decodeStrict decodes YAML into obj as the API server decodes JSON: field
// names are case-sensitive, and an unknown or a repeated field is an error.
// (encoding/json, under sigs.k8s.io/yaml's UnmarshalStrict, would take
// "tcpsocket" for "tcpSocket".)
func decodeStrict(raw []byte, obj any) error {
	j, err := yaml.YAMLToJSONStrict(raw)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, obj, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// check checks the references between the objects and the settings every
// pod must have.
func check(o *objects) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	configMaps := map[string]*corev1.ConfigMap{}
	for _, c := range o.configMaps {
		configMaps[c.Name] = c
	}
	usedConfigMaps := map[string]bool{}
	ws := o.workloads()
	for _, w := range ws {
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.pod.Labels)) {
			fail("%s %s: selector %v does not match its pod labels %v (%v)", w.kind, w.name, w.selector, w.pod.Labels, err)
		}
		for _, err := range checkPod(w, configMaps, usedConfigMaps) {
			fail("%s %s: %w", w.kind, w.name, err)
		}
	}
	for _, s := range o.statefulSets {
		svc := findService(o.services, s.Spec.ServiceName)
		if svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone {
			fail("StatefulSet %s: serviceName %q is not a headless Service here", s.Name, s.Spec.ServiceName)
		} else if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(s.Spec.Template.Labels)) {
			fail("StatefulSet %s: its headless Service %s does not select its pods", s.Name, svc.Name)
		}
	}
	for name := range configMaps {
		if !usedConfigMaps[name] {
			fail("ConfigMap %s: no pod mounts it", name)
		}
	}
	for _, svc := range o.services {
		pods := selected(ws, labels.SelectorFromSet(svc.Spec.Selector))
		if len(svc.Spec.Selector) == 0 || len(pods) == 0 {
			fail("Service %s: selector %v selects no pod here", svc.Name, svc.Spec.Selector)
			continue
		}
		for _, p := range svc.Spec.Ports {
			for _, w := range pods {
				if !hasPort(allContainers(w.pod.Spec), p.TargetPort) {
					fail("Service %s: port %s targets %s, which no container of %s %s has", svc.Name, p.Name, p.TargetPort.String(), w.kind, w.name)
				}
			}
		}
	}
	for _, pdb := range o.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil || sel.Empty() || len(selected(ws, sel)) == 0 {
			fail("PodDisruptionBudget %s: selector %v selects no pod here (%v)", pdb.Name, pdb.Spec.Selector, err)
		}
	}
	for _, sm := range o.serviceMonitors {
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil || sel.Empty() {
			fail("ServiceMonitor %s: bad selector %v (%v)", sm.Metadata.Name, sm.Spec.Selector, err)
			continue
		}
		for _, ep := range sm.Spec.Endpoints {
			n := 0
			for _, svc := range o.services {
				if sel.Matches(labels.Set(svc.Labels)) && slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					n++
				}
			}
			if n == 0 {
				fail("ServiceMonitor %s: no Service it selects has a port named %q", sm.Metadata.Name, ep.Port)
			}
		}
	}
	errs = append(errs, checkPolicies(o)...)
	return errs
}

func checkPod(w workload, configMaps map[string]*corev1.ConfigMap, used map[string]bool) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	spec := w.pod.Spec
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		fail("pod securityContext must set runAsNonRoot and a non-root runAsUser")
	}
	volumes := map[string]bool{}
	for _, c := range w.claims {
		volumes[c] = true
	}
	for _, v := range spec.Volumes {
		volumes[v.Name] = true
		switch {
		case v.ConfigMap != nil:
			if configMaps[v.ConfigMap.Name] == nil {
				fail("volume %s: ConfigMap %s is not in the manifests", v.Name, v.ConfigMap.Name)
			}
			used[v.ConfigMap.Name] = true
		case v.Secret != nil:
			if externalSecrets[v.Secret.SecretName] == nil {
				fail("volume %s: Secret %s is not one deploy/README.md tells to create (%v)", v.Name, v.Secret.SecretName, slices.Sorted(maps.Keys(externalSecrets)))
			}
		case v.Projected != nil:
			// A service account token for one container: the token, the
			// cluster's CA (kube-root-ca.crt, in every namespace) and the
			// namespace, as automountServiceAccountToken would mount them.
			for _, src := range v.Projected.Sources {
				if src.ServiceAccountToken == nil && src.DownwardAPI == nil && (src.ConfigMap == nil || src.ConfigMap.Name != "kube-root-ca.crt") {
					fail("volume %s: a projected source other than a service account token, kube-root-ca.crt or the downward API", v.Name)
				}
			}
		default:
			fail("volume %s: only ConfigMap, Secret and service account token volumes are checked; add this kind to the test", v.Name)
		}
	}
	streamd := 0
	for _, c := range spec.InitContainers {
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			fail("init container %s: only sidecars (restartPolicy: Always) are expected", c.Name)
		}
	}
	for _, c := range allContainers(spec) {
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				fail("container %s: mount %s names no volume or volumeClaimTemplate", c.Name, m.Name)
			}
		}
		for what, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "readinessProbe": c.ReadinessProbe, "livenessProbe": c.LivenessProbe} {
			if p == nil {
				continue
			}
			var port intstr.IntOrString
			switch {
			case p.GRPC != nil:
				port = intstr.FromInt32(p.GRPC.Port)
			case p.TCPSocket != nil:
				port = p.TCPSocket.Port
			case p.HTTPGet != nil:
				port = p.HTTPGet.Port
			default:
				fail("container %s: %s is neither grpc, tcpSocket nor httpGet", c.Name, what)
				continue
			}
			if !hasPort([]corev1.Container{c}, port) {
				fail("container %s: %s port %s is not a port of the container", c.Name, what, port.String())
			}
		}
		sc := c.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			fail("container %s: securityContext must set readOnlyRootFilesystem: true and allowPrivilegeEscalation: false", c.Name)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
			fail("container %s: needs cpu and memory requests and a memory limit", c.Name)
		}
		if c.Name == "streamd" {
			streamd++
			errs = append(errs, checkStreamdContainer(c)...)
			// The journal must outlive the pod: on a claim of its own.
			dataDir := flagValue(c, "data-dir", imageDataDir)
			if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == dataDir && slices.Contains(w.claims, m.Name) }) {
				fail("container streamd: --data-dir %s is not the mount of a volumeClaimTemplate", dataDir)
			}
		}
	}
	if streamd != 1 {
		fail("%d containers named streamd, want 1", streamd)
	}
	return errs
}

// checkStreamdContainer checks that the addresses streamd listens on are the
// container's grpc and metrics ports, and that it runs the streamd image.
func checkStreamdContainer(c corev1.Container) []error {
	var errs []error
	image, _, _ := strings.Cut(c.Image, ":")
	if image != "streamd" && !strings.HasSuffix(image, "/streamd") {
		errs = append(errs, fmt.Errorf("container streamd: image %s is not the streamd image", c.Image))
	}
	for _, l := range []struct{ flag, fallback, port string }{{"listen", imageListen, "grpc"}, {"metrics-listen", imageMetricsListen, "metrics"}} {
		addr := flagValue(c, l.flag, l.fallback)
		_, port, err := net.SplitHostPort(addr)
		if n, _ := strconv.Atoi(port); err != nil || n == 0 || containerPort(c, l.port) != int32(n) {
			errs = append(errs, fmt.Errorf("container streamd: --%s %q is not its %q containerPort", l.flag, addr, l.port))
		}
	}
	// --memory is what streamd keeps its memory to; the rest of the limit
	// is for the files it maps (TestStreamdMemoryWithinPodLimit measures).
	limit := c.Resources.Limits.Memory().Value()
	budget, err := bytesize.Parse(flagValue(c, "memory", "256MiB"))
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("container streamd: --memory: %w", err))
	case int64(budget) > limit*3/4:
		errs = append(errs, fmt.Errorf("container streamd: --memory %v must be at most three quarters of the memory limit (%d MiB)", budget, limit>>20))
	}
	return errs
}

// flagValue is what streamd sees for --name: the last --name=value argument,
// else $STREAMD_NAME from the container's env, else fallback (the image's).
func flagValue(c corev1.Container, name, fallback string) string {
	v := fallback
	env := "STREAMD_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
	for _, e := range c.Env {
		if e.Name == env {
			v = e.Value
		}
	}
	for _, a := range c.Args {
		if val, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			v = val
		}
	}
	return v
}

func allContainers(spec corev1.PodSpec) []corev1.Container {
	return append(slices.Clone(spec.InitContainers), spec.Containers...)
}

func hasPort(cs []corev1.Container, port intstr.IntOrString) bool {
	for _, c := range cs {
		for _, p := range c.Ports {
			if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
				return true
			}
		}
	}
	return false
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func selected(ws []workload, sel labels.Selector) []workload {
	var out []workload
	for _, w := range ws {
		if sel.Matches(labels.Set(w.pod.Labels)) {
			out = append(out, w)
		}
	}
	return out
}

func findService(svcs []*corev1.Service, name string) *corev1.Service {
	for _, s := range svcs {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// TestValidationRejects shows that each check can fail: the manifests are
// broken one way at a time and the validation must say what is wrong.
func TestValidationRejects(t *testing.T) {
	base, err := render("base")
	if err != nil {
		t.Fatal(err)
	}
	if errs := check(base); len(errs) > 0 {
		t.Fatalf("base: %v", errs)
	}
	t.Run("unknown field", func(t *testing.T) {
		raw, err := os.ReadFile("base/statefulset.yaml")
		if err != nil {
			t.Fatal(err)
		}
		for typo, want := range map[string]string{
			"readinesProbe:":  `unknown field "spec.template.spec.containers[0].readinesProbe"`,
			"readinessprobe:": `unknown field "spec.template.spec.containers[0].readinessprobe"`,
		} {
			bad := strings.Replace(string(raw), "readinessProbe:", typo, 1)
			if err := (&objects{}).add([]byte(bad)); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s decoded: %v", typo, err)
			}
		}
		twice := strings.Replace(string(raw), "  replicas: 1\n", "  replicas: 1\n  replicas: 2\n", 1)
		if err := (&objects{}).add([]byte(twice)); err == nil || !strings.Contains(err.Error(), "replicas") {
			t.Errorf("a repeated field decoded: %v", err)
		}
	})
	for _, tc := range []struct {
		name   string
		mutate func(o *objects)
		want   string
	}{
		{"service selector", func(o *objects) { o.services[0].Spec.Selector = map[string]string{"app.kubernetes.io/name": "stremd"} }, "selects no pod"},
		{"pdb selector", func(o *objects) { o.pdbs[0].Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "other" }, "PodDisruptionBudget streamd: selector"},
		{"probe port", func(o *objects) { pod(o).Containers[0].ReadinessProbe.GRPC.Port = 7071 }, "readinessProbe port 7071 is not a port"},
		{"listen port", func(o *objects) { pod(o).Containers[0].Args[1] = "--listen=:7071" }, `--listen ":7071" is not its "grpc" containerPort`},
		{"target port", func(o *objects) { o.services[0].Spec.Ports[0].TargetPort = intstr.FromString("grcp") }, "targets grcp"},
		{"mount", func(o *objects) { pod(o).Containers[0].VolumeMounts[0].Name = "journal" }, "mount journal names no volume"},
		{"configmap", func(o *objects) { pod(o).Volumes[0].ConfigMap.Name = "streamd-config" }, "ConfigMap streamd-config is not in the manifests"},
		{"secret", func(o *objects) {
			pod(o).Volumes = append(pod(o).Volumes, corev1.Volume{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "tls"}}})
		}, "Secret tls is not one deploy/README.md tells to create"},
		{"root filesystem", func(o *objects) { pod(o).Containers[0].SecurityContext.ReadOnlyRootFilesystem = nil }, "readOnlyRootFilesystem"},
		{"data dir", func(o *objects) { pod(o).Containers[0].Args[0] = "--data-dir=/tmp/journal" }, "--data-dir /tmp/journal is not the mount of a volumeClaimTemplate"},
		{"memory over the limit", func(o *objects) {
			c := &pod(o).Containers[0]
			c.Args = append(c.Args, "--memory="+strconv.FormatInt(c.Resources.Limits.Memory().Value(), 10))
		}, "must be at most three quarters of the memory limit"},
		{"memory unreadable", func(o *objects) { c := &pod(o).Containers[0]; c.Args = append(c.Args, "--memory=768M") }, `--memory: bytesize`},
		{"headless service", func(o *objects) { o.statefulSets[0].Spec.ServiceName = "streamd" }, `serviceName "streamd" is not a headless Service`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := render("base")
			if err != nil {
				t.Fatal(err)
			}
			tc.mutate(o)
			errs := check(o)
			if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), tc.want) }) {
				t.Fatalf("got %v, want an error with %q", errs, tc.want)
			}
		})
	}
	t.Run("file not listed", func(t *testing.T) {
		dir := t.TempDir()
		for _, root := range roots {
			if err := os.CopyFS(filepath.Join(dir, root), os.DirFS(root)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.CopyFS(filepath.Join(dir, "components"), os.DirFS("components")); err != nil {
			t.Fatal(err)
		}
		if errs := checkFiles(dir); len(errs) > 0 {
			t.Fatalf("the copy: %v", errs)
		}
		if err := os.WriteFile(filepath.Join(dir, "base", "extra.yaml"), []byte("{}"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, "base", "poddisruptionbudget.yaml")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "components", "tls"), filepath.Join(dir, "components", "mtls")); err != nil {
			t.Fatal(err)
		}
		errs := errors.Join(checkFiles(dir)...)
		for _, want := range []string{
			"base/extra.yaml is not named",
			"names poddisruptionbudget.yaml, which is not in base",
			"names ../../components/tls, which has no kustomization.yaml",
			"components/mtls: no kustomization uses it",
		} {
			if errs == nil || !strings.Contains(errs.Error(), want) {
				t.Errorf("got %v, want an error with %q", errs, want)
			}
		}
	})
}

func pod(o *objects) *corev1.PodSpec { return &o.statefulSets[0].Spec.Template.Spec }

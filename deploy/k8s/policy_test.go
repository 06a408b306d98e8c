package k8s

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/streamd/streamd/internal/bytesize"
)

// consumerGroupRules are the API calls consumer/group makes (deploy/README.md
// section 7): a Role for its members must allow at least these.
var consumerGroupRules = map[string][]string{
	"coordination.k8s.io/leases": {"get", "list", "create", "update", "delete"},
	"/configmaps":                {"get", "create", "update"},
}

// checkPolicies checks NetworkPolicies, RBAC, scraping and retention.
func checkPolicies(o *objects) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	ws := o.workloads()
	for _, np := range o.networkPolicies {
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		pods := selected(ws, sel)
		if err != nil || sel.Empty() || len(pods) == 0 {
			fail("NetworkPolicy %s: podSelector %v selects no pod here (%v)", np.Name, np.Spec.PodSelector, err)
			continue
		}
		for _, rule := range np.Spec.Ingress {
			for _, p := range rule.Ports {
				for _, w := range pods {
					if p.Port == nil || !hasPort(allContainers(w.pod.Spec), *p.Port) {
						fail("NetworkPolicy %s: port %v is no container port of %s %s", np.Name, p.Port, w.kind, w.name)
					}
				}
			}
		}
	}
	for _, w := range ws {
		if !slices.ContainsFunc(o.networkPolicies, func(np *networkingv1.NetworkPolicy) bool {
			sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			return err == nil && sel.Matches(labels.Set(w.pod.Labels))
		}) {
			fail("%s %s: no NetworkPolicy selects its pods (the metrics port has no authentication)", w.kind, w.name)
		}
	}
	roles := map[string]*rbacv1.Role{}
	for _, r := range o.roles {
		roles[r.Name] = r
	}
	accounts := map[string]bool{}
	for _, a := range o.serviceAccounts {
		accounts[a.Name] = true
	}
	bound := map[string]bool{}
	for _, b := range o.roleBindings {
		if b.RoleRef.Kind != "Role" || roles[b.RoleRef.Name] == nil {
			fail("RoleBinding %s: roleRef %s %s is not a Role here", b.Name, b.RoleRef.Kind, b.RoleRef.Name)
		}
		for _, s := range b.Subjects {
			if s.Kind != "ServiceAccount" || !accounts[s.Name] {
				fail("RoleBinding %s: subject %s %s is not a ServiceAccount here", b.Name, s.Kind, s.Name)
			}
			bound[s.Name] = true
		}
	}
	for _, r := range o.roles {
		if strings.HasSuffix(r.Name, "consumer-group") {
			for res, verbs := range consumerGroupRules {
				group, resource, _ := strings.Cut(res, "/")
				for _, v := range verbs {
					if !allows(r.Rules, group, resource, v) {
						fail("Role %s: does not allow %s %s, which consumer/group needs", r.Name, v, res)
					}
				}
			}
		}
	}
	for _, w := range ws {
		if sa := w.pod.Spec.ServiceAccountName; sa != "" && (!accounts[sa] || !bound[sa]) {
			fail("%s %s: serviceAccountName %s is not a ServiceAccount bound to a Role here", w.kind, w.name, sa)
		}
	}
	// One scrape method: a ServiceMonitor's pods carry no scrape annotation.
	for _, sm := range o.serviceMonitors {
		sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
		if err != nil {
			continue
		}
		for _, svc := range o.services {
			if !sel.Matches(labels.Set(svc.Labels)) {
				continue
			}
			for _, w := range selected(ws, labels.SelectorFromSet(svc.Spec.Selector)) {
				if w.pod.Annotations["prometheus.io/scrape"] == "true" {
					fail("%s %s: scraped twice, by ServiceMonitor %s and by its prometheus.io/scrape annotation", w.kind, w.name, sm.Metadata.Name)
				}
			}
		}
	}
	return append(errs, checkRetention(o)...)
}

func allows(rules []rbacv1.PolicyRule, group, resource, verb string) bool {
	return slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
		return slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb)
	})
}

// checkRetention: every streamd keeps its journal within half its volume
// (--retention-max-bytes): Badger's compactions write new tables before
// removing the old ones, and the WAL and the --min-free-bytes reserve need
// room too.
func checkRetention(o *objects) []error {
	var errs []error
	for _, s := range o.statefulSets {
		for _, c := range allContainers(s.Spec.Template.Spec) {
			if c.Name != "streamd" {
				continue
			}
			dataDir := flagValue(c, "data-dir", imageDataDir)
			var size resource.Quantity
			for _, m := range c.VolumeMounts {
				for _, t := range s.Spec.VolumeClaimTemplates {
					if m.MountPath == dataDir && t.Name == m.Name {
						size = t.Spec.Resources.Requests[corev1.ResourceStorage]
					}
				}
			}
			if size.IsZero() {
				continue // checkPod says the data directory must be a claim
			}
			v := flagValue(c, "retention-max-bytes", "")
			if v == "" {
				errs = append(errs, fmt.Errorf("StatefulSet %s: streamd sets no --retention-max-bytes for its %s volume", s.Name, size.String()))
				continue
			}
			n, err := bytesize.Parse(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("StatefulSet %s: --retention-max-bytes %q: %v", s.Name, v, err))
				continue
			}
			if n <= 0 || 2*int64(n) > size.Value() {
				errs = append(errs, fmt.Errorf("StatefulSet %s: --retention-max-bytes %s is not within half its %s volume", s.Name, v, size.String()))
			}
		}
	}
	return errs
}

func TestPolicyValidationRejects(t *testing.T) {
	for _, tc := range []struct {
		root, want string
		breakIt    func(o *objects)
	}{
		{"base", "no NetworkPolicy selects its pods", func(o *objects) { o.networkPolicies = nil }},
		{"base", "port metrics-typo is no container port", func(o *objects) {
			o.networkPolicies[0].Spec.Ingress[1].Ports[0].Port = ptr(intstr.FromString("metrics-typo"))
		}},
		{"overlays/production", "scraped twice", func(o *objects) {
			o.statefulSets[0].Spec.Template.Annotations = map[string]string{"prometheus.io/scrape": "true"}
		}},
		{"base", "sets no --retention-max-bytes", func(o *objects) {
			c := &pod(o).Containers[0]
			c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--retention-max-bytes=") })
		}},
		{"base", "is not within half its 10Gi volume", func(o *objects) {
			c := &pod(o).Containers[0]
			c.Args = append(c.Args, "--retention-max-bytes=8GiB")
		}},
		{"sidecar", "does not allow delete coordination.k8s.io/leases", func(o *objects) {
			o.roles[0].Rules[0].Verbs = []string{"get", "list", "create", "update"}
		}},
		{"sidecar", "subject ServiceAccount someone is not a ServiceAccount here", func(o *objects) {
			o.roleBindings[0].Subjects[0].Name = "someone"
		}},
	} {
		t.Run(tc.want, func(t *testing.T) {
			o, err := render(tc.root)
			if err != nil {
				t.Fatal(err)
			}
			if errs := check(o); len(errs) > 0 {
				t.Fatalf("%s before the change: %v", tc.root, errs)
			}
			tc.breakIt(o)
			var msgs []string
			for _, err := range check(o) {
				msgs = append(msgs, err.Error())
			}
			if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, tc.want) }) {
				t.Fatalf("errors %q do not say %q", msgs, tc.want)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

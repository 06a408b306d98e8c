// Package k8s holds streamd's Kubernetes manifests (kustomize: base/,
// components/, overlays/, sidecar/; see deploy/README.md) and, in its tests,
// their offline validation: every kustomization is rendered as `kubectl
// kustomize` would, every object is decoded strictly into the k8s.io/api types
// (an unknown field is an error), the references between objects are checked
// (selectors, ports, volumes, ConfigMaps, Secrets, NetworkPolicies, RBAC), one
// scrape method per pod and retention within the volume are checked, and the
// streamd command line of every pod is run against a real streamd with the
// files it mounts. With $STREAMD_KUSTOMIZE, the kustomize binary's output is
// validated the same way.
//
// The package has no Go API.
package k8s

// Package k8s holds streamd's Kubernetes manifests (kustomize: base/,
// components/, overlays/, sidecar/; see deploy/README.md) and, in its tests,
// their offline validation: every kustomization is rendered as `kubectl
// kustomize` would, every object is decoded strictly into the k8s.io/api types
// (an unknown field is an error), the references between objects are checked
// (selectors, ports, volumes, ConfigMaps, Secrets), and the streamd command
// line of every pod is run against a real streamd with the files it mounts.
//
// The package has no Go API.
package k8s

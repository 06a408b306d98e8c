package k8s

import (
	"bytes"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/kio"
)

// TestKustomizeBuild renders every root with the kustomize binary named by
// $STREAMD_KUSTOMIZE (CI installs it; skipped without) and runs the same
// validation on its output as on the library's, which must hold the same
// objects.
func TestKustomizeBuild(t *testing.T) {
	bin := os.Getenv("STREAMD_KUSTOMIZE")
	if bin == "" {
		t.Skip("set STREAMD_KUSTOMIZE to a kustomize binary to check its output (.ci/run does)")
	}
	for _, root := range roots {
		t.Run(root, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := exec.Command(bin, "build", root)
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("kustomize build %s: %v\n%s", root, err, stderr.Bytes())
			}
			nodes, err := (&kio.ByteReader{Reader: bytes.NewReader(out), OmitReaderAnnotations: true}).Read()
			if err != nil {
				t.Fatal(err)
			}
			objs := &objects{}
			var built []string
			for _, n := range nodes {
				raw, err := n.MarshalJSON()
				if err != nil {
					t.Fatal(err)
				}
				if err := objs.add(raw); err != nil {
					t.Errorf("%s %s: %v", n.GetKind(), n.GetName(), err)
				}
				built = append(built, n.GetKind()+"/"+n.GetName())
			}
			for _, err := range check(objs) {
				t.Error(err)
			}
			lib, err := renderedNames(root)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(built)
			if !slices.Equal(built, lib) {
				t.Errorf("kustomize build %s gives %s; the library gives %s", root, strings.Join(built, ", "), strings.Join(lib, ", "))
			}
		})
	}
}

// renderedNames are the kind/name of the objects the kustomize library
// renders from root, sorted.
func renderedNames(root string) ([]string, error) {
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), root)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, r := range m.Resources() {
		names = append(names, r.GetKind()+"/"+r.GetName())
	}
	slices.Sort(names)
	return names, nil
}

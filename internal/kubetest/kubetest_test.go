package kubetest

import (
	"context"
	"net/http/httptest"
	"testing"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// The same semantics through client-go over HTTP and through the fake
// clientset: create, get, list by label, update with conflicts, delete with
// preconditions.
func TestAPI(t *testing.T) {
	srv := httptest.NewServer(New())
	defer srv.Close()
	overHTTP, err := kubernetes.NewForConfig(&rest.Config{Host: srv.URL, ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]kubernetes.Interface{"http": overHTTP, "fake": New().Clientset()} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			leases := c.CoordinationV1().Leases("ns")
			holder := "pod-a"
			l, err := leases.Create(ctx, &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: "g-a", Labels: map[string]string{"group": "g"}, Annotations: map[string]string{"k": "v"}},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if l.UID == "" || l.ResourceVersion == "" || l.Namespace != "ns" || *l.Spec.HolderIdentity != holder || l.Annotations["k"] != "v" {
				t.Fatalf("created %+v", l)
			}
			if _, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "g-a"}}, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
				t.Errorf("second create: %v, want AlreadyExists", err)
			}
			if _, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "other"}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			list, err := leases.List(ctx, metav1.ListOptions{LabelSelector: "group=g"})
			if err != nil || len(list.Items) != 1 || list.Items[0].Name != "g-a" {
				t.Fatalf("list by label: %v %v", list, err)
			}
			l.Annotations["k"] = "w"
			l2, err := leases.Update(ctx, l, metav1.UpdateOptions{})
			if err != nil || l2.ResourceVersion == l.ResourceVersion || l2.UID != l.UID || l2.Annotations["k"] != "w" {
				t.Fatalf("update: %+v %v", l2, err)
			}
			if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
				t.Errorf("update from an old resourceVersion: %v, want Conflict", err)
			}
			old := l.ResourceVersion
			if err := leases.Delete(ctx, "g-a", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &old}}); !apierrors.IsConflict(err) {
				t.Errorf("delete with an old resourceVersion: %v, want Conflict", err)
			}
			uid := l.UID
			if err := leases.Delete(ctx, "g-a", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &l2.ResourceVersion}}); err != nil {
				t.Fatal(err)
			}
			if _, err := leases.Get(ctx, "g-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("get after delete: %v, want NotFound", err)
			}
			if _, err := leases.Update(ctx, l2, metav1.UpdateOptions{}); !apierrors.IsNotFound(err) {
				t.Errorf("update after delete: %v, want NotFound", err)
			}

			cms := c.CoreV1().ConfigMaps("ns")
			cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "g-positions"}, Data: map[string]string{"a": "1"}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := cms.Get(ctx, "g-positions", metav1.GetOptions{})
			if err != nil || got.Data["a"] != "1" || got.ResourceVersion != cm.ResourceVersion {
				t.Fatalf("get: %+v %v", got, err)
			}
			got.Data["a"] = "2"
			if _, err := cms.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
				t.Errorf("ConfigMap update from an old resourceVersion: %v, want Conflict", err)
			}
		})
	}
}

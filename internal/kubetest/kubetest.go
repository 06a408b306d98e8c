// Package kubetest is an in-memory stand-in for the Kubernetes API server's
// storage of Leases (coordination.k8s.io/v1) and ConfigMaps (v1), for tests
// of code that coordinates through them (consumer/group). It keeps what the
// client-go fake clientset's object tracker does not: optimistic
// concurrency. Every write bumps a resourceVersion; an update naming an old
// resourceVersion or another UID is a Conflict, and so is a delete whose
// preconditions do not hold; create of an existing name is AlreadyExists.
//
// The same store is reached two ways: as a reactor of a fake clientset
// (Clientset), and over HTTP with JSON (ServeHTTP: GET, LIST with a label
// selector, POST, PUT, DELETE) for processes that use a rest.Config with the
// server's address. It does not implement watch, patch, field selectors,
// admission, defaulting or validation beyond what is said here.
package kubetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The resources the API keeps.
var (
	Leases     = schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}
	ConfigMaps = schema.GroupResource{Resource: "configmaps"}
)

// object is what is stored: a Lease or a ConfigMap.
type object interface {
	runtime.Object
	metav1.Object
}

type objKey struct {
	res       schema.GroupResource
	namespace string
	name      string
}

// State is what the API holds after a write, for invariant checks.
type State struct {
	Leases     []coordinationv1.Lease
	ConfigMaps []corev1.ConfigMap
}

// API is the in-memory store. The zero value is not usable; use New.
type API struct {
	mu      sync.Mutex
	rv      uint64
	uids    uint64
	objs    map[objKey]object
	onWrite []func(State)
}

// New returns an empty API.
func New() *API { return &API{objs: map[objKey]object{}} }

// OnWrite registers f, called after every successful create, update and
// delete with the whole state, while writes are held back: f sees every
// state the API goes through, in order. f must not call the API.
func (a *API) OnWrite(f func(State)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onWrite = append(a.onWrite, f)
}

// Snapshot returns the current state.
func (a *API) Snapshot() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stateLocked()
}

func (a *API) stateLocked() State {
	var s State
	for _, k := range a.sortedKeys() {
		switch o := a.objs[k].(type) {
		case *coordinationv1.Lease:
			s.Leases = append(s.Leases, *o.DeepCopy())
		case *corev1.ConfigMap:
			s.ConfigMaps = append(s.ConfigMaps, *o.DeepCopy())
		}
	}
	return s
}

func (a *API) sortedKeys() []objKey {
	keys := make([]objKey, 0, len(a.objs))
	for k := range a.objs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].res != keys[j].res {
			return keys[i].res.Resource < keys[j].res.Resource
		}
		if keys[i].namespace != keys[j].namespace {
			return keys[i].namespace < keys[j].namespace
		}
		return keys[i].name < keys[j].name
	})
	return keys
}

func (a *API) wrote() {
	if len(a.onWrite) == 0 {
		return
	}
	s := a.stateLocked()
	for _, f := range a.onWrite {
		f(s)
	}
}

func newObject(res schema.GroupResource) (object, error) {
	switch res {
	case Leases:
		return &coordinationv1.Lease{}, nil
	case ConfigMaps:
		return &corev1.ConfigMap{}, nil
	}
	return nil, apierrors.NewNotFound(res, "")
}

func setKind(o object) {
	switch o := o.(type) {
	case *coordinationv1.Lease:
		o.TypeMeta = metav1.TypeMeta{Kind: "Lease", APIVersion: "coordination.k8s.io/v1"}
	case *corev1.ConfigMap:
		o.TypeMeta = metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"}
	}
}

func copyOf(o object) object {
	c := o.DeepCopyObject().(object)
	setKind(c)
	return c
}

// Get returns the object res/namespace/name, or a NotFound error.
func (a *API) Get(res schema.GroupResource, namespace, name string) (runtime.Object, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	o, ok := a.objs[objKey{res, namespace, name}]
	if !ok {
		return nil, apierrors.NewNotFound(res, name)
	}
	return copyOf(o), nil
}

// List returns the objects of res in namespace whose labels match sel (nil:
// all), sorted by name, as a LeaseList or ConfigMapList.
func (a *API) List(res schema.GroupResource, namespace string, sel labels.Selector) (runtime.Object, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var items []object
	for _, k := range a.sortedKeys() {
		o := a.objs[k]
		if k.res != res || k.namespace != namespace {
			continue
		}
		if sel != nil && !sel.Matches(labels.Set(o.GetLabels())) {
			continue
		}
		items = append(items, copyOf(o))
	}
	meta := metav1.ListMeta{ResourceVersion: strconv.FormatUint(a.rv, 10)}
	switch res {
	case Leases:
		l := &coordinationv1.LeaseList{TypeMeta: metav1.TypeMeta{Kind: "LeaseList", APIVersion: "coordination.k8s.io/v1"}, ListMeta: meta}
		for _, o := range items {
			l.Items = append(l.Items, *o.(*coordinationv1.Lease))
		}
		return l, nil
	case ConfigMaps:
		l := &corev1.ConfigMapList{TypeMeta: metav1.TypeMeta{Kind: "ConfigMapList", APIVersion: "v1"}, ListMeta: meta}
		for _, o := range items {
			l.Items = append(l.Items, *o.(*corev1.ConfigMap))
		}
		return l, nil
	}
	return nil, apierrors.NewNotFound(res, "")
}

// Create stores obj (a *Lease or *ConfigMap) in namespace, giving it a UID,
// a resourceVersion and a creation time.
func (a *API) Create(res schema.GroupResource, namespace string, obj runtime.Object) (runtime.Object, error) {
	o, err := checkObject(res, namespace, obj)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	k := objKey{res, namespace, o.GetName()}
	if _, ok := a.objs[k]; ok {
		return nil, apierrors.NewAlreadyExists(res, o.GetName())
	}
	if o.GetResourceVersion() != "" {
		return nil, apierrors.NewBadRequest("resourceVersion should not be set on objects to be created")
	}
	o = copyOf(o)
	a.uids++
	a.rv++
	o.SetNamespace(namespace)
	o.SetUID(types.UID(fmt.Sprintf("uid-%d", a.uids)))
	o.SetResourceVersion(strconv.FormatUint(a.rv, 10))
	o.SetCreationTimestamp(metav1.NewTime(time.Now()))
	a.objs[k] = o
	a.wrote()
	return copyOf(o), nil
}

// Update replaces the object named by obj. An empty resourceVersion updates
// unconditionally; another than the stored one, or another UID, is a
// Conflict.
func (a *API) Update(res schema.GroupResource, namespace string, obj runtime.Object) (runtime.Object, error) {
	o, err := checkObject(res, namespace, obj)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	k := objKey{res, namespace, o.GetName()}
	old, ok := a.objs[k]
	if !ok {
		return nil, apierrors.NewNotFound(res, o.GetName())
	}
	if rv := o.GetResourceVersion(); rv != "" && rv != old.GetResourceVersion() {
		return nil, apierrors.NewConflict(res, o.GetName(), fmt.Errorf("the object has been modified: resourceVersion %s, stored %s", rv, old.GetResourceVersion()))
	}
	if uid := o.GetUID(); uid != "" && uid != old.GetUID() {
		return nil, apierrors.NewConflict(res, o.GetName(), fmt.Errorf("UID %s, stored %s", uid, old.GetUID()))
	}
	o = copyOf(o)
	a.rv++
	o.SetNamespace(namespace)
	o.SetUID(old.GetUID())
	o.SetCreationTimestamp(old.GetCreationTimestamp())
	o.SetResourceVersion(strconv.FormatUint(a.rv, 10))
	a.objs[k] = o
	a.wrote()
	return copyOf(o), nil
}

// Delete removes res/namespace/name if the preconditions (UID,
// resourceVersion) hold, else Conflict.
func (a *API) Delete(res schema.GroupResource, namespace, name string, pre *metav1.Preconditions) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	k := objKey{res, namespace, name}
	old, ok := a.objs[k]
	if !ok {
		return apierrors.NewNotFound(res, name)
	}
	if pre != nil {
		if pre.UID != nil && *pre.UID != old.GetUID() {
			return apierrors.NewConflict(res, name, fmt.Errorf("precondition failed: UID %s, stored %s", *pre.UID, old.GetUID()))
		}
		if pre.ResourceVersion != nil && *pre.ResourceVersion != old.GetResourceVersion() {
			return apierrors.NewConflict(res, name, fmt.Errorf("precondition failed: resourceVersion %s, stored %s", *pre.ResourceVersion, old.GetResourceVersion()))
		}
	}
	delete(a.objs, k)
	a.rv++
	a.wrote()
	return nil
}

func checkObject(res schema.GroupResource, namespace string, obj runtime.Object) (object, error) {
	var o object
	switch res {
	case Leases:
		l, ok := obj.(*coordinationv1.Lease)
		if !ok {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("%T is not a Lease", obj))
		}
		o = l
	case ConfigMaps:
		c, ok := obj.(*corev1.ConfigMap)
		if !ok {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("%T is not a ConfigMap", obj))
		}
		o = c
	default:
		return nil, apierrors.NewNotFound(res, "")
	}
	if o.GetName() == "" {
		return nil, apierrors.NewBadRequest("name is empty")
	}
	if ns := o.GetNamespace(); ns != "" && ns != namespace {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("namespace %q of the object does not match %q of the request", ns, namespace))
	}
	return o, nil
}

// Clientset returns a fake clientset whose Leases and ConfigMaps are this
// API's. Other resources and verbs (watch, patch) fall through to the
// fake's own tracker, which this API does not see.
func (a *API) Clientset() *fake.Clientset {
	c := fake.NewClientset()
	c.PrependReactor("*", "*", a.React)
	return c
}

// React serves a fake clientset's action on Leases and ConfigMaps.
func (a *API) React(action k8stesting.Action) (bool, runtime.Object, error) {
	res := action.GetResource().GroupResource()
	if res != Leases && res != ConfigMaps {
		return false, nil, nil
	}
	if action.GetSubresource() != "" {
		return true, nil, apierrors.NewBadRequest("subresources are not served")
	}
	ns := action.GetNamespace()
	var (
		obj runtime.Object
		err error
	)
	// By verb: the action interfaces of create and update have the same
	// methods, so a type switch cannot tell them apart.
	switch action.GetVerb() {
	case "get":
		obj, err = a.Get(res, ns, action.(k8stesting.GetAction).GetName())
	case "list":
		obj, err = a.List(res, ns, action.(k8stesting.ListAction).GetListRestrictions().Labels)
	case "create":
		obj, err = a.Create(res, ns, action.(k8stesting.CreateAction).GetObject())
	case "update":
		obj, err = a.Update(res, ns, action.(k8stesting.UpdateAction).GetObject())
	case "delete":
		act := action.(k8stesting.DeleteAction)
		err = a.Delete(res, ns, act.GetName(), act.GetDeleteOptions().Preconditions)
	default:
		err = apierrors.NewMethodNotSupported(res, action.GetVerb())
	}
	if err != nil {
		return true, nil, err
	}
	return true, obj, nil
}

// ServeHTTP serves the REST endpoints of Leases and ConfigMaps in JSON:
//
//	/apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]
//	/api/v1/namespaces/{ns}/configmaps[/{name}]
//
// GET (one, or a list with ?labelSelector=), POST, PUT and DELETE (with
// DeleteOptions preconditions in the body). Errors are metav1.Status
// bodies, as client-go expects.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mux().ServeHTTP(w, r)
}

func (a *API) mux() *http.ServeMux {
	m := http.NewServeMux()
	for prefix, res := range map[string]schema.GroupResource{
		"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases": Leases,
		"/api/v1/namespaces/{ns}/configmaps":                  ConfigMaps,
	} {
		m.HandleFunc("GET "+prefix, func(w http.ResponseWriter, r *http.Request) {
			sel, err := labels.Parse(r.URL.Query().Get("labelSelector"))
			if err != nil {
				writeError(w, apierrors.NewBadRequest(err.Error()))
				return
			}
			obj, err := a.List(res, r.PathValue("ns"), sel)
			reply(w, http.StatusOK, obj, err)
		})
		m.HandleFunc("POST "+prefix, func(w http.ResponseWriter, r *http.Request) {
			o, err := readObject(res, r.Body)
			if err != nil {
				writeError(w, err)
				return
			}
			obj, err := a.Create(res, r.PathValue("ns"), o)
			reply(w, http.StatusCreated, obj, err)
		})
		m.HandleFunc("GET "+prefix+"/{name}", func(w http.ResponseWriter, r *http.Request) {
			obj, err := a.Get(res, r.PathValue("ns"), r.PathValue("name"))
			reply(w, http.StatusOK, obj, err)
		})
		m.HandleFunc("PUT "+prefix+"/{name}", func(w http.ResponseWriter, r *http.Request) {
			o, err := readObject(res, r.Body)
			if err != nil {
				writeError(w, err)
				return
			}
			if o.GetName() != r.PathValue("name") {
				writeError(w, apierrors.NewBadRequest(fmt.Sprintf("name %q of the object does not match %q of the path", o.GetName(), r.PathValue("name"))))
				return
			}
			obj, err := a.Update(res, r.PathValue("ns"), o)
			reply(w, http.StatusOK, obj, err)
		})
		m.HandleFunc("DELETE "+prefix+"/{name}", func(w http.ResponseWriter, r *http.Request) {
			var opts metav1.DeleteOptions
			body, err := io.ReadAll(r.Body)
			if err == nil && len(body) > 0 {
				err = json.Unmarshal(body, &opts)
			}
			if err != nil {
				writeError(w, apierrors.NewBadRequest("delete options: "+err.Error()))
				return
			}
			err = a.Delete(res, r.PathValue("ns"), r.PathValue("name"), opts.Preconditions)
			reply(w, http.StatusOK, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess}, err)
		})
	}
	return m
}

func readObject(res schema.GroupResource, body io.Reader) (object, error) {
	o, err := newObject(res)
	if err != nil {
		return nil, err
	}
	if err := json.NewDecoder(body).Decode(o); err != nil {
		return nil, apierrors.NewBadRequest("body: " + err.Error())
	}
	return o, nil
}

func reply(w http.ResponseWriter, code int, obj runtime.Object, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(obj)
}

func writeError(w http.ResponseWriter, err error) {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		se = apierrors.NewInternalError(err)
	}
	st := se.Status()
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(st.Code))
	json.NewEncoder(w).Encode(&st)
}

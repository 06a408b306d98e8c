package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/streamd/streamd/admin"
	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/consumer/group"
	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/topology"
)

// groupedReplication is a replicate: entry with group:, or any replicate:
// entry of a streamd with a top-level group: (whose slices it then
// follows, entitygroup.go). The pods of this streamd's StatefulSet share
// its copying: each pod copies, into its own journal, the slices it owns
// in that consumer group (group.Options.Runner,
// topology.ReplicationOptions.Slices).
type groupedReplication struct {
	group string
	opts  topology.ReplicationOptions
}

// pod is who this streamd is in Kubernetes, for its consumer groups.
type pod struct {
	name, namespace string
	leaseDuration   time.Duration
	client          kubernetes.Interface
}

// checkGroup checks a group's name, given at key (replicate[0].group,
// group.name): a DNS label, and not the group of an earlier replication.
func checkGroup(key, name string, earlier []groupedReplication) error {
	if len(name) > 50 {
		return fmt.Errorf("%s %q is %d characters: at most 50 (it names the group's Leases and its ConfigMap %s-positions)", key, name, len(name), name)
	}
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Errorf("%s %q: %s (it names the group's Leases and its ConfigMap)", key, name, strings.Join(errs, "; "))
	}
	for _, g := range earlier {
		if g.group == name {
			return fmt.Errorf("%s %q is also the group of replication %q: give each group a name of its own", key, name, g.opts.Name)
		}
	}
	return nil
}

// podFrom completes p (--pod-name, --pod-namespace,
// --group-lease-duration) with a client of the Kubernetes API (--kube-api,
// else the pod's service account) for the consumer groups this streamd
// joins, named by user ("" when it joins none), and checks the options of
// the grouped replications' members.
func podFrom(p pod, api, user string, grouped []groupedReplication) (pod, error) {
	if user == "" {
		return pod{}, nil
	}
	if p.name == "" || p.namespace == "" {
		return pod{}, fmt.Errorf("%s: give --pod-name and --pod-namespace (STREAMD_POD_NAME and STREAMD_POD_NAMESPACE, from the downward API: deploy/README.md)", user)
	}
	cfg, err := rest.InClusterConfig()
	if api != "" {
		cfg, err = &rest.Config{Host: api, ContentConfig: rest.ContentConfig{ContentType: "application/json"}}, nil
	}
	if err != nil {
		return pod{}, fmt.Errorf("%s: it needs the Kubernetes API: %w (run in a pod with a service account token, or give --kube-api)", user, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return pod{}, fmt.Errorf("--kube-api %s: %w", api, err)
	}
	p.client = client
	for _, g := range grouped {
		if err := p.options(g, nil).Validate(); err != nil {
			return pod{}, fmt.Errorf("replicate entry %q (group %q), --pod-name %q, --pod-namespace %q, --group-lease-duration %s: %w",
				g.opts.Name, g.group, p.name, p.namespace, p.leaseDuration, err)
		}
	}
	return p, nil
}

// options are the group.Options of this pod's member of g, running run.
func (p pod) options(g groupedReplication, run func(context.Context, offsets.SliceRange) error) group.Options {
	if run == nil {
		run = func(context.Context, offsets.SliceRange) error { return nil }
	}
	return group.Options{Client: p.client, Namespace: p.namespace, Group: g.group, Identity: p.name, LeaseDuration: p.leaseDuration, Runner: run}
}

// replication returns g's replication into j over part, with at most one
// stream per slice (part zero: all slices, for AddMember).
func (g groupedReplication) replication(log *slog.Logger, j *journal.Journal, part offsets.SliceRange) (*consumer.Consumer, error) {
	r := g.opts
	r.Journal, r.Logger, r.Slices = j, log, part
	if part != (offsets.SliceRange{}) {
		r.Streams = min(max(r.Streams, 1), part.Len())
	}
	return topology.NewReplication(r)
}

// runner is what this pod's member of g runs over the slices it owns: g's
// replication into j, shown in the admin registry as reg, and steered by
// s (nil: none) while it runs.
func (g groupedReplication) runner(log *slog.Logger, j *journal.Journal, reg *admin.Member, s *steered) func(context.Context, offsets.SliceRange) error {
	return func(ctx context.Context, part offsets.SliceRange) error {
		c, err := s.made(func() (*consumer.Consumer, error) { return g.replication(log, j, part) })
		if err != nil {
			reg.Stopped(err)
			return err
		}
		reg.Running(c)
		err = c.Run(ctx)
		if ctx.Err() != nil {
			reg.Stopped(nil) // its slices move, or the pod stops
		} else {
			reg.Stopped(err)
		}
		return err
	}
}

// newMember returns this pod's member of g, running run over the slices
// it owns.
func (p pod) newMember(log *slog.Logger, g groupedReplication, run func(context.Context, offsets.SliceRange) error) (*group.Member, error) {
	o := p.options(g, run)
	o.Logger = log
	return group.New(o)
}

// rejoinBackoff is the first and the longest wait before this pod's member
// of a group, stopped by an error, joins again; it doubles from one to the
// other, and starts over after a member ran longer than the longest.
var rejoinBackoff = [2]time.Duration{time.Second, time.Minute}

// runMember runs this pod's member of the group named groupName (join
// returns a new one) until ctx ends. A member stopped by an error has
// handed its slices off and left; after a backoff, a new member joins, and
// takes slices only as the group's ConfigMap gives them, as any member
// does. stopped hears of each stop, with the time of the next join.
func runMember(ctx context.Context, log *slog.Logger, groupName string, join func() (*group.Member, error), stopped func(error), backoff [2]time.Duration) {
	wait := backoff[0]
	for stops := 1; ; stops++ {
		started := time.Now()
		m, err := join()
		if err == nil {
			err = m.Run(ctx) // nil when ctx ends, after its hand-off
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("the member ended")
		}
		if time.Since(started) > backoff[1] {
			wait = backoff[0]
		}
		err = fmt.Errorf("%w (stop %d since streamd started: this pod rejoins group %s at %s)", err, stops, groupName, time.Now().Add(wait).UTC().Format(time.RFC3339))
		log.Error("group member stopped; this pod rejoins its group after a backoff", "group", groupName, "backoff", wait.String(), "err", err)
		stopped(err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, backoff[1])
	}
}

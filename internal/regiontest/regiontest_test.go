package regiontest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/streamd/streamd/internal/regiontest"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// An event published in one region reaches the other over a started link,
// not over a stopped one, and a restarted region still holds it.
func TestWorldReplicates(t *testing.T) {
	w := regiontest.NewWorld(t, "eu", "us")
	publish := func() {
		t.Helper()
		e := &streamdv1.Event{EntityType: "cart", EntityId: "c1", EventType: "ItemAdded"}
		if _, err := w.Regions["eu"].Producer.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	held := func(n string) uint64 { return w.Regions[n].Producer.Journal().LastOffset() }

	publish()
	w.StartAll()
	if !w.Links[[2]string{"eu", "us"}].Running() {
		t.Fatal("link eu -> us does not run after StartAll")
	}
	testwait.For(t, 10*time.Second, "us to hold eu's event", func() bool { return held("us") == 1 })

	w.StopLink("eu", "us")
	if w.Links[[2]string{"eu", "us"}].Running() {
		t.Fatal("link eu -> us runs after StopLink")
	}
	publish()
	if got := held("us"); got != 1 {
		t.Fatalf("us holds %d events with its link stopped, want 1", got)
	}

	us := w.Regions["us"]
	us.Stop()
	w.Regions["us"] = regiontest.Start(t, "us", us.Dir, us.Addr)
	if got := held("us"); got != 1 {
		t.Fatalf("us holds %d events after a restart, want 1", got)
	}
	w.StartLink("eu", "us")
	testwait.For(t, 10*time.Second, "us to hold eu's second event", func() bool { return held("us") == 2 })
}

// NewWorldWith opens each region's producer with the options given for
// it, in the region named.
func TestNewWorldWithOptions(t *testing.T) {
	w := regiontest.NewWorldWith(t, func(region string) producer.Options {
		return producer.Options{Server: producer.ServerOptions{Reserved: map[string]string{"order": "the primary of " + region}}}
	}, "eu", "us")
	for _, n := range []string{"eu", "us"} {
		r := w.Regions[n]
		if got := r.Producer.Journal().Region(); got != n {
			t.Errorf("region %s has a journal of region %q", n, got)
		}
		cc, err := grpc.NewClient(r.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = streamdv1.NewEventStreamServiceClient(cc).Publish(context.Background(), &streamdv1.PublishRequest{Events: []*streamdv1.Event{{EntityType: "order", EntityId: "o1", EventType: "Placed"}}})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "the primary of "+n) {
			t.Errorf("publish of a reserved type in %s: %v; want FailedPrecondition naming the primary of %s", n, err, n)
		}
	}
}

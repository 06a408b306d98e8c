package regiontest_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/streamd/streamd/internal/regiontest"
	"github.com/streamd/streamd/internal/testwait"
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

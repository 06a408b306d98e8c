package fault

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// publishN publishes n events one by one (ids prefix-0, prefix-1…, over
// entities entities) and returns them as acknowledged.
func publishN(t *testing.T, addr, prefix string, n, entities int) []Event {
	t.Helper()
	conn := dial(t, addr)
	defer conn.Close()
	client := streamdv1.NewEventStreamServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	acked := make([]Event, 0, n)
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		e := &streamdv1.Event{EntityType: "acct", EntityId: fmt.Sprintf("e%d", i%entities), EventType: "Deposited", Payload: payload(id, 32)}
		res, err := client.Publish(ctx, &streamdv1.PublishRequest{Events: []*streamdv1.Event{e}}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
		acked = append(acked, Event{EntityType: e.EntityType, EntityID: e.EntityId, SeqNr: res.Appended[0].SeqNr, Offset: res.Appended[0].Offset, ID: id})
	}
	return acked
}

// A restart on the same data directory keeps the journal: the consumers
// resume. A restart on a wiped data directory is a new journal: both
// consumers stop with a journal-changed error naming both journal ids —
// also when started again — and apply nothing of the new journal, although
// it holds events at offsets past their stored offsets.
func TestJournalReplaced(t *testing.T) {
	if testing.Short() {
		t.Skip("runs streamd and consumer processes")
	}
	dataDir := t.TempDir()
	d := startDaemon(t, dataDir)
	link := startProxy(t, d.Addr)
	eo, alo := newConsumer(t, "eo", link.Addr()), newConsumer(t, "alo", link.Addr())
	eo.start()
	alo.start()
	consumers := []*consumerProc{eo, alo}
	caughtUp := func(acked []Event) {
		t.Helper()
		last := acked[len(acked)-1].Offset
		for _, c := range consumers {
			if _, ok := c.waitOffset(last, recoveryTimeout); !ok {
				t.Fatalf("%s did not process offset %d (at %d, exited %v); its stderr:\n%s", c.name(), last, c.offset.get(), c.proc.exited(), c.proc.stderr.String())
			}
		}
	}
	acked := publishN(t, d.Addr, "old", 100, 10)
	caughtUp(acked)
	oldID := journalInfo(t, d.Addr).JournalId

	// Same data directory: same journal, the consumers carry on.
	if err := d.Stop(t, syscall.SIGTERM, time.Minute); err != nil {
		t.Fatalf("streamd after SIGTERM: %v", err)
	}
	d = startDaemon(t, dataDir)
	link.SetTarget(d.Addr)
	acked = append(acked, publishN(t, d.Addr, "same", 50, 10)...)
	caughtUp(acked)
	if id := journalInfo(t, d.Addr).JournalId; string(id) != string(oldID) {
		t.Fatalf("journal id changed across a restart on the same directory: %x -> %x", oldID, id)
	}

	// Wiped data directory: a new journal, with more events than the old.
	if err := d.Stop(t, syscall.SIGTERM, time.Minute); err != nil {
		t.Fatalf("streamd after SIGTERM: %v", err)
	}
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	d = startDaemon(t, dataDir)
	newID := journalInfo(t, d.Addr).JournalId
	publishN(t, d.Addr, "new", 300, 10)
	link.SetTarget(d.Addr)
	for _, c := range consumers {
		for attempt := 1; attempt <= 2; attempt++ {
			if attempt == 2 {
				c.start()
			}
			c.proc.wait(t, recoveryTimeout)
			msg := c.proc.stderr.String()
			if code := c.proc.exitCode(); code != exitJournalChanged {
				t.Fatalf("%s against a replaced journal: exit code %d, want %d (ErrJournalChanged); its stderr:\n%s", c.name(), code, exitJournalChanged, msg)
			}
			for _, want := range []string{fmt.Sprintf("journal %x", newID), fmt.Sprintf("journal %x", oldID), "the journal was replaced"} {
				if !strings.Contains(msg, want) {
					t.Fatalf("%s: the error does not say %q:\n%s", c.name(), want, msg)
				}
			}
		}
		for _, dl := range c.deliveries() {
			if strings.HasPrefix(dl.ID, "new-") {
				t.Fatalf("%s applied %s from the new journal", c.name(), dl.Event)
			}
		}
	}
	eoReport := Check(History{Acked: acked, Journal: acked, ExactlyOnce: eo.deliveries(), AtLeastOnce: alo.deliveries()})
	if f := eoReport.Failures(); len(f) > 0 {
		t.Fatalf("before the journal was replaced: %s\n%s", strings.Join(f, ", "), eoReport)
	}
	t.Logf("both consumers stopped with ErrJournalChanged (old journal %x, new %x), twice each, after applying the old journal's %d events", oldID, newID, len(acked))
}

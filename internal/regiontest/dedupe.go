package regiontest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// OriginEvent names an event by its origin region, its entity ("type/id")
// and its origin seqNr (an event without an origin: "" and its seqNr).
type OriginEvent struct {
	Origin, Entity string
	SeqNr          uint64
}

// ApplyByOrigin runs an exactly-once consumer with DedupeOrigin over the
// journals served at addrs, from their first events until it has read each
// to the last offset it had when the consumer started, and returns how
// many times it applied each event, and how many events the journals held
// together then. Its TxHandler's effect is a key of its own per event
// applied, committed in the handler's transaction and counted in its
// offsets store afterwards.
func ApplyByOrigin(t testing.TB, addrs ...string) (applied map[OriginEvent]int, held int) {
	t.Helper()
	store, err := offsets.Open(t.TempDir(), offsets.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	var ends []offsets.Key
	var lasts []uint64
	for _, addr := range addrs {
		cc, err := grpc.NewClient(addr, dial...)
		if err != nil {
			t.Fatal(err)
		}
		info, err := streamdv1.NewEventStreamServiceClient(cc).JournalInfo(context.Background(), &streamdv1.JournalInfoRequest{})
		cc.Close()
		if err != nil {
			t.Fatalf("JournalInfo of %s: %v", addr, err)
		}
		ends = append(ends, offsets.Key{Consumer: "apply-by-origin", JournalID: info.GetJournalId(), Slices: offsets.SliceRange{First: 0, Last: 1023}})
		lasts, held = append(lasts, info.GetLastOffset()), held+int(info.GetEvents())
	}
	var n atomic.Uint64
	c, err := consumer.New(consumer.Options{
		Producers: addrs, Name: "apply-by-origin", Store: store, DedupeOrigin: true, DialOptions: dial,
		TxHandler: func(_ context.Context, txn *badger.Txn, e *streamdv1.Event) error {
			seq := e.GetOriginSeqNr()
			if e.GetOrigin() == "" {
				seq = e.GetSeqNr()
			}
			return txn.Set(fmt.Appendf(nil, "applied\x00%s\x00%s\x00%s\x00%d\x00%d", e.GetOrigin(), e.GetEntityType(), e.GetEntityId(), seq, n.Add(1)), nil)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	caughtUp := testwait.Until(60*time.Second, func() bool {
		for i, k := range ends {
			if p, found, err := store.Get(k); err != nil || !found || p.Offset < lasts[i] {
				return false
			}
		}
		return true
	})
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if !caughtUp {
		t.Fatalf("the consumer did not read the journals at %v to their last offsets %v", addrs, lasts)
	}
	applied = map[OriginEvent]int{}
	err = store.DB().View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("applied\x00")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			f := strings.Split(string(it.Item().Key()), "\x00")
			seq, err := strconv.ParseUint(f[4], 10, 64)
			if err != nil {
				return err
			}
			applied[OriginEvent{f[1], f[2] + "/" + f[3], seq}]++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return applied, held
}

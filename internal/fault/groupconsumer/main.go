// Command groupconsumer is the consumer instance of the fault suite's
// TestRescale: one member of a consumer group (consumer/group) that follows
// a static list of producers exactly-once, with its own offsets store, and
// records each applied event in that store in the applying transaction,
// under the keys and in the format the suite's other exactly-once consumer
// uses (under "fault/applied/": "run type id seqNr offset payload-id"). The
// Kubernetes API it coordinates through is given by address (the test
// serves Leases and ConfigMaps itself). It exits 0 after SIGTERM, when it
// has handed its slices off; 1 on an error.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/consumer/group"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

const appliedLogPrefix = "fault/applied/"

func main() {
	producers := flag.String("producers", "", "producer addresses, comma separated")
	storeDir := flag.String("store", "", "offsets store directory")
	api := flag.String("api", "", "Kubernetes API address (http://host:port)")
	namespace := flag.String("namespace", "default", "namespace of the Leases and the ConfigMap")
	groupName := flag.String("group", "", "consumer group")
	identity := flag.String("identity", "", "member identity (pod name)")
	lease := flag.Duration("lease-duration", group.DefaultLeaseDuration, "lease duration")
	flag.Parse()
	if err := run(*producers, *storeDir, *api, *namespace, *groupName, *identity, *lease); err != nil {
		fmt.Fprintln(os.Stderr, "groupconsumer:", err)
		os.Exit(1)
	}
}

func run(producers, storeDir, api, namespace, groupName, identity string, lease time.Duration) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})).With("pid", os.Getpid())
	store, err := offsets.Open(storeDir, offsets.Options{Logger: log})
	if err != nil {
		return err
	}
	defer store.Close()
	client, err := kubernetes.NewForConfig(&rest.Config{Host: api, ContentConfig: rest.ContentConfig{ContentType: "application/json"}})
	if err != nil {
		return err
	}
	m, err := group.New(group.Options{
		Client: client, Namespace: namespace, Group: groupName, Identity: identity, LeaseDuration: lease, Logger: log,
		Consumer: consumer.Options{
			Producers: strings.Split(producers, ","), Name: "fault-group", Store: store,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 250 * time.Millisecond, HelloTimeout: 3 * time.Second,
			TxHandler: record,
		},
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	return m.Run(ctx)
}

// started and applied name the applied records in the order the handler
// ran: a counter shared by the store's transactions would make the
// concurrent streams (one per producer) conflict.
var (
	started = uint64(time.Now().UnixNano())
	applied atomic.Uint64
)

// record adds e to the applied log, in the consumer's transaction.
func record(_ context.Context, txn *badger.Txn, e *streamdv1.Event) error {
	key := binary.BigEndian.AppendUint64([]byte(appliedLogPrefix), started)
	key = binary.BigEndian.AppendUint64(key, applied.Add(1))
	id, _, _ := strings.Cut(string(e.Payload), "|") // the publisher's id
	return txn.Set(key, fmt.Appendf(nil, "%d %s %s %d %d %s", 1, e.EntityType, e.EntityId, e.SeqNr, e.Offset, id))
}

// Package e2e runs producers and consumers together over real TCP with real
// Badger, across process kills and restarts.
package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/internal/streamdtest"
	"github.com/streamd/streamd/internal/testwait"
	"github.com/streamd/streamd/offsets"
	"github.com/streamd/streamd/producer"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

const (
	childAddrEnv  = "STREAMD_E2E_PRODUCER"
	childStoreEnv = "STREAMD_E2E_STORE"
	childTotalEnv = "STREAMD_E2E_TOTAL"
	childModeEnv  = "STREAMD_E2E_MODE"
)

func TestMain(m *testing.M) {
	if os.Getenv(childAddrEnv) != "" {
		os.Exit(runChildConsumer())
	}
	goleak.VerifyTestMain(streamdtest.M(m))
}

// server is a producer served over TCP on 127.0.0.1.
type server struct {
	p    *producer.Producer
	g    *grpc.Server
	addr string
	done chan struct{}
}

func serve(t *testing.T, dir, addr string) *server {
	t.Helper()
	p, err := producer.Open(dir, producer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var lis net.Listener
	// The previous server's port may still be being released.
	if !testwait.Until(10*time.Second, func() bool { lis, err = net.Listen("tcp", addr); return err == nil }) {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	streamdv1.RegisterEventStreamServiceServer(g, p.Server())
	s := &server{p: p, g: g, addr: lis.Addr().String(), done: make(chan struct{})}
	go func() { defer close(s.done); g.Serve(lis) }()
	return s
}

func (s *server) stop() {
	s.p.Server().Shutdown()
	s.g.Stop()
	<-s.done
	s.p.Close()
}

// publish appends n events spread over entities, one append each.
func publish(t *testing.T, p *producer.Producer, n, entities int, tag string) {
	t.Helper()
	for i := range n {
		e := &streamdv1.Event{EntityType: "acct", EntityId: fmt.Sprint("a", i%entities), EventType: "Deposited",
			Payload: []byte(tag + strconv.Itoa(i))}
		if _, err := p.Publish(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
}

func openStore(t *testing.T, dir string) *offsets.Store {
	t.Helper()
	s, err := offsets.Open(dir, offsets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// exactlyOnceHandler records each applied event in the consumer's own DB and
// counts duplicates and order violations there, in the same transaction.
func exactlyOnceHandler(ctx context.Context, txn *badger.Txn, e *streamdv1.Event) error {
	last := fmt.Appendf(nil, "test/last/%s/%s", e.EntityType, e.EntityId)
	var prev uint64
	if item, err := txn.Get(last); err == nil {
		v, _ := item.ValueCopy(nil)
		prev = binary.BigEndian.Uint64(v)
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return err
	}
	switch {
	case e.SeqNr <= prev:
		if err := bump(txn, "test/duplicates"); err != nil {
			return err
		}
	case e.SeqNr != prev+1:
		if err := bump(txn, "test/gaps"); err != nil {
			return err
		}
	}
	if err := bump(txn, "test/applied"); err != nil {
		return err
	}
	return txn.Set(last, binary.BigEndian.AppendUint64(nil, max(prev, e.SeqNr)))
}

func bump(txn *badger.Txn, key string) error {
	n := counter(txn, key)
	return txn.Set([]byte(key), binary.BigEndian.AppendUint64(nil, n+1))
}

func counter(txn *badger.Txn, key string) uint64 {
	item, err := txn.Get([]byte(key))
	if err != nil {
		return 0
	}
	v, _ := item.ValueCopy(nil)
	return binary.BigEndian.Uint64(v)
}

func counters(t *testing.T, s *offsets.Store) (applied, dups, gaps uint64) {
	t.Helper()
	s.DB().View(func(txn *badger.Txn) error {
		applied, dups, gaps = counter(txn, "test/applied"), counter(txn, "test/duplicates"), counter(txn, "test/gaps")
		return nil
	})
	return
}

// runChildConsumer is the child process of TestExactlyOnceAcrossKill9: an
// exactly-once consumer that exits 0 once it has applied the total.
func runChildConsumer() int {
	store, err := offsets.Open(os.Getenv(childStoreEnv), offsets.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child store:", err)
		return 3
	}
	defer store.Close()
	total, _ := strconv.ParseUint(os.Getenv(childTotalEnv), 10, 64)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := consumer.Options{
		Producers: []string{os.Getenv(childAddrEnv)}, Name: "billing", Store: store,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	}
	if os.Getenv(childModeEnv) == consumer.ExactlyOnce.String() {
		opts.TxHandler = exactlyOnceHandler
	} else {
		opts.Handler = atLeastOnceHandler(store)
	}
	c, err := consumer.New(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child consumer:", err)
		return 4
	}
	go func() { // stop once everything is applied, by this run or an earlier one
		for ctx.Err() == nil {
			applied := appliedCount(store)
			if applied >= total {
				cancel()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	if err := c.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "child run:", err)
		return 5
	}
	return 0
}

// atLeastOnceHandler records each event it sees under its own key, so a
// redelivery rewrites the same key: the keys count distinct events applied.
func atLeastOnceHandler(store *offsets.Store) consumer.Handler {
	return func(ctx context.Context, e *streamdv1.Event) error {
		return store.DB().Update(func(txn *badger.Txn) error {
			return txn.Set(fmt.Appendf(nil, "test/seen/%s/%s/%d", e.EntityType, e.EntityId, e.SeqNr), nil)
		})
	}
}

// appliedCount: events applied by the exactly-once handler, or distinct
// events seen by the at-least-once one.
func appliedCount(store *offsets.Store) uint64 {
	var n uint64
	store.DB().View(func(txn *badger.Txn) error {
		if n = counter(txn, "test/applied"); n > 0 {
			return nil
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("test/seen/")})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	return n
}

// A consumer process is killed with SIGKILL again and again while events are
// published. Exactly-once: in the end every event is applied once, in order
// per entity. At-least-once: every event is applied, none lost.
func TestKill9Consumer(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	for _, mode := range []consumer.Mode{consumer.ExactlyOnce, consumer.AtLeastOnce} {
		t.Run(mode.String(), func(t *testing.T) { testKill9Consumer(t, mode) })
	}
}

func testKill9Consumer(t *testing.T, mode consumer.Mode) {
	srv := serve(t, t.TempDir(), "127.0.0.1:0")
	defer srv.stop()
	storeDir := t.TempDir()
	const total, entities = 3000, 40
	published := make(chan struct{})
	go func() { defer close(published); publish(t, srv.p, total, entities, "") }()

	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childAddrEnv+"="+srv.addr, childStoreEnv+"="+storeDir,
			childTotalEnv+"="+strconv.Itoa(total), childModeEnv+"="+mode.String())
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	kills := 0
	for range 6 {
		cmd := start()
		time.Sleep(time.Duration(150+rand.IntN(350)) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err == nil {
			kills++
		}
		cmd.Wait()
	}
	<-published
	cmd := start()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("final consumer run: %v", err)
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("consumer did not catch up within 60s: applied %d of %d", appliedCount(openStore(t, storeDir)), total)
	}
	store := openStore(t, storeDir)
	if mode == consumer.AtLeastOnce {
		if seen := appliedCount(store); seen != total {
			t.Fatalf("after %d SIGKILLs: %d of %d events applied", kills, seen, total)
		}
		t.Logf("%d SIGKILLs of the consumer: all %d events applied at least once", kills, total)
		return
	}
	applied, dups, gaps := counters(t, store)
	if applied != total || dups != 0 || gaps != 0 {
		t.Fatalf("after %d SIGKILLs: applied %d of %d, %d duplicates, %d gaps", kills, applied, total, dups, gaps)
	}
	t.Logf("%d SIGKILLs of the consumer: %d events applied exactly once, in order", kills, applied)
}

// The producer restarts mid-stream on the same address and directory; an
// at-least-once consumer reconnects and misses nothing.
func TestProducerRestartMidStream(t *testing.T) {
	dir := t.TempDir()
	srv := serve(t, dir, "127.0.0.1:0")
	addr := srv.addr
	store := openStore(t, t.TempDir())
	var mu sync.Mutex
	seen := map[string]int{}
	c, err := consumer.New(consumer.Options{
		Producers: []string{addr}, Name: "audit", Store: store,
		Handler: func(ctx context.Context, e *streamdv1.Event) error {
			mu.Lock()
			seen[fmt.Sprint(e.EntityId, "/", e.SeqNr)]++
			mu.Unlock()
			return nil
		},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- c.Run(ctx) }()
	publish(t, srv.p, 500, 10, "first")
	testwait.For(t, 30*time.Second, "200 events seen", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) >= 200 })
	srv.stop()
	srv = serve(t, dir, addr)
	publish(t, srv.p, 500, 10, "second")
	testwait.For(t, 30*time.Second, "all 1000 events seen", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 1000 })
	cancel()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	srv.stop()
	for i := range 10 {
		for seq := 1; seq <= 100; seq++ {
			if seen[fmt.Sprint("a", i, "/", seq)] == 0 {
				t.Fatalf("event a%d/%d never delivered", i, seq)
			}
		}
	}
}

// One consumer instance, then four splitting the slices, all sharing one
// store: every event is applied exactly once across the re-split.
func TestResplitOneToFour(t *testing.T) {
	srv := serve(t, t.TempDir(), "127.0.0.1:0")
	defer srv.stop()
	store := openStore(t, t.TempDir())
	newConsumer := func(r offsets.SliceRange) *consumer.Consumer {
		c, err := consumer.New(consumer.Options{
			Producers: []string{srv.addr}, Name: "ledger", Store: store, Slices: r,
			TxHandler:  exactlyOnceHandler,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	applied := func() uint64 { a, _, _ := counters(t, store); return a }

	publish(t, srv.p, 1000, 50, "")
	ctx, cancel := context.WithCancel(context.Background())
	one := newConsumer(offsets.SliceRange{First: 0, Last: 1023})
	done := make(chan error, 1)
	go func() { done <- one.Run(ctx) }()
	testwait.For(t, 30*time.Second, "400 events applied", func() bool { return applied() >= 400 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	publish(t, srv.p, 1000, 50, "")
	ctx, cancel = context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range uint32(4) {
		c := newConsumer(offsets.SliceRange{First: i * 256, Last: i*256 + 255})
		wg.Go(func() {
			if err := c.Run(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	testwait.For(t, 30*time.Second, "2000 events applied", func() bool { return applied() >= 2000 })
	cancel()
	wg.Wait()
	a, dups, gaps := counters(t, store)
	if a != 2000 || dups != 0 || gaps != 0 {
		t.Fatalf("applied %d of 2000, %d duplicates, %d gaps", a, dups, gaps)
	}
}

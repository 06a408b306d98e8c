package fault

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/streamd/streamd/consumer"
	"github.com/streamd/streamd/offsets"
	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// The test binary runs as a consumer process when childKindEnv is set.
const (
	childKindEnv  = "STREAMD_FAULT_CONSUMER" // "eo" or "alo"
	childAddrEnv  = "STREAMD_FAULT_ADDR"
	childStoreEnv = "STREAMD_FAULT_STORE"
	childLogEnv   = "STREAMD_FAULT_LOG"
	childRunEnv   = "STREAMD_FAULT_RUN"
	// childSlicesEnv is the consumer's slice range ("first-last"; unset: all).
	childSlicesEnv = "STREAMD_FAULT_SLICES"
)

// Exit codes of a consumer process.
const (
	exitOK             = 0 // SIGTERM: Run returned nil
	exitJournalChanged = 10
	exitOtherError     = 11
	exitSetup          = 12
)

// appliedLogPrefix holds, in the exactly-once consumer's store, one record
// per applied event, written in the transaction that applies it, under the
// run number and the order in which the process applied it. (Not under a
// counter kept in the store: the transactions of the streams of several
// producers would all write it, and conflict until one gives up.)
const appliedLogPrefix = "fault/applied/"

// runChild is a consumer process: exactly-once ("eo"), recording each
// applied event in its store in the applying transaction, or at-least-once
// ("alo"), appending each delivery to a file with one write (a SIGKILL does
// not lose what write returned). childAddrEnv lists the producers, comma
// separated. It prints "offset N" whenever its processed offset (the sum
// over the producers) moves, and exits 0 on SIGTERM, exitJournalChanged on a journal
// change, exitOtherError on any other error.
func runChild() int {
	kind, run := os.Getenv(childKindEnv), os.Getenv(childRunEnv)
	runNr, _ := strconv.Atoi(run)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	store, err := offsets.Open(os.Getenv(childStoreEnv), offsets.Options{Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer store:", err)
		return exitSetup
	}
	defer store.Close()
	var sliceRange offsets.SliceRange
	if s := os.Getenv(childSlicesEnv); s != "" {
		if sliceRange, err = offsets.ParseSliceRange(s); err != nil {
			fmt.Fprintln(os.Stderr, "consumer slices:", err)
			return exitSetup
		}
	}
	opts := consumer.Options{
		Producers: strings.Split(os.Getenv(childAddrEnv), ","), Slices: sliceRange, Name: "fault-" + kind, Store: store,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 250 * time.Millisecond, HelloTimeout: 3 * time.Second,
		Logger: log,
	}
	switch kind {
	case "eo":
		var applied atomic.Uint64
		opts.TxHandler = func(ctx context.Context, txn *badger.Txn, e *streamdv1.Event) error {
			key := binary.BigEndian.AppendUint64([]byte(appliedLogPrefix), uint64(runNr))
			key = binary.BigEndian.AppendUint64(key, applied.Add(1))
			return txn.Set(key, []byte(formatDelivery(runNr, e)))
		}
	case "alo":
		f, err := os.OpenFile(os.Getenv(childLogEnv), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			fmt.Fprintln(os.Stderr, "delivery log:", err)
			return exitSetup
		}
		defer f.Close()
		opts.Handler = func(ctx context.Context, e *streamdv1.Event) error {
			_, err := f.WriteString(formatDelivery(runNr, e) + "\n")
			return err
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown consumer kind", kind)
		return exitSetup
	}
	c, err := consumer.New(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		return exitSetup
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	reported := make(chan struct{})
	go func() { // report progress to the harness
		defer close(reported)
		var last uint64
		var lastErr string
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			var offset uint64
			for _, st := range c.Status() {
				offset += st.Offset
				if st.LastError != nil && st.LastError.Error() != lastErr {
					lastErr = st.LastError.Error()
					fmt.Fprintf(os.Stderr, "%s stream error: %s: %s\n", time.Now().Format("15:04:05.000"), st.Addr, lastErr)
				}
			}
			if offset != last {
				last = offset
				fmt.Printf("offset %d\n", last)
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	err = c.Run(ctx)
	stop()
	<-reported
	var offset uint64
	for _, st := range c.Status() {
		offset += st.Offset
	}
	fmt.Printf("offset %d\n", offset)
	var jc *consumer.JournalChangedError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &jc) && errors.Is(err, consumer.ErrJournalChanged):
		fmt.Fprintf(os.Stderr, "journal changed: stored %x current %x: %v\n", jc.Stored, jc.Current, err)
		return exitJournalChanged
	default:
		fmt.Fprintln(os.Stderr, "consumer run:", err)
		return exitOtherError
	}
}

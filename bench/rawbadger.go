package main

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
	"google.golang.org/protobuf/proto"
)

// rawBadger is the physical limit of the publish workload, as
// journal/bench_test.go's BenchmarkRawBadger measures it: the same events,
// encoded, written to one Badger DB with SyncWrites in transactions of
// spec.Batch events, one fsync each, one writer, nothing else (no offsets
// index, no seqNrs, no network), for spec.Events events or spec.MaxDuration.
// Seconds is the whole write.
func rawBadger(spec clientSpec) (clientResult, error) {
	db, err := badger.Open(badger.DefaultOptions(spec.Dir).WithSyncWrites(true).
		WithDetectConflicts(false).WithLogger(nil))
	if err != nil {
		return clientResult{}, err
	}
	defer db.Close()
	batch := max(spec.Batch, 1)
	begin := time.Now()
	written := 0
	for i := 0; i < spec.Events; i += batch {
		if spec.MaxDuration > 0 && time.Since(begin) > spec.MaxDuration {
			break
		}
		txn := db.NewTransaction(true)
		for k, e := range streamdEvents(i, min(batch, spec.Events-i), time.Now()) {
			offset := uint64(i + k + 1)
			e.Offset = offset
			val, err := proto.Marshal(e)
			if err != nil {
				return clientResult{}, err
			}
			key := binary.BigEndian.AppendUint64([]byte("e/"), offset)
			if err := txn.Set(key, val); err != nil {
				return clientResult{}, fmt.Errorf("raw badger: %w", err)
			}
		}
		if err := txn.Commit(); err != nil {
			return clientResult{}, fmt.Errorf("raw badger commit: %w", err)
		}
		written += min(batch, spec.Events-i)
	}
	return clientResult{Events: int64(written), Seconds: time.Since(begin).Seconds()}, nil
}

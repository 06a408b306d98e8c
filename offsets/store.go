package offsets

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/streamd/streamd/internal/badgerdir"
	"github.com/streamd/streamd/internal/badgerlog"
)

// Durability says when a commit of the store is on disk.
type Durability uint8

const (
	// DurabilitySync, the default, fsyncs every commit before it returns: a
	// saved offset or an exactly-once transaction survives a crash of the
	// machine.
	DurabilitySync Durability = iota
	// DurabilityAsync leaves fsync to the operating system. A crash can lose
	// the most recent commits, each one whole (never part of a transaction):
	// the consumer then receives those events again, which at-least-once
	// delivery and seqNr dedupe absorb, and an exactly-once handler loses its
	// state together with the matching offset.
	DurabilityAsync
)

// Options configures Open. The zero value is a durable on-disk store.
type Options struct {
	// Logger receives the store's and Badger's messages (Badger's info
	// messages at debug level). Nil means slog.Default().
	Logger *slog.Logger
	// InMemory keeps everything in memory, for tests; dir must be "".
	InMemory bool
	// Durability of commits; the zero value is DurabilitySync.
	Durability Durability
	// Badger, if set, adjusts the Badger options after the store's defaults
	// (for tuning memory; do not change Dir, InMemory or SyncWrites).
	Badger func(badger.Options) badger.Options
}

// Validate reports every nonsensical field of o, joined; each error wraps
// ErrInvalidOptions.
func (o Options) Validate() error {
	var errs []error
	if o.Durability > DurabilityAsync {
		errs = append(errs, optionsErrorf("Options.Durability %d is unknown (DurabilitySync or DurabilityAsync)", o.Durability))
	}
	return errors.Join(errs...)
}

// maxAttempts bounds the retries of a transaction that conflicts with a
// concurrent one; each conflict means another writer made progress.
const maxAttempts = 64

// Store is a consumer's offsets store. It is safe for concurrent use.
type Store struct {
	db     *badger.DB
	ownsDB bool
	shared Shared // set by Wrap: it commits the store's transactions
	log    *slog.Logger
	runs   *runs // applied seqNrs saved in runs, not folded yet

	mu     sync.Mutex // guards closed and active.Add
	closed bool
	active sync.WaitGroup // calls in flight, waited for by Close

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed) the store in dir.
func Open(dir string, opts Options) (*Store, error) {
	switch {
	case opts.InMemory && dir != "":
		return nil, optionsErrorf("dir %q given with Options.InMemory (pass \"\")", dir)
	case !opts.InMemory && dir == "":
		return nil, optionsErrorf("dir is empty (pass a directory, or set Options.InMemory for tests)")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	// A consumer's store is small: modest memtables and caches, values
	// inline in the LSM tree (no value log to collect).
	bo := badger.DefaultOptions(dir).
		WithInMemory(opts.InMemory).
		WithSyncWrites(opts.Durability == DurabilitySync).
		WithLogger(badgerlog.Logger{L: log}).
		WithMemTableSize(16 << 20).
		WithNumMemtables(3).
		WithBlockCacheSize(16 << 20).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		WithMetricsEnabled(false)
	if opts.Badger != nil {
		bo = opts.Badger(bo)
	}
	if !opts.InMemory {
		if err := badgerdir.RemoveEmptyLogs(dir); err != nil {
			return nil, fmt.Errorf("offsets: open %q: %w", dir, err)
		}
	}
	db, err := badger.Open(bo)
	if err != nil {
		return nil, fmt.Errorf("offsets: open %q: %w", dir, err)
	}
	s := &Store{db: db, ownsDB: true, log: log, runs: newRuns()}
	if err := s.init(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// Shared is a Badger DB owned by someone else, who commits the store's
// transactions in its own order and durability: a *journal.Journal.
type Shared interface {
	DB() *badger.DB
	// Update runs fn in a write transaction and commits it.
	Update(fn func(txn *badger.Txn) error) error
	// View runs fn in a read transaction that sees every write the owner
	// has acknowledged.
	View(fn func(txn *badger.Txn) error) error
}

// Wrap makes a Store over a shared Badger DB, so that offsets commit
// atomically with that DB's own records (a replicating journal, for
// instance). Only opts.Logger is used; durability is the owner's, and the
// store reads through the owner's View. Inside an Update function, read
// through its transaction: the store's own reads would wait for the owner,
// which waits for the function. Close does not close the DB.
func Wrap(shared Shared, opts Options) (*Store, error) {
	if shared == nil || shared.DB() == nil {
		return nil, invalidf("the shared DB is nil")
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Store{db: shared.DB(), shared: shared, log: log, runs: newRuns()}
	if err := s.init(); err != nil {
		return nil, err
	}
	return s, nil
}

// init checks the store's format and folds the runs left on disk.
func (s *Store) init() error {
	err := s.update(func(txn *badger.Txn) error {
		item, err := txn.Get(metaFormatKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return txn.Set(metaFormatKey, []byte{formatVersion})
		}
		if err != nil {
			return fmt.Errorf("offsets: read format version: %w", err)
		}
		var v []byte
		if v, err = item.ValueCopy(nil); err != nil {
			return fmt.Errorf("offsets: read format version: %w", err)
		}
		switch {
		case len(v) == 1 && (v[0] == formatVersion || v[0] == plainRunsFormat):
			return nil
		case len(v) == 1 && v[0] == runsFormat:
			s.runs.marked = true
			return nil
		}
		return fmt.Errorf("%w: format version %x is not supported by this build (it reads %d to %d)", ErrCorrupt, v, formatVersion, runsFormat)
	})
	if err != nil {
		return err
	}
	return s.loadRuns()
}

// DB returns the Badger DB of the store, for exactly-once handlers that keep
// their own state next to the offsets. Their keys must not begin with the
// bytes 0x00 'o', which the store uses. Do not use it after Close.
func (s *Store) DB() *badger.DB { return s.db }

// Close waits for the calls in flight and closes the DB (unless the store was
// made by Wrap). It is idempotent; later calls return the first result. Do
// not call it from inside an Update function.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.active.Wait()
		if s.ownsDB {
			if err := s.db.Close(); err != nil {
				s.closeErr = fmt.Errorf("offsets: close: %w", err)
			}
		}
	})
	return s.closeErr
}

// enter registers a call in flight; false once the store is closed.
func (s *Store) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.active.Add(1)
	return true
}

func (s *Store) leave() { s.active.Done() }

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Update runs fn in a read-write transaction and commits it (durably with
// DurabilitySync). It is how an exactly-once consumer applies a batch: the
// handler writes its state with txn, SaveTxn stages the offset and seqNrs,
// and everything commits together or not at all.
//
// If the commit conflicts with a concurrent transaction, Update runs fn again
// in a fresh transaction (up to 64 times), so fn must have no effect outside
// txn. An error from fn discards the transaction and is returned unchanged.
func (s *Store) Update(fn func(txn *badger.Txn) error) error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	return s.update(fn)
}

func (s *Store) update(fn func(txn *badger.Txn) error) error {
	if s.shared != nil {
		return s.shared.Update(fn)
	}
	for attempt := 1; ; attempt++ {
		txn := s.db.NewTransaction(true)
		if err := fn(txn); err != nil {
			txn.Discard()
			return err
		}
		err := txn.Commit() // Commit discards txn
		if err == nil {
			return nil
		}
		if !errors.Is(err, badger.ErrConflict) {
			return fmt.Errorf("offsets: commit: %w", err)
		}
		if attempt == maxAttempts {
			return fmt.Errorf("offsets: commit still conflicts after %d attempts: %w", attempt, err)
		}
		s.log.Debug("offsets: transaction conflict, retrying", "attempt", attempt)
		if attempt > 2 {
			// Spread the writers of a hot key apart, over a window that
			// doubles with each attempt up to 10ms.
			window := min(50*time.Microsecond<<min(attempt-3, 8), 10*time.Millisecond)
			time.Sleep(time.Duration(rand.Int64N(int64(window))))
		}
	}
}

func (s *Store) view(fn func(txn *badger.Txn) error) error {
	if !s.enter() {
		return ErrClosed
	}
	defer s.leave()
	if s.shared != nil {
		return s.shared.View(fn)
	}
	return s.db.View(fn)
}

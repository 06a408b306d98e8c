// Package offsets is the consumer-side store of consumer offsets: for each
// consumer, where it stands in each producer journal it follows, the seqNr it
// last applied for each entity (for dedupe), and the filter it last asked for.
// It is one Badger DB on disk, owned by the consumer process. It imports
// the wire types (proto/streamd/v1), Badger, journal (for the number of
// slices, journal.Slices) and two small helpers for Badger
// (internal/badgerdir, internal/badgerlog).
//
// # What is stored
//
//   - A stored offset per Key = (consumer name, journal id, slice range): the last
//     offset processed (0 = nothing yet), or a reset an operator left for the
//     consumer's next connection (start at earliest, latest or a time).
//     Offsets are only meaningful for the journal id they were taken from.
//   - An applied seqNr per (consumer, journal id, entity type, entity id). It
//     is not keyed by slice range: an entity lives in exactly one slice, so
//     the value stays right when the slices are split differently.
//   - Filter criteria per (consumer, stream), so that a consumer's filter
//     survives a restart of every process.
//   - The journal id a consumer last saw per producer address, so that it
//     notices a journal that was replaced (LastJournalID).
//
// # Guarantees
//
//   - Durability: with the default DurabilitySync every commit is fsync'd
//     before it returns. DurabilityAsync can lose the latest commits in a
//     crash, each one whole.
//   - Exactly-once: SaveTxn stages an offset and applied seqNrs in the
//     caller's Badger transaction; with Update (or the caller's own commit)
//     they commit atomically with the handler's writes, or not at all.
//   - At-least-once: Save stores an offset and a batch of seqNrs in one
//     transaction. The seqNr of an entity saved since the last fold goes
//     into a run, one value for the batch, and a fold later writes each
//     entity's highest to its key (runs.go); AppliedSeqNr reads both.
//   - Offsets only move forward: Save and SaveTxn never lower a stored
//     offset (a late or duplicate save is harmless). Only the operator moves
//     offsets back: Set (an exact offset), Reset, Delete. Reset keeps the
//     applied seqNrs, so an exactly-once replay still drops what was applied;
//     ClearApplied forgets them for a re-delivery.
//   - Applied seqNrs are written without reading the stored ones: the
//     consumer saves only what it applied after checking AppliedSeqNr.
//     Saves of an entity one after another never lower what AppliedSeqNr
//     returns (a fold reads a key before raising it where another writer
//     may have written it); two Saves of one entity at once may leave
//     either's seqNr, a duplicate that at-least-once allows. An
//     exactly-once consumer that checks with AppliedSeqNr(txn, …) in its
//     transaction is serialisable against any concurrent writer.
//   - Re-splitting slices loses nothing: the offsets of one consumer and
//     journal never overlap (a write of a new range takes its slices over
//     from the entries it overlaps, keeping the rest of them), and StartFor
//     merges the entries overlapping a new range into the earliest of their
//     starts; the events this re-delivers are dropped by the consumer,
//     which knows from Resolve's Sources where each piece was (and by
//     seqNr). An offset
//     next to a pending reset to a time cannot be ordered and is refused
//     (ErrConflictingOffsets) rather than guessed.
//   - Bad input (empty consumer name, journal id not 16 bytes, invalid slice
//     range, empty entity id, seqNr 0…) is refused with an error that names
//     the field and wraps ErrInvalid; nothing is written.
//   - Concurrency: a Store is safe for concurrent use. Writers are not
//     serialised by a lock; Badger's serialisable transactions detect
//     conflicting read-modify-writes and the store retries them, so
//     concurrent Saves of one key keep the highest offset.
//
// # What it does not do
//
// It does not cache: AppliedSeqNr is one Badger point read (and a look at
// the seqNrs saved since the last fold, held in memory until it), and the
// consumer library keeps its own cache. It does not talk to producers, so it cannot
// tell whether a journal id is still current, or resolve a reset to an
// offset: the consumer does both when it connects. It stores filter criteria
// as given; parsing, matching and expiry belong to the filters package.
//
// # Layout
//
// All keys begin with the bytes 0x00 'o' (so the store can share a DB, see
// Wrap and DB); strings are uvarint-length-prefixed and numbers big-endian;
// every value begins with a format version byte. See encoding.go.
package offsets

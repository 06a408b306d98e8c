// Package journal is streamd's local, durable event log on Badger.
//
// What it guarantees:
//
//   - Offsets are journal-wide, strictly increasing and contiguous (1, 2, 3…),
//     assigned at commit; an offset is the exact position to resume from.
//   - Each entity (entity type, entity id) has seqNrs 1, 2, 3… with no gaps. An
//     append may state the seqNr it expects (optimistic concurrency); on a
//     mismatch it fails with *SeqNrConflictError and writes nothing.
//   - Append validates everything first: bad input is refused with
//     ErrInvalidEvent and nothing is written. A failed commit writes nothing.
//   - Concurrent appends are group-committed: one write to the journal's
//     write-ahead log and one fdatasync for all appends waiting at that
//     moment (those queued during an fsync share the next one), then one
//     Badger transaction. Appends are committed in the order they were queued (Submit
//     queues one without waiting for it). With DurabilitySync (the
//     default) Append returns only after the fsync; with DurabilityAsync it
//     returns once the WAL write is done, without the fsync (safe against a
//     process crash, not against an OS crash).
//   - Events are written once: into the WAL segment that makes their batch
//     durable, where they stay; Badger holds the per-entity index,
//     references to the event blocks, and the records, not the events, so
//     its memory and compactions do not grow with the events' bytes. The
//     index is written in runs of an entity's consecutive seqNrs, once per
//     262,144 events or 65,536 entities (index.go), not per event; until
//     then readers find it in memory, and Open derives it again after a
//     crash. With
//     DurabilitySync, Badger runs without fsync: the WAL (wal.go) holds
//     every change since Badger's last checkpoint and replays it at Open, so
//     an acknowledged append survives a crash of the machine whatever Badger
//     kept of its memory-mapped log.
//   - Open refuses (ErrCorrupt, naming the file and the byte) a WAL damaged
//     or cut in a way an interrupted write cannot explain — a bad frame
//     followed by anything but the segment's zero fill, a whole frame whose
//     checksum fails, a missing segment, a segment shorter than what Badger
//     applied — rather than lose acknowledged appends and hand their offsets
//     out again; only the unfinished end of the last segment is dropped.
//     What it cannot see is listed in wal.go (recovery).
//   - Readers never see an event before its commit is durable, so an offset a
//     reader has seen is never reused after a crash; they see every append
//     answered before they began. With DurabilitySync an append is answered
//     once it is in the WAL and applied to Badger after that; a read of
//     Badger (ReadEntity, View…) waits until Badger holds what was answered
//     before it (Read only when it reaches events not applied yet).
//   - Live readers are served from a bounded in-memory ring; a reader that
//     falls behind gets ErrFellBehind and reads from Badger, switching back by
//     offset (Cursor does this), with no gap and no duplicate at the seam.
//   - Retention by age and by size runs in the background and deletes the
//     oldest events; reading below the floor is an *OutOfRangeError naming the
//     first available offset. Disk is reclaimed a whole segment at a time,
//     oldest first, once a checkpoint made the deletion durable.
//   - Memory follows from Options (MemTableSize, BlockCacheSize, RingSize),
//     not from the events written; Badger's memory-mapped tables are paged
//     out every second (Linux), so they do not stay resident either.
//   - Journals written in formats 1 (blocks inline in Badger), 2 (blocks
//     storing whole encodings) and 3 (one index key per event) open, are
//     upgraded in place (the index converted to runs) and read as before;
//     their blocks go with retention.
//   - Origins (Options.Region): events written here get this region as their
//     origin and the next origin seqNr of the entity from this region.
//     Replicated events keep theirs; per (origin, entity) the journal applies
//     origin seqNrs 1, 2, 3… once each, in order: a duplicate (arriving again,
//     or over a second path) is dropped (Appended.Duplicate) and a gap refuses
//     the append with *OriginGapError, in the same transaction as the events.
//   - The journal id is a random 128-bit id created with the journal and kept
//     for its life; offsets taken from one journal are meaningless in another.
//   - A full disk is a refusal, not a crash: below Options.MinFreeBytes (at
//     least LeastMinFreeBytes, what Badger may still write through memory
//     maps) appends fail with ErrNoSpace. Badger's compactions are not
//     bounded by it (see MinFreeBytes). Close of a journal that cannot
//     close cleanly returns why; nothing acknowledged depends on it.
//
// What it does not do: it does not replicate (see topology), filter or serve the network
// (see producer), and the last seqNr of every entity ever written is kept
// (a few bytes per entity) even after retention removed its events, so that
// seqNrs are never reused; the same holds for the last origin seqNr per
// (origin, entity). It does not bound Close: Badger retries a failed flush
// forever (its directory removed, a failing disk), so a process bounds its
// own shutdown and leaves the journal to the next Open's recovery.
package journal

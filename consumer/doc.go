// Package consumer is streamd's client side: it opens a Subscribe stream to
// each producer it follows, resumes from the offsets it keeps in an
// offsets store, drops duplicates by seqNr, calls the application's handler,
// saves its offset, pushes filter changes and reconnects with backoff. It
// imports offsets and filters (and the wire types); it never talks to a
// journal directly.
//
// # Offsets and the journal id rule
//
// A stored offset is (consumer name, producer journal id, slice range) → the
// last offset processed; the stream resumes at offset+1. Offsets mean nothing in
// another journal, so:
//
//   - The consumer remembers, per producer address given in
//     Options.Producers, the journal id it last saw there
//     (offsets.Store.SaveLastJournalID). Not for addresses found through
//     DNS (below). On connect it sends the offset stored for that
//     journal (offsets.Store.Resolve, so slice ranges may be re-split) and
//     the producer must serve that journal:
//     Hello names it, or the producer refuses with FailedPrecondition.
//   - A journal change is an error (*JournalChangedError, ErrJournalChanged,
//     naming both ids) unless Options.OnJournalChange is RestartFromEarliest,
//     which starts the new journal from its earliest offset. It is never a
//     silent restart.
//   - With no stored offset for a producer's journal (first contact, or the
//     offsets were deleted) the stream starts from Options.StartPolicy, or
//     from an operator's pending reset (offsets.Store.Reset), and the start
//     is stored at once with offsets.Store.Set.
//   - An offset past the end of the journal the producer serves (restored
//     from an older copy) is an *AheadError (ErrAheadOfJournal) naming its
//     last offset and the streamctl command that moves the offset.
//   - An offset below the producer's retention floor is an *OutOfRangeError
//     (ErrOutOfRange) naming the first available offset: events were lost,
//     an operator decides.
//
// # Discovery
//
// An entry "dns:///name:port" of Options.Producers follows every address
// the name resolves to (one A/AAAA record per pod of a headless Kubernetes
// Service), each as its own instance. The name is resolved with
// Options.Resolver every ResolveInterval, and sooner after a stream to an
// instance failed; a new address gets a follower at once, an address
// missing from the answers for RemoveAfter loses its follower (which saves
// what it handled first), so a flapping answer does not thrash. A name
// that does not exist means no instance; a failed lookup changes nothing.
// gRPC's own DNS resolver is not used: it gives one ClientConn balancing
// over the addresses, so one stream would reach one instance.
//
// An instance is its journal, not its address: a pod may come back with
// another IP, and its old IP may go to another pod. So a discovered
// address keeps no journal record; each stream learns the journal from
// Hello and resumes from the offset stored for that journal (one more
// stream open when the follower did not know it), and a discovered address
// that serves another journal than before is another instance, never a
// journal change: Options.OnJournalChange does not apply to it, and a
// replaced journal (a pod whose volume was lost) starts from StartPolicy.
// One journal is streamed by one follower at a time (a pod reached through
// its IPv4 and IPv6 address, or through a static entry and a DNS answer):
// another follower that reaches it waits and retries, its Status saying
// why. Status lists discovered instances only while Run follows them.
//
// # Delivery guarantees
//
// The handler set in Options chooses the mode (Options.Mode).
//
// AtLeastOnce, with a Handler or BatchHandler: the handler runs first, then the offset and the
// entity's seqNr are recorded in memory and saved in one transaction every
// SaveInterval, every SaveEvery handled events, on each Progress and when a
// stream ends. All but the last run in the background while the handler
// goes on, one at a time: a save asked for while one is in flight starts
// when it ends and takes everything handled meanwhile, up to 100 times
// SaveEvery events, where the handler waits for it. A save holds only
// what was handled when it began, and the save at the end of a stream
// waits for the one in flight. A crash re-delivers at most what was
// handled since the last save that completed (minus what the seqNr dedupe
// drops). A Handler error stops Run; the event is not recorded, so it
// comes again after a restart.
//
// ExactlyOnce, with a TxHandler: each event batch is applied in one Badger transaction of
// Store.DB(): TxHandler's writes, the entities' applied seqNrs and the new
// offset commit together, durably, or not at all (a batch too big for one
// transaction is committed event by event, each atomic). A TxHandler error
// discards the whole batch and stops Run; nothing of it is stored and the
// event is never skipped.
// A CommitHandler instead commits each batch itself, in one atomic write
// with the offset records the consumer gives it
// (offsets.Store.OffsetWrites): a replication appends the events to its
// journal with journal.AppendWith, over a Store on the journal's DB.
//
// Dedupe: an event whose seqNr is not above the last applied seqNr of its
// entity (kept in the store per consumer, journal id and entity, with an
// in-memory cache in front) is dropped, and so is an event outside the
// consumer's slice range. This removes the duplicates of reconnects,
// replays, re-split slices and several paths. Replay batches (answers to
// Replay or to an include with replay) go through the same dedupe and never
// move the offset. SeqNrs are gap-free per entity, so an event of an
// entity that arrives after a later one of the same entity is dropped too:
// the producer must send a replayed entity's older events before its newer
// live ones.
//
// Copies of one event in several journals (the pods of a region sharing a
// replication each hold their own) are different events to that dedupe.
// With Options.DedupeOrigin a TxHandler consumer also skips an event whose
// origin seqNr it applied from any journal: per (origin, entity) it keeps
// the last one in the store (offsets.Store.OriginSeqNr), read and written in
// the handler's transaction, so copies committed at once by two producers'
// followers conflict and the retry skips the later. A replay after an
// operator's reset then needs offsets.Store.ClearOriginSeqNrs too.
//
// Progress moves the offset over events the producer filtered away; it is
// saved after everything before it has been handled (and saved).
//
// Reports: after a save, at most once per ReportInterval, the consumer tells
// a producer whose Hello accepts them the offset it stored (OffsetReport),
// so that the producer can show operators who reads from it and how far
// behind each is. Nothing depends on a report arriving: the offset a stream
// resumes from is always the one in the consumer's own store.
//
// Re-split: when Options.Slices is stored in pieces (instances that owned
// parts of it before, each at its own offset), the stream starts at the
// lowest piece's offset and an event at or below its own piece's offset is
// dropped as applied — by offset, so that this holds without the former
// owners' applied seqNrs, which live in their stores. Until the offset
// passes every piece it is saved per piece (never below a piece's offset),
// so a restart meanwhile drops the same events; then it is saved for the
// whole range. With NoDedupe replayed events are not dropped by offset:
// the handler drops what it holds itself, and a replay may answer a gap
// the piece's offset passed.
//
// Streams: with Options.Streams = N > 1 the consumer opens N streams to
// each producer, each over a contiguous part of Options.Slices with its
// own stored offset, exactly as N instances owning those parts would (so
// a changed N is a re-split, as above). They run in parallel: events of
// one entity stay in order (an entity lives in one slice), events of
// different parts have no order between them. Filter updates and replays
// go to every stream; each producer sends only what is in the stream's
// slices.
//
// # Filters
//
// The consumer's filter is stored per (Name, Stream) in the offsets store
// and sent in every Init, so it survives restarts; Options.Filter applies
// only while none is stored. UpdateFilter stores first, then updates every
// open stream and waits for the producers' answers; a refusal restores the
// previous filter. Criteria expire at the producer.
//
// # Reconnects and lifetime
//
// Unavailable and transport errors are retried with exponential backoff and
// full jitter (MinBackoff..MaxBackoff), resuming from the offset (in
// memory: the latest processed). FailedPrecondition, OutOfRange, NotFound,
// InvalidArgument, Unauthenticated, PermissionDenied and Unimplemented are
// not retried: Run stops every stream and returns the error. Run owns every
// goroutine it starts and returns only after all of them have stopped.
//
// What it does not do: it does not detect seqNr gaps (an entity filtered out
// for a while has them legitimately), does not close the Store, and does not
// order events across producers.
package consumer

// Package producer is the producing side of streamd: the publish API a Go
// service embeds, and the gRPC EventStreamService that streams its journal to
// consumers in other processes and regions.
//
// What it guarantees:
//
//   - A Subscribe stream delivers the events of its named stream, slice range
//     and filter in offset order, from the consumer's position: catch-up from
//     Badger in batches, then live from the journal's ring, switching by offset
//     (journal.Cursor), so there is no gap and no duplicate at the seam.
//   - Progress watermarks tell the consumer how far it may store its offset
//     when events were filtered away or the stream is idle, at most every
//     ServerOptions.ProgressInterval (200ms by default).
//   - A named stream's own selection (entity types, producer-side filter,
//     transformation) always wins over a consumer's filter.
//   - Flow control is gRPC's: a stream reads the journal only after its last
//     batch was handed to gRPC, so a slow or stalled consumer holds at most a
//     batch and the transport window in memory and never slows other streams
//     or publishing.
//   - PublishStream says the server's size limits in its response header,
//     so that a publisher refuses an event over them itself; the gRPC server
//     must take messages of Server.MaxMessageBytes.
//   - Publish and PublishStream hand the events a ServerOptions.Router
//     routes (the multi-region modes of topology/primary) to it, and append
//     the others; one stream's routed writes of one entity run in the order
//     sent.
//   - A position from another journal is refused with FailedPrecondition, and
//     a position below retention with OutOfRange naming the first available
//     offset. Errors map to gRPC codes in one place (status.go).
//   - The producer keeps, per consumer name and slice range, what it last
//     heard of each consumer reading from it (Server.Readers): connected or
//     when last seen, its address, the offset delivered, the offset it
//     reported as stored (OffsetReport), its filter, and its lag in events
//     and time. The view is saved beside the events (journal keys 0x00 'r'…)
//     at most every ServerOptions.ReaderSaveInterval and at Shutdown, so it
//     survives restarts of either side; a crash loses at most the changes of
//     the last interval. It holds at most MaxReaders, none unseen for longer
//     than ReaderMaxAge; beyond, those seen longest ago are dropped first.
//
// It does not store consumer offsets (the consumer owns them; see offsets)
// and does not retry publishes.
package producer

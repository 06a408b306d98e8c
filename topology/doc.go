// Package topology connects regions. Each region runs its own journal;
// replication copies another region's stream into the local journal.
//
// What a Replication guarantees:
//
//   - Every event it copies keeps its origin (the region that first wrote
//     it, with the origin seqNr and time there); events written in the
//     source without an origin get the source region's name and their
//     source seqNr. The local journal (journal.Options.Region must be set)
//     applies each (origin, entity, origin seqNr) once and in order, in the
//     same transaction as the events: a copy arriving again — after a
//     restart, or over a second path through a third region — is dropped.
//     So with at-least-once delivery from the source, each event is applied
//     once: exactly-once replication.
//   - No event goes back to its origin: the replication asks the source to
//     exclude events whose origin is the local region (filter origin=), and
//     drops any that arrive anyway. A member replication (below) is the
//     exception: its source is another pod of the same region.
//   - Relays: a region's journal holds the events it replicated, with their
//     origins, so a region that replicates from a third one also receives
//     the events of an origin it cannot reach directly.
//   - A gap in an origin's sequence for an entity (events missing before
//     one that arrived: the entity was filtered out until now, or the
//     replication started after its first events) holds that entity's
//     events back and asks the source for the entity's whole history; the
//     journal drops what it holds and applies the rest in order. Events of
//     other entities go on. A replay request lost with its stream is asked
//     again at the entity's next gap. Events deleted by retention at the
//     source before they were copied cannot come back: that entity then
//     stays behind at the gap, and the log says so.
//
// On-demand replication: Interest steers a replication whose filter is in
// include mode (summaries always) so that an entity's full history and new
// events are replicated only while the region has interest in it, and stop
// after a period without interest (the include expires at the source).
// When an interest begins, Use waits for the source to take the include and
// then copies the history the source holds already (FetchEntity), so the
// caller holds it when Use returns; if the copy fails, the include asks the
// source to replay it instead.
//
// Replicated writes: Replicated writes CRDT operations (topology/crdt) as
// events, and folds an entity's events in the local journal — written here
// or replicated — into a state that is the same in every region whatever
// the order the events arrived in.
//
// Single-writer entities are the package topology/primary: one linear
// history per entity, written by the region that owns it, with ownership
// moving by handover events that replicate like data.
//
// The offset in the source journal is stored in the local journal's
// Badger DB (an offsets.Store made by offsets.Wrap on the journal) and
// committed in the same transaction as the batch of events it covers
// (consumer.CommitHandler, journal.AppendWith): after a crash the copied
// events and the offset agree. streamd shows it through the admin API.
//
// ReplicationOptions.Streams copies a source over several parallel streams,
// each over a contiguous part of its slices with its own offset
// (consumer.Options.Streams). An entity's events keep their order; events
// of different parts are appended in no set order. A changed number of
// streams is a consumer re-split: nothing is skipped, and the journal
// drops what arrives twice.
//
// ReplicationOptions.Slices copies a part of the source's slices. The pods
// of a StatefulSet share one source this way, each running the replication
// as the Runner of a consumer/group member over the slices it owns, into
// its own journal. A pod that gains slices starts them from its own offset
// for them (from when it last owned them) or from the source's earliest
// event, never from another pod's offset, which says nothing of what its
// journal holds; the journal drops what it holds. Each pod's journal so
// holds whole histories: every event of the slices it owns, and of slices
// it owned before, the history up to when it gave them up.
//
// ReplicationOptions.Member copies from another pod of the local region
// (a member of the same consumer/group), whose journal has the same
// Region: the events of that region are copied too, with their origin and
// origin seqNr, and so are the copies the pod holds from other regions.
// CopyHistory runs such a copy over the slices a pod takes from another
// and returns once every event of those slices that the source held when
// it was called is durably in the local journal (its stored offset, which
// commits with the events, covers the source's last offset then), so the
// pod can serve them and continue each entity's sequence. Copying again
// is harmless; a later copy from the same source journal resumes.
package topology

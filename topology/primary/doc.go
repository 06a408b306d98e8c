// Package primary writes single-writer entities across regions: the entity
// types whose mode (Config) is ModePinned or ModeRequestRegion. Primary is
// its API in Go, Primary.Server its gRPC PrimaryService.
//
// Primary.Publish is the one publish path of a multi-region project (streamd
// routes Publish and PublishStream through it, see Primary.Routes): pinned
// and request-region events go through Write, replicated events carry CRDT
// operations (Event.crdt_ops) that topology.Replicated appends, and
// ModeLocal events are plain appends it leaves to the caller. Config's
// DefaultMode and DefaultPrimary give the mode of the types it does not
// list; Primary.State reads a replicated entity's merged state.
//
// What it guarantees:
//
//   - Each single-writer entity has one linear history, versions 1, 2, 3…,
//     the same in every region.
//   - One region owns an entity at a time and only the owner appends to it,
//     holding every earlier event. Ownership moves by handover events in the
//     history itself, so it survives restarts and replicates like data.
//   - A write in a region that does not own the entity is forwarded to the
//     pinned primary (ModePinned) or takes the entity over first
//     (ModeRequestRegion). When the owner cannot be reached, the write fails
//     with ErrUnavailable (codes.Unavailable) naming the region, rather than
//     forking the history.
//   - Read is eventually consistent and always a prefix of the one history;
//     ReadStrong asks the owner (following handovers) and is linearizable.
//   - A region's writes to one entity are serialised; other entities are
//     unaffected by a switch of owner.
//
// How: every event of the entity carries a version vector, the last event's
// plus one for the region that writes it, so its version (the vector's sum)
// is 1, 2, 3…; a handover event (HandoverEventType) names the next owner;
// the first owner is the type's configured primary or home. Replication
// (topology.Replication) copies the events like any other, and every region
// folds the entity's events in its journal into the history: the longest
// run of versions 1..n that continue each other.
//
// Writes (Primary.Write):
//   - ModePinned, and this region is not the pinned primary: forwarded over
//     gRPC (PrimaryService.Write) to the primary; the caller gets its result.
//   - This region owns the entity: appended to the local journal with the
//     next version, expecting the journal's next seqNr of the entity
//     (optimistic concurrency against every other append).
//   - Otherwise (ModeRequestRegion, or this region just became the pinned
//     primary) this region takes the entity over first: it asks the owner it
//     knows (PrimaryService.Sync with handover_to) to hand it over; the owner
//     appends a handover event, stops writing the entity, and answers with
//     every event the asking region lacks. The asking region appends them
//     (keeping their origins, like replication) and then owns the entity. A
//     region that no longer owns the entity answers with what it holds and
//     the owner it knows, and the asking region follows; asked again (the
//     answer was lost), the old owner answers again.
//
// Operator override: Primary.Takeover with force appends a handover to this
// region without the owner's consent. If the old owner is alive and writes,
// the history forks: every region then picks the forced branch
// (deterministic) and reports the old owner's events from the fork on in
// History.Outside; acknowledged writes of the old owner that this region did
// not hold are lost. Use it only for an owner that is gone.
//
// Pins: the pinned primary of an entity type is the configured one until
// Primary.SetPrimary writes a pin event (PinEntityType), which replicates;
// the latest pin by (time, region) wins. Changing it is safe while traffic
// runs: the new primary takes each entity over on its first write, and the
// old one, fenced by the handover, forwards. While regions disagree on the
// pin, an entity may move back and forth; its history stays linear.
//
// Failover: Primary.Failover, run in the region taking over (to), appends
// one failover record (FailoverEntityType; payload a
// streamdv1.FailoverRecord) that replicates like data. From its origin time
// on, every pinned type whose primary is from has the primary to, and every
// entity from owns (by a handover to held, or as first owner) is owned by
// to, which claims it with a forced handover on its next write. The
// failover point is the origin time of the last event of from that to had
// applied: from's later events continue no history in any region (they are
// fenced), and Primary.Conflicts lists them; WatchConflicts logs each once.
// Records and pins fold in (origin time, origin) order. Failing back is a
// failover the other way. The dry run reports, from every reachable region's
// replication progress (Options.Progress, PrimaryService.Progress), per
// journal of from (one per pod when from's pods share its entities), how
// many of its events no region applied, summed over from's journals.
//
// A region whose pods share the entities, each pod its own journal, runs a
// Primary per pod with Options.Pods the other pods' PrimaryService. Its
// Progress and Conflicts then answer for the region: the pods' progress
// merged (per journal of the source, the least any pod applied and the
// most any knows; the latest event of the source any pod holds, which is
// Failover's failover point), and every pod's conflicts, each event once.
// A pod that cannot be asked fails the answer rather than under-report.
// Failover writes its record in the pod that serves it; WatchConflicts
// watches its own pod's journal.
//
// What it does not do: it does not replicate (run a topology.Replication
// between the regions), and it does not check what it must assume: region
// names are unique, every region configures the same mode and first owner
// for a type, and retention does not delete single-writer entities' events
// (a fold over a deleted event fails with topology.ErrIncompleteHistory).
// ReadStrong and writes need the owner reachable. A failover is for a
// region that is gone: it compares origin times of different regions (the
// order of failover records and pins, and whether to held a handover of an
// origin other than from) and so trusts their clocks to agree within the
// time a record takes to replicate; and writes that other regions made
// after the failover point through from itself (an entity taken over from
// it) continue no history either and are not reported as conflicts. Entity types in
// ModeReplicated are written with topology.Replicated, through Publish, not
// Write. Its errors
// keep the "topology:" prefix the operator knows from the topology config,
// but for those of Options.Validate, which are the Go API's ("primary:
// invalid options: Options.Field ...").
package primary

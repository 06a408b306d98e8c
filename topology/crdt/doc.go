// Package crdt holds the conflict-free replicated data types of streamd's
// replicated-writes entities (ARCHITECTURE.md §7): a last-writer-wins
// register, a counter and an add-wins observed-remove set, and State, the
// named composition of them that one entity's events fold into.
//
// Every region writes the same entity in its own journal; replication brings
// the other regions' events over, in whatever order and as often as the network
// makes it. A change is therefore turned, in the region that makes it, into an
// Op that carries everything needed to apply it anywhere:
//
//   - LWW register: the value with a timestamp and the writing region. The
//     greatest (timestamp, region, value) wins, so equal timestamps are broken by
//     the region name, then the value. A region writes a timestamp above the
//     one it has seen, so a write made after observing another one wins over it.
//   - Counter: the writing region's running totals of increments and
//     decrements. Applying takes the per-region maximum, so an op applied twice,
//     late or out of order changes nothing it should not.
//   - OR-set: an add carries a fresh unique tag (a Dot); a remove carries the
//     tags of the element that its region had observed. Removed tags are kept as
//     tombstones, so a remove delivered before the add it saw still removes it,
//     while an add made concurrently with a remove (a tag the remove did not
//     see) survives: add wins.
//
// What it guarantees: Apply and Merge are commutative, associative and
// idempotent for every type, so states that have received the same set of ops,
// in any order and with any duplication, are Equal. Ops encode to readable JSON
// payloads named by their event type (Encode, Decode).
//
// What it does not do: it does not read or write journals (see
// topology.Replicated), and it does not collect garbage: OR-set tombstones and
// per-region counter totals grow with the history of the entity.
package crdt

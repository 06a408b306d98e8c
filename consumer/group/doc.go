// Package group splits the 1024 slices of a consumer over the instances of
// a Kubernetes workload (its pods), moving them as instances come and go,
// without a broker or a leader: each instance (a Member) runs a
// consumer.Consumer over the contiguous slice range it owns, with its own
// offsets store, and the instances coordinate through the Kubernetes API.
//
// # Objects
//
//   - A coordination.k8s.io/v1 Lease per member, "<group>-<identity>"
//     (identity: the pod name), labelled LabelGroup=<group>, renewed every
//     D/3 (D = Options.LeaseDuration, default 15s). Its annotation
//     AnnotationSlices shows the range the member owns, AnnotationAddress
//     how to reach it (Options.Address), AnnotationLeaving that it left
//     and waits for its holdings to be taken over (Holdings, below).
//   - One ConfigMap per group, "<group>-positions": which member owns
//     which slices ("owner.<identity>": range and Lease UID), the
//     handed-off offsets ("journal.<id>": per slice range, the offset up
//     to which every event of those slices was applied, and none after),
//     and with Options.Holds which member's journal holds which slices'
//     history ("holds.<identity>": ranges). Every change of it is a
//     compare-and-swap on its resourceVersion.
//
// # Assignment
//
// The live members are the Leases of the group that changed within D as
// this member observed them (its own clock only measures how long it saw
// a Lease unchanged, so clocks need not agree). Sorted by identity, member
// k of n should own Assign(k, n) = [k*1024/n, (k+1)*1024/n - 1]; past
// MaxMembers (512) members stand by. A Lease seen unchanged for D is
// deleted, with its UID and resourceVersion as preconditions, by whichever
// member sees it first.
//
// # Moving slices
//
// Each step (every D/3) a member renews its Lease, lists the members, and:
//
//   - releases the owned slices outside its target: it stops its consumer
//     (consumer.Run returns after saving), shrinks its Lease annotation,
//     and in one ConfigMap write stores the offsets of the released
//     slices from its offsets store and shrinks its owner entry;
//   - takes the slices of its target it does not own, in one ConfigMap
//     write that fails while a member whose Lease is still there owns any
//     of them (entries of deleted Leases are dropped), then imports their
//     offsets into its store with offsets.Store.Set on each fragment's
//     own slice range, grows its annotation, and starts the consumer over
//     the target: it starts at the lowest fragment and skips, per slice,
//     what that slice's fragment says was applied;
//   - otherwise writes the stored offsets of its slices to the ConfigMap
//     when they moved (for a crash, below).
//
// Owning is decided in the ConfigMap only, so two members that see the
// membership differently for a moment cannot both take a slice: the
// second compare-and-swap sees the first's entry. (Claims on each member's
// own Lease cannot do this: two members could each see a range free and
// claim it.) A member consumes only slices its entry holds.
//
// # Failures
//
//   - A member that could not renew its Lease for 2D/3 stops its consumer
//     (a timer, whatever else it is doing) and hands nothing off. Others
//     delete its Lease only after seeing it unchanged for D, and take its
//     slices only after that, so the two never consume a slice at once as
//     long as stopping takes less than D/3 and clock rates agree. If it
//     renews again before its Lease is deleted it carries on from its own
//     store; if the Lease is gone it starts over with a new one.
//   - A member that crashed leaves offsets in the ConfigMap at most one
//     step (D/3) old: the member taking its slices re-applies the events
//     it applied since (at-least-once, on a crash only). Scale steps and
//     graceful shutdown (ctx ended, i.e. SIGTERM) hand off exact offsets:
//     every event is applied exactly once with ExactlyOnce consumers.
//   - Slices never handed off before (first start) start from the
//     consumer's StartPolicy.
//   - A pod restarted under the same name waits until its previous Lease
//     expired (D) before it joins again.
//
// # Runners: work that keeps its own positions
//
// With Options.Runner instead of Options.Consumer a member runs a function
// over its slices, and the group hands no offsets over (the ConfigMap
// holds owners only): a member that takes slices starts them wherever its
// Runner left them, which is what it stored when it last owned them, or the
// beginning. This is for work whose results stay with the member, such as
// a replication into the member's own journal (topology), where another
// member's offset would skip history this member's journal does not hold.
// Ownership, fencing and the rest are as above.
//
// # Holdings: work whose data stays with the member
//
// With Options.Holds (a Runner and an Address) the ConfigMap also records,
// per slice, which member's journal holds the slice's whole history: keys
// "holds.<identity>", sorted disjoint ranges ("0-255,512-767"). This is for
// a region spread over the pods of a StatefulSet, each with its own
// journal: a pod that takes slices copies their history from the pod that
// holds it before it serves them.
//
//   - A slice is held by one member at most. The record is by identity,
//     not by Lease: it stays with the pod's volume across restarts.
//   - Holders(r) reads the ConfigMap and says who holds which part of r,
//     with the holder's address (its Lease's AnnotationAddress, leaving or
//     not), or "" when the holder has no Lease. Slices nobody holds have no
//     history anywhere.
//   - Hold(r) makes this member the holder of r, and no other member, in
//     one compare-and-swap that fails with ErrNotOwner, changing nothing,
//     unless the ConfigMap says this member, under its current Lease, owns
//     all of r. The Runner calls it once it has copied r's history from
//     the holders (at once for slices nobody holds: it is the first).
//   - A member that leaves (ctx ended, i.e. SIGTERM) stops its Runner and
//     releases its slices as above, then keeps its Lease, marked
//     AnnotationLeaving and renewed every D/3, while the ConfigMap names it
//     holder of any slice, for at most Options.HoldWait (default 30s), and
//     deletes it then; at once if no other member is there to take them
//     over (the last member leaves, or the only one restarts). A leaving Lease is alive (it does not expire, its
//     owner entry stands) but is no member for the assignment: the others
//     take its slices at once and copy their history from it meanwhile.
//     It logs the ranges it left held that nobody took over. Give the pod a
//     termination grace period above D + HoldWait.
//   - Status.Owners (read from the ConfigMap every step) and
//     Status.Addresses (of every Lease) say where to route a request.
//   - With Options.Warm, a member whose target gains slices runs Warm over
//     them (once per target: a copy of their history from their holders)
//     and then lists them on its Lease (AnnotationWarm). A member giving
//     slices up, because its target shrank or it leaves (its Lease marked
//     leaving first), keeps them, its Runner running, until every member
//     whose target takes a part of them is warm for it, or for at most
//     HoldWait (then it logs which were not); so the writes of moving
//     slices pause only for what their holder wrote since the copy ahead.
//
// Holdings copy nothing and serve nothing (the caller does both); a member that took slices is not told when their holder is
// reachable (its Runner asks Holders again). A holder whose Lease is gone
// (it crashed, or left before its holdings were taken over) keeps its
// holdings until it comes back: the owners of its slices wait for it. An
// operator who lost a pod's volume for good deletes its "holds.<pod>" key
// from the ConfigMap (kubectl edit configmap <group>-positions), accepting
// that the history of those slices is gone: their next owner holds them
// from nothing.
//
// What it does not do: it does not watch (a change is seen at the next
// step, so a scale step settles in about two steps, a crash in D plus two
// steps), does not move the consumer's applied seqNrs between stores (the
// offsets make them unnecessary), and does not balance by load.
//
// RBAC, in the namespace: get, list, create, update and delete on leases
// (coordination.k8s.io); get, create and update on configmaps.
package group

// Package admin runs the consumers of a process and serves the AdminService
// over them: their status, stored offsets and filters, for streamctl.
//
// Any service that consumes with package consumer can be steered as streamd
// is: mount the AdminService on the service's own gRPC server with one call,
// and run the consumers through the Registry it returns:
//
//	reg, err := admin.Mount(srv, admin.Options{ // srv: the service's *grpc.Server
//		Consumers: []*consumer.Consumer{c},
//		Producer:  p.Server(), // optional: a service that serves its own journal
//	})
//	go reg.Run(ctx) // runs the consumers until ctx is done
//
// Then `streamctl --addr <service> consumers list`, `offsets
// list|get|set|reset` and `filters list|add|remove` work against the service
// (examples/service is such a service). With a Producer, ListConsumers also
// lists the consumers reading from the service's journal, as the producer
// last heard of them (producer.Server.Readers).
//
// A Registry runs each consumer in its own loop. A consumer that stops on an
// error that retrying cannot cure (a changed journal, an offset below
// retention) stays stopped, its error visible in ListConsumers, until an
// operator moves its offsets (MoveOffsets), which starts it again; the
// other consumers keep running. MoveOffsets with execute stops the
// consumer first, so that the consumer does not save its own offset over
// the moved one, and starts it again after. UpdateConsumerFilter goes
// through consumer.UpdateFilter: stored, then sent on the open streams.
//
// A consumer that a member of a consumer group runs (AddMember: streamd's
// grouped replications) is shown as the others, with its group and the
// slices of the consumer its member runs now; the Registry does not run it,
// and refuses to move its offsets or change its filter (ErrGroupMember,
// FailedPrecondition): they are the positions of this process's copy over
// the slices its group gives it.
//
// The Registry does not authenticate: the server it is registered on does
// (streamd requires a token granted "*" for the AdminService).
package admin

// Package publisher publishes events to a remote streamd over one
// PublishStream, for a service that does not run the journal in its own
// process. Every publish is an append of its own, answered on its own; the
// publishes waiting to be sent travel together, many to a request, so that a
// service publishing one event at a time pays the stream's per-message cost
// once per request rather than once per event.
//
// # Guarantees
//
//   - A publish is answered (Ack.Done) once the journal holds it durably
//     (fsync'd, unless the journal runs with async durability) or has
//     refused it. A refused event (invalid, or not at its expected seq_nr)
//     fails alone: the events sent with it are appended. An event that
//     cannot be encoded is refused by PublishAsync itself, which encodes
//     each event once, in the caller's goroutine.
//   - The server says its limits when the stream opens (New waits for
//     them): an event over them (its payload, or the event encoded) is
//     refused by PublishAsync alone, with ErrTooLarge, and never sent, and
//     a request never exceeds the server's message limit, which would end
//     the stream.
//   - Publishes are appended in the order PublishAsync was called: one
//     stream, requests sent and committed in order, events of a request in
//     order.
//   - Batching adds no wait: a request carries what is waiting when the
//     sender is free to send (at most Options.MaxInFlight requests await
//     their answer); while the window is full, publishes gather.
//   - If the stream fails (the server goes away, ctx ends), the publishes in
//     flight get an error saying they may or may not have been appended,
//     later ones fail at once, and the Publisher stays failed: Close it and
//     make a new one. It does not reconnect or resend by itself, so nothing
//     is appended twice behind the caller's back.
//
// It imports only the wire types and gRPC.
package publisher

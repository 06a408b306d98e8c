// Package aggregate is streamd's aggregation stage: it reads events from the
// local journal, folds them into tumbling windows per group, and appends one
// summary event per window and group to the same journal, so that another
// region can replicate the summaries alone (include type=<summary type>) and
// raise the detail with filters only when it needs it.
//
// What a Stage guarantees:
//
//   - Exactly once. The summaries of the windows that close and the stage's
//     checkpoint (its next offset, watermark, open windows, counters and the
//     last seqNr of every summary entity it wrote) are committed in one
//     journal transaction (journal.AppendWith): after a crash (SIGKILL, power
//     loss with sync durability) the stage resumes from its last checkpoint
//     and reads the events after it again, and no summary it wrote is lost
//     or written twice. Each summary is appended with the seqNr its entity
//     must get (the checkpoint's last seqNr + 1), so a summary written again
//     — or an event another writer put into a summary entity — is refused
//     by the journal (journal.SeqNrConflictError) instead of duplicated; the
//     stage then stops with that error.
//   - Windows are tumbling, [start, start+Window), cut by event time: the
//     journal's commit time of the event, or a JSON payload field holding
//     unix milliseconds (Options.TimeField). The watermark is the latest
//     event time read (in offset order); a window closes when the watermark
//     reaches its end + Grace. With the journal's time the watermark also
//     follows the clock, one second behind (for appends being committed),
//     while the stage has read everything, so a window closes Grace + 1s
//     after its end even when no more events come; with a payload time a
//     window closes only when an event late enough arrives.
//     An event whose window has closed already is late: counted, not
//     aggregated.
//   - Bad payloads never stop the stage: a payload that is not a JSON object,
//     or lacks a group-by, time or value field (or has a value that is not a
//     number), is counted by reason (Status, and streamd's metrics) and
//     skipped, with a log line at most every LogEvery.
//   - The stage skips events of its own output entity type, so a filter that
//     matches everything does not fold summaries into summaries.
//
// A Set runs stages (one that stopped on an error runs again from its
// checkpoint after a backoff) and serves the AggregateService over them,
// which `streamctl aggregates list` reads.
//
// A summary's payload is a JSON object (Summary): the stage name, the window
// in unix milliseconds, the group's key values, the count of events and per
// value field its count, sum, min, max, avg and last (those asked for). Its
// entity id comes from a template over the group's key values (EntityID).
//
// What it does not do: it reads only the journal it runs on (replicate
// first to aggregate another region's events); it keeps open windows in
// memory and in its checkpoint, bounded by Options.MaxGroups groups (events
// of further groups are counted and skipped); it computes no percentiles; a
// change of the window, grace, keys or values drops the open windows of the
// old definition (logged) and keeps the position and seqNrs; and it keeps
// one small entry per summary entity id it ever wrote, in its checkpoint.
package aggregate

// Package console serves streamd's web console: a few pages, embedded in
// the binary, that show the journal, the consumers, a live tail, the
// replications between regions with the primaries of the entity types and
// the entities this region has interest in (replication on demand), and
// the aggregation stages, and steer the consumers streamd runs.
//
// Guarantees:
//   - The console reads and acts through streamd's own API: events come
//     from EventStreamService.Subscribe (the same filters and start
//     positions as streamctl tail), consumers from AdminService.ListConsumers,
//     and an offset move or a filter change goes through MoveOffsets and
//     UpdateConsumerFilter, previewed (a dry run, or the filter it would
//     leave) before it is executed. The regions page fails a region over
//     to this one through PrimaryService.Failover (streamctl primary
//     failover): its dry run's report (per region how far it applied the
//     failed region's journal and the last offset it knows it wrote, the
//     events at risk, the types moving, the failover point, a warning when
//     another region applied more) comes first, and Execute sends exactly
//     the request of that dry run. Entity types show their primary as
//     PrimaryService.GetPrimary gives it at each sample (an on-demand type
//     with its summary types and inactivity, from the config), entries of
//     interest what InterestService.ListInterests lists, aggregation stages
//     what AggregateService.ListAggregates lists. Journal figures come from
//     the journal's Info and its health from Err; its bytes on disk and the
//     free space of its file system from internal/diskspace, as the metrics
//     streamd_journal_disk_bytes and streamd_disk_free_bytes give them;
//     rates and latencies from the Prometheus metrics streamd already
//     exports (the bytes each replication link received, summaries of
//     aggregation stages apart from the detail, from
//     streamd_replication_received_bytes_total), sampled every
//     Options.Interval and kept for Options.History.
//   - With Options.Tokens set, every page's data needs a bearer token, given
//     once in a login form and kept server-side behind an HttpOnly,
//     SameSite=Strict session cookie: the read-only views need a token
//     granted a stream (the tail only streams it is granted), actions need
//     a token granted "*". Without Tokens the console answers only requests
//     whose Host is a loopback name, so that a web page cannot reach it
//     through DNS rebinding.
//   - No action without a CSRF-safe request: actions are POSTs with a JSON
//     body, a per-session CSRF token in a header a cross-origin page cannot
//     set or read, and an Origin, if sent, that is the console's own.
//   - Live data reaches the browser over Server-Sent Events: one stream of
//     snapshots (every Options.Interval), and one stream per live tail.
//     Close ends both, so that an http.Server's Shutdown does not wait for
//     them.
//   - The assets (HTML, JavaScript, CSS) are embedded; the pages load
//     nothing from elsewhere. Charts are SVG drawn by plain JavaScript.
//
// The console does not authenticate the gRPC calls it makes: the caller
// gives it a connection to streamd's services that it alone can reach (an
// in-memory listener in cmd/streamd), and the console checks every request
// against Options.Tokens itself. A consumer's lag in seconds is how long ago
// its lag was last 0, within the History: the journals of other regions,
// whose timestamps would tell more, are not read. The last windows of an
// aggregation stage are those the samples saw as its last window since the
// console started: a window written and followed by another between two
// samples is not shown (its events are in the stage's counts). Entity types
// show no count of the entities each region owns (that would fold every
// entity's history). An entry of interest's expiry counts down in the
// browser from the last sample's: a use of the entity moves it at the next
// sample. The failover form offers the regions this one replicates from;
// PrimaryService.Failover refuses a "to" other than this region.
package console

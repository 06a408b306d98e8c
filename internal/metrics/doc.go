// Package metrics exports a streamd daemon's activity to Prometheus.
//
// A Metrics is the journal's Observer and the producer's StreamObserver; it
// counts commits, fsyncs (with a latency histogram), retention and what each
// stream sends to each consumer, and says which build runs
// (streamd_build_info). PublishStats, a gRPC stats handler, counts refused
// publishes by reason (streamd_publish_refused_total), whoever refused them:
// gRPC's message limit, authentication, rate limits or the journal. Journal
// size and bounds, each consumer's lag, the journal's bytes on disk (its
// files' allocated blocks) and the free space of its file system (both as
// internal/diskspace measures them), and whether the journal failed are read
// at scrape time, so they are never stale and cost nothing between scrapes.
//
// Consumer names come from clients, so the consumer label is bounded: the
// first ConsumerLabelLimit names keep their own series, later ones share
// OtherConsumers (whose lag is that of the furthest of them).
//
// It does not serve HTTP: the daemon mounts Handler where it wants. Metrics
// that have seen no activity yet (a stream no one opened) are absent, not 0;
// the refusal reasons start at 0 so that rate() sees the first one.
package metrics

// Package metrics exports a streamd daemon's activity to Prometheus.
//
// A Metrics is the journal's Observer and the producer's StreamObserver; it
// counts commits, fsyncs, retention and what each stream sends to each
// consumer, and says which build runs (streamd_build_info). Journal size
// and bounds, and each consumer's lag, are read at scrape time, so they are
// never stale and cost nothing between scrapes.
//
// It does not serve HTTP: the daemon mounts Handler where it wants. Metrics
// that have seen no activity yet (a stream no one opened) are absent, not 0.
package metrics

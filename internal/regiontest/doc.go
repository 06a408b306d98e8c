// Package regiontest runs regions of streamd inside a test process, for the
// tests of topology and of the packages built on it: a Region is a producer
// with a journal named after the region, served over TCP on 127.0.0.1; a
// World is regions that replicate from each other, each link through a
// netproxy.Proxy that a test can cut and restore.
//
// Everything a World starts is stopped by the test's cleanup. A Region can
// be stopped and started again on the same directory and address.
//
// ApplyByOrigin reads journals the way an exactly-once consumer with
// DedupeOrigin does and counts what it applied, for tests of regions whose
// journals hold copies of the same events.
//
// It is for tests only: it fails the test it is given instead of returning
// errors, and it checks nothing about what the regions hold.
package regiontest

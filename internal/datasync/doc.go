// Package datasync makes a file's data durable without its timestamps
// (fdatasync), for the journal's WAL and the benchmark that measures it.
package datasync

// Package diskspace measures disk space for streamd's operators: the bytes
// the files under a directory take on disk, and the free and total space of
// its file system. The metrics, the console and streamd's start-up check
// read them here, so that they give one answer.
//
// Guarantees:
//   - Used counts allocated blocks (st_blocks × 512), what a file takes
//     from the file system: Badger's value log, a sparse file of 2 GiB,
//     counts what is written in it, not its length. Where the platform
//     gives no block count it counts a file's length.
//   - Free is the space an unprivileged process may still write (the
//     file system's available blocks, as df shows them): what the
//     journal's --min-free-bytes reserve is measured against.
//
// It does not cache: each call reads the file system. Used walks the whole
// directory, so it is for scrapes and samples, not for a hot path. It
// knows nothing of the journal's layout: it counts every regular file
// under the directory it is given.
package diskspace

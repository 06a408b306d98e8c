// Package diskspace measures disk space for streamd's operators: the bytes
// the files under a directory take on disk. The metrics and the console
// read them here, so that they give one answer.
//
// Guarantees:
//   - Used counts allocated blocks (st_blocks × 512), what a file takes
//     from the file system: Badger's value log, a sparse file of 2 GiB,
//     counts what is written in it, not its length. Where the platform
//     gives no block count it counts a file's length.
//
// It does not cache: each call reads the file system. Used walks the whole
// directory, so it is for scrapes and samples, not for a hot path. It
// knows nothing of the journal's layout: it counts every regular file
// under the directory it is given.
package diskspace

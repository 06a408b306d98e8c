// Package fault is streamd's reliability suite: its tests run real streamd
// processes, publishers and consumer processes with TCP proxies between them
// (internal/netproxy), inject faults — kill -9 and SIGTERM of streamd and of
// consumers under load, partitions, latency, resets and stalls of the links,
// a replaced journal, a full disk — and check the recorded history.
//
// The package itself holds only the checker (Check): given what publishers
// were told was acknowledged, what the journal holds at the end and what the
// consumers applied, it counts acknowledged events lost, events applied
// twice, per-entity order violations, gaps and events that differ from what
// was written. The harness and the faults are in the _test.go files:
//
//	go test ./internal/fault                        # every fault, then 20 kill -9 and 20 partitions
//	go test ./internal/fault -timeout 30m -long     # 150 random faults, more load
//	STREAMD_FAULT_LONG=1 go test -timeout 30m ./internal/fault   # the same
//	go test ./internal/fault -run TestFaults -fault-cycles=40 -fault-seed=N
//
// TestFaults logs the seed it used; -fault-seed replays the same schedule
// (process timing still differs). TestDiskFull needs root to mount a tmpfs
// and a loop-device ext4 of 64 MiB and skips, saying why, where it cannot.
package fault

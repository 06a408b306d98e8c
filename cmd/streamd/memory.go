package main

import (
	"fmt"
	"os"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/streamd/streamd/internal/bytesize"
)

// defaultMemory is --memory's default.
const defaultMemory = 256 << 20

// leastMemory is the smallest --memory accepted.
const leastMemory = 64 << 20

// memoryBudget is what --memory sets: the journal's Badger memtable and
// block cache, and the Go runtime's soft memory limit.
type memoryBudget struct {
	memTable, blockCache int64
	// goLimit is the runtime's soft limit (debug.SetMemoryLimit); 0 leaves
	// it to GOMEMLIMIT, which wins when set.
	goLimit int64
}

// memoryFlag reads --memory. Of the budget, a sixteenth goes to the
// memtable (unless --memtable-size sets it: between 7MiB and 256MiB) and
// one to the block cache; the Go runtime is held to five eighths (the
// journal's memtables, block cache, live ring and buffers are Go memory);
// the rest is for the files streamd maps: Badger's memtable logs, the
// tables it is compacting, the binary.
func memoryFlag(c *cli.Context) (memoryBudget, error) {
	var memTable int64
	if c.IsSet("memtable-size") {
		memTable = int64(bytesize.Get(c, "memtable-size"))
	}
	return budgetOf(int64(bytesize.Get(c, "memory")), memTable, os.Getenv("GOMEMLIMIT") != "")
}

// budgetOf splits memory (see memoryFlag); memTable, if not 0, and
// GOMEMLIMIT, if set, win.
func budgetOf(memory, memTable int64, goMemLimitSet bool) (memoryBudget, error) {
	if memory < leastMemory {
		return memoryBudget{}, fmt.Errorf("--memory %v: want at least %v", bytesize.Size(memory), bytesize.Size(leastMemory))
	}
	b := memoryBudget{memTable: min(max(memory/16, 7<<20), 256<<20), blockCache: memory / 16, goLimit: memory * 5 / 8}
	if memTable != 0 {
		b.memTable = memTable
	}
	if goMemLimitSet {
		b.goLimit = 0
	}
	return b, nil
}

// apply sets the Go runtime's soft memory limit.
func (b memoryBudget) apply() {
	if b.goLimit > 0 {
		debug.SetMemoryLimit(b.goLimit)
	}
}

package main

import (
	"strings"
	"testing"
)

// --memory splits into the memtable, the block cache and the Go limit;
// --memtable-size and GOMEMLIMIT win; too small a budget is refused.
func TestBudgetOf(t *testing.T) {
	for _, tc := range []struct {
		memory, memTable int64
		goMemLimitSet    bool
		want             memoryBudget
	}{
		{256 << 20, 0, false, memoryBudget{memTable: 16 << 20, blockCache: 16 << 20, goLimit: 160 << 20}},
		{64 << 20, 0, false, memoryBudget{memTable: 7 << 20, blockCache: 4 << 20, goLimit: 40 << 20}},
		{8 << 30, 0, false, memoryBudget{memTable: 256 << 20, blockCache: 512 << 20, goLimit: 5 << 30}},
		{1 << 30, 32 << 20, true, memoryBudget{memTable: 32 << 20, blockCache: 64 << 20}},
	} {
		got, err := budgetOf(tc.memory, tc.memTable, tc.goMemLimitSet)
		if err != nil || got != tc.want {
			t.Errorf("budgetOf(%d, %d, %v) = %+v, %v; want %+v", tc.memory, tc.memTable, tc.goMemLimitSet, got, err, tc.want)
		}
	}
	if _, err := budgetOf(32<<20, 0, false); err == nil || !strings.Contains(err.Error(), "--memory 32MiB: want at least 64MiB") {
		t.Fatalf("budgetOf(32MiB) = %v", err)
	}
}

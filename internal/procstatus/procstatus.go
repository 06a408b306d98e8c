// Package procstatus reads a process's memory figures from
// /proc/<pid>/status (Linux): what the memory tests and the benchmark
// harness measure a streamd by.
package procstatus

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Read returns the kB fields of /proc/<pid>/status (VmRSS, RssAnon,
// RssFile, VmHWM, …) in bytes, by name without the colon.
func Read(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	s := map[string]int64{}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "kB" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("/proc/%d/status: %q: %w", pid, strings.TrimSpace(line), err)
			}
			s[strings.TrimSuffix(f[0], ":")] = kb << 10
		}
	}
	if s["VmHWM"] == 0 {
		return nil, fmt.Errorf("/proc/%d/status has no VmHWM", pid)
	}
	return s, nil
}

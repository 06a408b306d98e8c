package buildinfo

import (
	"runtime/debug"
	"testing"
)

func TestFrom(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   debug.BuildInfo
		want Info
	}{
		{"tagged", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "false"}}},
			Info{"v1.2.3", "abc123", "go1.26.8"}},
		{"dirty", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261204120000-abc123000000+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}}},
			Info{"v0.0.0-20261204120000-abc123000000+dirty", "abc123-dirty", "go1.26.8"}},
		{"devel, no vcs", debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			Info{"dev", "unknown", "go1.26.8"}},
		{"empty", debug.BuildInfo{}, Info{"dev", "unknown", ""}},
	} {
		if got := From(&tc.bi); got != tc.want {
			t.Errorf("%s: From = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// failoverServer answers every Failover with resp.
type failoverServer struct {
	streamdv1.UnimplementedPrimaryServiceServer
	resp *streamdv1.FailoverResponse
}

func (s failoverServer) Failover(context.Context, *streamdv1.FailoverRequest) (*streamdv1.FailoverResponse, error) {
	return s.resp, nil
}

// serveFailover serves resp as every Failover's answer on 127.0.0.1 and
// returns the address.
func serveFailover(t *testing.T, resp *streamdv1.FailoverResponse) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	streamdv1.RegisterPrimaryServiceServer(g, failoverServer{resp: resp})
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String()
}

// The dry run's table: a row per region with the sums while every region
// reports one journal of the failed region; a row per region and journal,
// the journal id's first bytes in hex, once one reports several (the
// failed region's pods share its entities, each its own journal).
func TestPrimaryFailoverJournals(t *testing.T) {
	jp := func(id string, applied, known uint64) *streamdv1.JournalProgress {
		return &streamdv1.JournalProgress{JournalId: []byte(id), AppliedOffset: applied, KnownOffset: known}
	}
	unreachable := &streamdv1.RegionProgress{Region: "sa", Error: "region \"sa\" is unavailable"}
	for _, tc := range []struct {
		name     string
		progress []*streamdv1.RegionProgress
		want     []string // lines of the table
	}{
		{
			name: "one journal",
			progress: []*streamdv1.RegionProgress{
				{Region: "us", Reachable: true, AppliedOffset: 10, KnownOffset: 12, Journals: []*streamdv1.JournalProgress{jp("\x01\x02\x03\x04\x05", 10, 12)}},
				unreachable,
			},
			want: []string{`REGION\s+REACHABLE\s+APPLIED\s+KNOWN`, `us\s+yes\s+10\s+12`, `sa\s+no\s+-\s+-`},
		},
		{
			name: "two journals",
			progress: []*streamdv1.RegionProgress{
				{Region: "us", Reachable: true, AppliedOffset: 13, KnownOffset: 18, Journals: []*streamdv1.JournalProgress{jp("\x01\x02\x03\x04\x05", 10, 10), jp("\xab\xcd\xef\x01\x02", 3, 8)}},
				{Region: "ap", Reachable: true, AppliedOffset: 7, KnownOffset: 12, Journals: []*streamdv1.JournalProgress{jp("\x01\x02\x03\x04\x05", 7, 12)}},
				unreachable,
			},
			want: []string{
				`REGION\s+REACHABLE\s+JOURNAL\s+APPLIED\s+KNOWN`,
				`us\s+yes\s+01020304\s+10\s+10`, `us\s+yes\s+abcdef01\s+3\s+8`,
				`ap\s+yes\s+01020304\s+7\s+12`,
				`sa\s+no\s+-\s+-\s+-`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveFailover(t, &streamdv1.FailoverResponse{EntityTypes: []string{"order"}, Progress: tc.progress, AtRisk: 4})
			var stdout, stderr bytes.Buffer
			if code := run([]string{"streamctl", "--addr", addr, "primary", "failover", "--from", "eu", "--to", "us"}, strings.NewReader(""), &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			lines := strings.Split(stdout.String(), "\n")
			if len(lines) < len(tc.want) {
				t.Fatalf("output:\n%s", stdout.String())
			}
			for i, w := range tc.want {
				if !regexp.MustCompile("^" + w + "$").MatchString(strings.TrimSpace(lines[i])) {
					t.Fatalf("line %d is %q, want %s; output:\n%s", i+1, lines[i], w, stdout.String())
				}
			}

			// JSON: one object per region, with its journals.
			stdout.Reset()
			if code := run([]string{"streamctl", "--output", "json", "--addr", addr, "primary", "failover", "--from", "eu", "--to", "us"}, strings.NewReader(""), &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			dec := json.NewDecoder(&stdout)
			for _, rp := range tc.progress {
				var row struct {
					Region   string
					Journals []struct {
						JournalID     string `json:"journal_id"`
						AppliedOffset uint64 `json:"applied_offset"`
					}
				}
				if err := dec.Decode(&row); err != nil || row.Region != rp.Region || len(row.Journals) != len(rp.Journals) {
					t.Fatalf("JSON row of %s: %+v, %v", rp.Region, row, err)
				}
				if len(rp.Journals) > 0 && row.Journals[0].JournalID != "0102030405" {
					t.Fatalf("JSON row of %s: journal %q, want the whole id in hex", rp.Region, row.Journals[0].JournalID)
				}
			}
		})
	}
}

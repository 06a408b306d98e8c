package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/streamd/streamd/internal/testwait"
)

// jsonClient calls streamd as a service in another language would: the
// message types come from the server's reflection (no generated Go code),
// requests and answers are JSON (protojson, as grpcurl writes them).
type jsonClient struct {
	t     *testing.T
	conn  *grpc.ClientConn
	files *protoregistry.Files
}

func newJSONClient(t *testing.T, conn *grpc.ClientConn, services ...string) *jsonClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fds := map[string]*descriptorpb.FileDescriptorProto{}
	for _, svc := range services {
		if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: svc}}); err != nil {
			t.Fatal(err)
		}
		resp, err := rc.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range resp.GetFileDescriptorResponse().GetFileDescriptorProto() {
			fd := &descriptorpb.FileDescriptorProto{}
			if err := proto.Unmarshal(raw, fd); err != nil {
				t.Fatal(err)
			}
			fds[fd.GetName()] = fd
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range fds {
		set.File = append(set.File, fd)
	}
	files, err := protodesc.NewFiles(set)
	if err != nil {
		t.Fatal(err)
	}
	return &jsonClient{t: t, conn: conn, files: files}
}

// call invokes method ("streamd.v1.EventStreamService/Publish") with the
// JSON request and returns the JSON answer, or the call's error.
func (c *jsonClient) call(method, request string) (string, error) {
	c.t.Helper()
	svc, name, _ := strings.Cut(method, "/")
	d, err := c.files.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		c.t.Fatal(err)
	}
	m := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(name))
	in, out := dynamicpb.NewMessage(m.Input()), dynamicpb.NewMessage(m.Output())
	if err := protojson.Unmarshal([]byte(request), in); err != nil {
		c.t.Fatalf("%s: request %s: %v", method, request, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.conn.Invoke(ctx, "/"+method, in, out); err != nil {
		return "", err
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(out)
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.ReplaceAll(string(b), " ", ""), nil
}

// freeAddrs returns n local addresses nothing listens on (yet).
func freeAddrs(t testing.TB, n int) []string {
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, l.Addr().String())
		l.Close()
	}
	return addrs
}

// twoRegionProject writes the config of a project of two regions, us and
// eu, on free ports of 127.0.0.1: every type pinned to eu but accounts
// (request-region, home eu), carts (replicated) and clicks (local).
func twoRegionProject(tb testing.TB) (cfg string, addrs []string) {
	tb.Helper()
	addrs = freeAddrs(tb, 2)
	cfg = filepath.Join(tb.TempDir(), "project.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `regions:
  - {name: us, addrs: [%q]}
  - {name: eu, addrs: [%q]}
default_primary: eu
entity_types:
  - {name: account, mode: request-region, home: eu}
  - {name: cart, mode: replicated}
  - {name: click, mode: local}
`, addrs[0], addrs[1]), 0o600); err != nil {
		tb.Fatal(err)
	}
	return cfg, addrs
}

// A service in any language publishes every mode with the proto alone:
// JSON requests to two regions of one project, built from the server's
// reflection. The metrics count the forward, the takeover and the CRDT
// operations, and show the replication lag per region.
func TestPublishEachModeAsJSON(t *testing.T) {
	cfg, addrs := twoRegionProject(t)
	us := startDaemon(t, t.TempDir(), "--region", "us", "--config", cfg, "--listen", addrs[0])
	eu := startDaemon(t, t.TempDir(), "--region", "eu", "--config", cfg, "--listen", addrs[1])
	c := newJSONClient(t, us.conn, "streamd.v1.EventStreamService", "streamd.v1.PrimaryService")
	const publish = "streamd.v1.EventStreamService/Publish"
	for _, tc := range []struct{ name, request, want string }{
		{"pinned (unlisted, to eu)", `{"events":[{"entity_type":"order","entity_id":"o1","event_type":"Placed","payload":"eA=="}]}`,
			`{"appended":[{"offset":"1","seq_nr":"1","region":"eu","version":"1"}]}`},
		{"request-region (taken over from eu)", `{"events":[{"entity_type":"account","entity_id":"a1","event_type":"Opened"}]}`,
			`"region":"us","version":"2"}]}`},
		{"replicated", `{"events":[{"entity_type":"cart","entity_id":"c1","crdt_ops":[{"field":"items","add_element":"apple"},{"field":"qty","add_counter":"2"},{"field":"note","set_register":"gift"}]}]}`,
			`"seq_nr":"3"}]}`},
		{"local", `{"events":[{"entity_type":"click","entity_id":"k1","event_type":"Clicked"}]}`,
			`"seq_nr":"1"}]}`},
	} {
		got, err := c.call(publish, tc.request)
		if err != nil || !strings.HasSuffix(got, tc.want) {
			t.Errorf("%s: %s, %v; want it to end with %s", tc.name, got, err, tc.want)
		}
	}
	_, err := c.call(publish, `{"events":[{"entity_type":"click","entity_id":"k1","crdt_ops":[{"field":"n","add_counter":"1"}]}]}`)
	if err == nil || !strings.Contains(err.Error(), `InvalidArgument`) || !strings.Contains(err.Error(), `entity type "click" is local; crdt_ops are for replicated entity types`) {
		t.Errorf("ops on a local type: %v", err)
	}
	euJSON := newJSONClient(t, eu.conn, "streamd.v1.PrimaryService")
	var state string
	if !testwait.Until(20*time.Second, func() bool {
		state, err = euJSON.call("streamd.v1.PrimaryService/State", `{"entity_type":"cart","entity_id":"c1"}`)
		return err == nil && state == `{"registers":{"note":"gift"},"counters":{"qty":"2"},"sets":{"items":{"elements":["apple"]}}}`
	}) {
		t.Fatalf("cart/c1 in eu: %s, %v", state, err)
	}

	mfs := scrape(t, us.MetricsAddr)
	for name, want := range map[string]string{
		"streamd_primary_forwards_total": "order", "streamd_primary_takeovers_total": "account", "streamd_crdt_ops_total": "cart",
	} {
		ms := mfs[name].GetMetric()
		if len(ms) != 1 || ms[0].GetLabel()[0].GetValue() != want {
			t.Errorf("%s = %v; want one series for %s", name, ms, want)
		}
	}
	if v := mfs["streamd_crdt_ops_total"].GetMetric()[0].GetCounter().GetValue(); v != 3 {
		t.Errorf("streamd_crdt_ops_total = %v, want 3", v)
	}
	if ms := mfs["streamd_region_replication_lag_events"].GetMetric(); len(ms) != 1 || ms[0].GetLabel()[0].GetValue() != "eu" {
		t.Errorf("streamd_region_replication_lag_events = %v; want one series, region eu", ms)
	}
}

package e2e

import (
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/streamd/streamd/consumer"
)

// A consumer opens its connections with its own flow-control windows
// (consumer.WindowDialOptions), not gRPC's 64 KiB default, which holds a
// catch-up back (BENCHMARKS.md): the HTTP/2 settings it sends say so.
func TestConsumerConnectionWindows(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	got := make(chan map[http2.SettingID]uint32, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.ReadFull(conn, make([]byte, len(http2.ClientPreface))); err != nil {
			return
		}
		fr := http2.NewFramer(io.Discard, conn)
		settings := map[http2.SettingID]uint32{}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				got <- settings
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				f.ForeachSetting(func(s http2.Setting) error { settings[s.ID] = s.Val; return nil })
				// A connection window above 64 KiB follows at once.
				conn.SetDeadline(time.Now().Add(time.Second))
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					settings[0] = f.Increment // the connection's window, above 64 KiB
				}
				got <- settings
				return
			}
		}
	}()
	c, err := consumer.New(consumer.Options{
		Producers: []string{lis.Addr().String()}, Name: "reader", Store: openStore(t, t.TempDir()),
		Handler:    newRecorder().handle,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	stop := runConsumer(t, c)
	defer stop()
	var settings map[http2.SettingID]uint32
	select {
	case settings = <-got:
	case <-time.After(20 * time.Second):
		t.Fatal("the consumer did not connect")
	}
	if w := settings[http2.SettingInitialWindowSize]; w != 4<<20 {
		t.Errorf("stream window %d, want %d (4 MiB)", w, 4<<20)
	}
	if w := settings[0] + 65535; w != 16<<20 { // 65,535 without an update
		t.Errorf("connection window %d, want %d (16 MiB)", w, 16<<20)
	}
}

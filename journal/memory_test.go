package journal

import (
	"context"
	"fmt"
	"strings"
	"testing"

	streamdv1 "github.com/streamd/streamd/proto/streamd/v1"
)

// A memtable too small for Badger is refused by Validate with the field's
// name, not by Badger at open; the smallest it accepts opens.
func TestMemTableSizeBounds(t *testing.T) {
	for _, tc := range []struct {
		size int64
		ok   bool
	}{
		{-1, false},
		{1 << 20, false},
		{minMemTableSize - 1, false},
		{minMemTableSize, true},
	} {
		j, err := Open(t.TempDir(), Options{MemTableSize: tc.size})
		if tc.ok {
			if err != nil {
				t.Errorf("MemTableSize %d: %v", tc.size, err)
				continue
			}
			if err := j.Close(); err != nil {
				t.Errorf("MemTableSize %d: close: %v", tc.size, err)
			}
			continue
		}
		if err == nil {
			j.Close()
			t.Errorf("MemTableSize %d: Open accepted it", tc.size)
		} else if !strings.Contains(err.Error(), "Options.MemTableSize") {
			t.Errorf("MemTableSize %d: error does not name the field: %v", tc.size, err)
		}
	}
}

// Compression is checked by Validate and ParseCompression, naming what is
// wrong.
func TestCompressionRefused(t *testing.T) {
	if _, err := Open(t.TempDir(), Options{Compression: 7}); err == nil || !strings.Contains(err.Error(), "Options.Compression") {
		t.Errorf("Compression 7: got %v, want an error naming Options.Compression", err)
	}
	if _, err := ParseCompression("lz4"); err == nil || !strings.Contains(err.Error(), `"lz4"`) {
		t.Errorf(`ParseCompression("lz4"): got %v, want an error naming it`, err)
	}
	for _, c := range []Compression{CompressionZSTD, CompressionSnappy, CompressionNone} {
		if got, err := ParseCompression(c.String()); err != nil || got != c {
			t.Errorf("ParseCompression(%q) = %v, %v", c, got, err)
		}
	}
}

// Badger records each table's compression, so a journal reopened with other
// Compression reads the tables written before.
func TestCompressionChangeKeepsTables(t *testing.T) {
	dir := t.TempDir()
	for i, c := range []Compression{CompressionNone, CompressionSnappy, CompressionZSTD, CompressionNone} {
		j, err := Open(dir, Options{Compression: c, MemTableSize: minMemTableSize})
		if err != nil {
			t.Fatalf("open %d with %v: %v", i, c, err)
		}
		if got := len(readAll(t, j)); got != i*3000 {
			t.Fatalf("open %d with %v: read %d events, want %d", i, c, got, i*3000)
		}
		// 3000 events of 1 KiB, flushed to a level-0 table at Close.
		for k := range 6 {
			batch := make([]*streamdv1.Event, 500)
			for n := range batch {
				batch[n] = ev("t", fmt.Sprintf("e%d", n%50), strings.Repeat(string(rune('a'+k)), 1024))
			}
			if _, err := j.Append(context.Background(), batch...); err != nil {
				t.Fatal(err)
			}
		}
		checkInvariants(t, readAll(t, j), 1)
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

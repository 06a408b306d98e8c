package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// natsBenchRate reads what `nats bench` (natscli v0.5.0) writes with --csv,
// and refuses a file without the column or a value it can read.
func TestNatsBenchRate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.csv", "#RunID,ClientID,MsgCount,MsgBytes,MsgsPerSec,BytesPerSec,DurationSecs\n"+
		"7Mtk,P0,200000,12800000,37952,4857869.99,2.63\n")
	if r, err := natsBenchRate(good); err != nil || r != 37952 {
		t.Fatalf("natsBenchRate = %v, %v; want 37952", r, err)
	}
	two := write("two.csv", "#RunID,ClientID,MsgsPerSec\nx,P0,100\nx,P1,50\n")
	if r, err := natsBenchRate(two); err != nil || r != 150 {
		t.Fatalf("two clients: %v, %v; want 150", r, err)
	}
	for name, text := range map[string]string{
		"nocol.csv": "#RunID,ClientID\nx,P0\n",
		"empty.csv": "#RunID,ClientID,MsgsPerSec\n",
		"bad.csv":   "#RunID,ClientID,MsgsPerSec\nx,P0,fast\n",
		"short.csv": "#RunID,ClientID,MsgsPerSec\nx\n",
	} {
		if _, err := natsBenchRate(write(name, text)); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want an error naming the file", name, err)
		}
	}
}

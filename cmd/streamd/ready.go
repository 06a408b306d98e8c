package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// ready is what --ready-file holds: where streamd serves, so that a
// supervisor or a test that asked for ephemeral ports (127.0.0.1:0) learns
// them without reading the log.
type ready struct {
	GRPC    string `json:"grpc"`
	Metrics string `json:"metrics,omitempty"` // absent without --metrics-listen
}

// write writes r to path atomically: a reader sees no file or the whole of
// it, never a part.
func (r ready) write(path string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".ready-*")
	if err != nil {
		return fmt.Errorf("--ready-file %s: %w", path, err)
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("--ready-file %s: %w", path, err)
	}
	return nil
}

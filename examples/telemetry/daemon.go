package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// daemon is one region's streamd process: its config file, data directory
// and log file live in dir. It listens on the same address across restarts.
type daemon struct {
	name, bin, dir string
	args           []string
	addr           string

	cmd    *exec.Cmd
	exited chan struct{}
}

// startDaemon writes config into dir/<name>.yaml and starts streamd with
// it, as region name, on a free 127.0.0.1 port.
func startDaemon(bin, dir, name string, config []byte, durability string) (*daemon, error) {
	cfg := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfg, config, 0o644); err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	addr := lis.Addr().String()
	lis.Close()
	d := &daemon{name: name, bin: bin, dir: dir, addr: addr, args: []string{
		"--region", name, "--config", cfg, "--data-dir", filepath.Join(dir, name), "--listen", addr,
		"--metrics-listen", "", "--durability", durability, "--log-level", "warn",
	}}
	return d, d.start()
}

// start runs the process and waits until it serves.
func (d *daemon) start() error {
	ready := filepath.Join(d.dir, d.name+".ready")
	os.Remove(ready)
	logFile, err := os.OpenFile(filepath.Join(d.dir, d.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	defer logFile.Close()
	cmd := exec.Command(d.bin, append(d.args, "--ready-file", ready)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("telemetry: start streamd for region %s (-streamd %s): %w", d.name, d.bin, err)
	}
	d.cmd, d.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(d.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var r struct{ GRPC string }
		if b, err := os.ReadFile(ready); err == nil && json.Unmarshal(b, &r) == nil && r.GRPC == d.addr {
			return nil
		}
		select {
		case <-d.exited:
			return fmt.Errorf("telemetry: streamd of region %s exited (%v); see %s.log in %s", d.name, cmd.ProcessState, d.name, d.dir)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.kill()
			return fmt.Errorf("telemetry: streamd of region %s not ready after 30s; see %s.log in %s", d.name, d.name, d.dir)
		}
	}
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (d *daemon) kill() {
	if d.cmd != nil {
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.exited
	}
}

// stop ends the process with SIGTERM (a clean shutdown) and waits for it.
func (d *daemon) stop() error {
	if d.cmd == nil {
		return nil
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("telemetry: stop streamd of region %s: %w", d.name, err)
	}
	select {
	case <-d.exited:
	case <-time.After(40 * time.Second):
		d.kill()
		return fmt.Errorf("telemetry: streamd of region %s did not stop in 40s; killed", d.name)
	}
	if !d.cmd.ProcessState.Success() {
		return fmt.Errorf("telemetry: streamd of region %s exited with %v; see %s.log in %s", d.name, d.cmd.ProcessState, d.name, d.dir)
	}
	return nil
}

package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal and returns its terminal end and the
// other, which types into it.
func openPTY(t *testing.T) (tty, keyboard *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	if err := unix.IoctlSetPointerInt(int(ptmx.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptmx.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return tty, ptmx
}

// TestPublishRefusesTerminal: publish with neither --data nor --file on a
// terminal says it would read standard input instead of waiting silently.
func TestPublishRefusesTerminal(t *testing.T) {
	tty, keyboard := openPTY(t)
	// Were it read, the terminal would give a line and end of input (^D),
	// so that a publish that reads it fails instead of hanging.
	if _, err := keyboard.WriteString("typed\n\x04"); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run([]string{"streamctl", "--addr", "127.0.0.1:1", "publish", "--type", "t", "--entity", "e", "--event-type", "x"}, tty, &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), "publish reads the payload from standard input, which is a terminal: give --data TEXT or --file PATH") {
		t.Fatalf("exit %d, stderr %q; want 2 and the terminal refusal", code, stderr.String())
	}
}

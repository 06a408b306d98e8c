package main

import (
	"bytes"
	"net"
	"strings"
	"testing"
)

// FuzzArgs runs streamctl on arbitrary command lines against a port nothing
// listens on: it must never panic or hang, must exit 0, 1 or 2, and must
// explain every failure on stderr. Arguments with a path separator are
// skipped so that --store and --file stay inside the test's directory.
func FuzzArgs(f *testing.F) {
	for _, seed := range []string{
		"publish --type car --entity c1 --data x",
		"publish --type car",
		"publish --type cart --entity c1 --add items=a --add-counter qty=x --set =v",
		"publish --type cart --entity c1 --remove items --event-type x",
		"state --type cart",
		"tail --from nope --count -1",
		"tail --filter 'include colour=red'",
		"offsets set --store s --consumer c --to-offset 1 --to-latest",
		"offsets list --store s",
		"offsets get --consumer c --journal zz",
		"filters add --store s --consumer c 'include tag=a' --ttl 5m",
		"filters add --consumer c --stream x 'include tag=a'",
		"filters remove --store s --consumer c",
		"consumers list --consumer x",
		"-o yaml version",
		"journal info extra",
		"--timeout -1s streams list",
		"unknown",
		"",
	} {
		f.Add(seed)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Fields(line)
		for _, a := range args {
			if strings.ContainsAny(a, `/\`) || a == "--follow" {
				t.Skip("paths and follow are out of scope")
			}
		}
		t.Chdir(t.TempDir())
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"streamctl", "--addr", closed, "--timeout", "2s"}, args...), strings.NewReader(""), &stdout, &stderr)
		switch code {
		case 0:
		case 1, 2:
			if !strings.HasPrefix(stderr.String(), "streamctl: ") {
				t.Fatalf("exit %d without a message on stderr: %q", code, stderr.String())
			}
		default:
			t.Fatalf("exit code %d", code)
		}
	})
}

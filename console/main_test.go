package console_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/streamd/streamd/internal/streamdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(removeBinaries{streamdtest.M(m)}) }

// removeBinaries removes what buildBinaries built once the tests have run.
type removeBinaries struct{ m streamdtest.TestingM }

func (r removeBinaries) Run() int {
	code := r.m.Run()
	if binaries.dir != "" {
		os.RemoveAll(binaries.dir)
	}
	return code
}

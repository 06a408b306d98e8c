package topology_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: the
// replications and primaries start consumers, streams and servers, and each
// must be stopped by its owner.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

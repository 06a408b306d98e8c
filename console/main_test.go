package console_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/streamd/streamd/internal/streamdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(streamdtest.M(m)) }

package primary_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/streamd/streamd/journal"
	"github.com/streamd/streamd/topology"
	"github.com/streamd/streamd/topology/primary"
)

// Validate reports every nonsensical field, each error matching
// ErrInvalidOptions and naming its field; New refuses them.
func TestOptionsValidate(t *testing.T) {
	j, err := journal.Open(t.TempDir(), journal.Options{Region: "eu"})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if err := (primary.Options{Journal: j}).Validate(); err != nil {
		t.Fatalf("Options with a journal: %v", err)
	}
	err = primary.Options{Journal: j, CallTimeout: -1, CachedEntities: -1, Regions: []topology.Region{{Name: "us"}}}.Validate()
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok || len(joined.Unwrap()) != 3 {
		t.Fatalf("Validate = %v, want three errors joined", err)
	}
	for i, field := range []string{"Options.CallTimeout", "Options.CachedEntities", "Options.Regions[0]"} {
		e := joined.Unwrap()[i]
		if !errors.Is(e, primary.ErrInvalidOptions) || !strings.HasPrefix(e.Error(), "primary: invalid options: "+field) {
			t.Errorf("error %d = %q, want one matching ErrInvalidOptions about %s", i, e, field)
		}
	}
	if _, err := primary.New(primary.Options{}); !errors.Is(err, primary.ErrInvalidOptions) || !strings.Contains(err.Error(), "Options.Journal is nil") {
		t.Fatalf("New without a journal: %v, want ErrInvalidOptions naming Options.Journal", err)
	}
}

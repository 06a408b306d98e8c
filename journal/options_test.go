package journal

import (
	"errors"
	"strings"
	"testing"
)

// Validate reports every nonsensical field, each error matching
// ErrInvalidOptions and naming its field.
func TestOptionsValidateReportsEveryField(t *testing.T) {
	if err := (Options{}).Validate(); err != nil {
		t.Fatalf("zero Options: %v", err)
	}
	err := Options{Durability: 7, RingSize: -1, Limits: Limits{MaxTags: -1}}.Validate()
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok || len(joined.Unwrap()) != 3 {
		t.Fatalf("Validate = %v, want three errors joined", err)
	}
	for i, field := range []string{"Options.Durability 7", "Options.RingSize -1", "Options.Limits.MaxTags -1"} {
		e := joined.Unwrap()[i]
		if !errors.Is(e, ErrInvalidOptions) || !strings.HasPrefix(e.Error(), "journal: invalid options: "+field) {
			t.Errorf("error %d = %q, want one matching ErrInvalidOptions about %s", i, e, field)
		}
	}
	if _, err := Open(t.TempDir(), Options{RetentionMaxAge: -1}); !errors.Is(err, ErrInvalidOptions) {
		t.Fatalf("Open with RetentionMaxAge -1: %v, want ErrInvalidOptions", err)
	}
}

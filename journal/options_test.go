package journal

import (
	"errors"
	"strings"
	"testing"
)

// MinFreeBytes below what Badger may still write through memory maps once
// appends are refused is refused, naming the least value; the least value
// and the default are accepted, and the default is at least the least.
func TestMinFreeBytesAtLeastWhatMemoryMapsNeed(t *testing.T) {
	for _, mt := range []int64{0, minMemTableSize, 16 << 20, 1 << 30} {
		o := Options{MemTableSize: mt}
		least := o.LeastMinFreeBytes()
		size := o.withDefaults().MemTableSize
		if least <= size {
			t.Fatalf("MemTableSize %d: least MinFreeBytes %d does not even hold a memtable flush", size, least)
		}
		if d := o.EffectiveMinFreeBytes(); d < least {
			t.Fatalf("MemTableSize %d: the default MinFreeBytes %d is below the least %d", size, d, least)
		}
		for _, v := range []int64{1, least - 1} {
			o.MinFreeBytes = v
			if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "at least") {
				t.Fatalf("MemTableSize %d, MinFreeBytes %d: Validate = %v, want a refusal naming the least value %d", size, v, err, least)
			}
		}
		o.MinFreeBytes = least
		if err := o.Validate(); err != nil {
			t.Fatalf("MemTableSize %d, MinFreeBytes %d (the least): %v", size, least, err)
		}
	}
}

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

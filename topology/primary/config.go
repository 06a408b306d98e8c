package primary

import (
	"errors"
	"fmt"
)

// Mode is how an entity type is written across regions (ARCHITECTURE.md §7).
type Mode int

const (
	// ModeReplicated: every region writes; state merges with CRDTs
	// (topology.Replicated).
	ModeReplicated Mode = iota + 1
	// ModePinned: one region, the type's primary, writes; the others forward
	// writes to it (Primary).
	ModePinned
	// ModeRequestRegion: each entity is written by one region at a time, and its
	// ownership moves to the region where a write arrives (Primary).
	ModeRequestRegion
)

var modeNames = map[Mode]string{ModeReplicated: "replicated", ModePinned: "pinned", ModeRequestRegion: "request-region"}

// String returns the mode's name in the config: "replicated", "pinned" or
// "request-region".
func (m Mode) String() string {
	if s, ok := modeNames[m]; ok {
		return s
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// MarshalText writes the mode's name.
func (m Mode) MarshalText() ([]byte, error) {
	if _, ok := modeNames[m]; !ok {
		return nil, fmt.Errorf("topology: unknown mode %d", int(m))
	}
	return []byte(m.String()), nil
}

// UnmarshalText reads a mode's name, so that a YAML config can say
// `mode: pinned`.
func (m *Mode) UnmarshalText(b []byte) error {
	for mode, name := range modeNames {
		if name == string(b) {
			*m = mode
			return nil
		}
	}
	return fmt.Errorf("topology: unknown mode %q; use replicated, pinned or request-region", b)
}

// EntityType is the mode of one entity type.
type EntityType struct {
	Name string `yaml:"name"`
	Mode Mode   `yaml:"mode"`
	// Primary is the pinned primary region (ModePinned), and the first owner of
	// every entity of the type. Change the primary of a running system with
	// Primary.SetPrimary, not here: every region must configure the same
	// first owner, or two regions could write an entity's first version.
	Primary string `yaml:"primary,omitempty"`
	// Home is the first owner of every entity (ModeRequestRegion). The same
	// holds as for Primary: every region configures the same home.
	Home string `yaml:"home,omitempty"`
}

// FirstOwner is the region that owns every entity of the type until the
// first handover: Primary or Home.
func (t EntityType) FirstOwner() string {
	if t.Mode == ModePinned {
		return t.Primary
	}
	return t.Home
}

// Config lists the entity types whose mode is not the default (plain
// events, written by whoever publishes them). Each type appears once.
type Config struct {
	EntityTypes []EntityType `yaml:"entity_types"`
}

// Validate reports the first nonsensical entry, naming it.
func (c Config) Validate() error {
	seen := map[string]bool{}
	for i, t := range c.EntityTypes {
		at := fmt.Sprintf("topology: entity_types[%d] (%q)", i, t.Name)
		switch {
		case t.Name == "":
			return fmt.Errorf("topology: entity_types[%d] has no name", i)
		case seen[t.Name]:
			return fmt.Errorf("%s: the entity type is listed twice", at)
		case t.Name == PinEntityType:
			return fmt.Errorf("%s: the entity type is reserved for pins of primaries", at)
		case t.Mode == ModeReplicated && (t.Primary != "" || t.Home != ""):
			return fmt.Errorf("%s: a replicated entity type has no primary or home", at)
		case t.Mode == ModePinned && t.Primary == "":
			return fmt.Errorf("%s: mode pinned needs a primary region", at)
		case t.Mode == ModePinned && t.Home != "":
			return fmt.Errorf("%s: mode pinned has a primary, not a home", at)
		case t.Mode == ModeRequestRegion && t.Home == "":
			return fmt.Errorf("%s: mode request-region needs a home region (the first owner of its entities)", at)
		case t.Mode == ModeRequestRegion && t.Primary != "":
			return fmt.Errorf("%s: mode request-region has a home, not a primary", at)
		case t.Mode != ModeReplicated && t.Mode != ModePinned && t.Mode != ModeRequestRegion:
			return fmt.Errorf("%s: mode is missing or unknown; use replicated, pinned or request-region", at)
		}
		seen[t.Name] = true
	}
	return nil
}

// Lookup returns the entry of an entity type.
func (c Config) Lookup(name string) (EntityType, bool) {
	for _, t := range c.EntityTypes {
		if t.Name == name {
			return t, true
		}
	}
	return EntityType{}, false
}

var (
	// ErrUnknownEntityType: the entity type is not in the topology config.
	ErrUnknownEntityType = errors.New("topology: entity type is not in the topology config")
	// ErrWrongMode: the entity type's mode does not allow the call (a
	// replicated type written through Primary, for example).
	ErrWrongMode = errors.New("topology: wrong mode for the entity type")
)

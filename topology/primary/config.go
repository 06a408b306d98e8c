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
	// ModeLocal: plain events, appended by whichever region publishes them,
	// with no order across regions (each region numbers the entity's events
	// itself); replication still copies them everywhere.
	ModeLocal
)

var modeNames = map[Mode]string{ModeReplicated: "replicated", ModePinned: "pinned", ModeRequestRegion: "request-region", ModeLocal: "local"}

// String returns the mode's name in the config: "replicated", "pinned",
// "request-region" or "local".
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
	return fmt.Errorf("topology: unknown mode %q; use pinned, request-region, replicated or local", b)
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

// SingleWriter reports whether the type's entities have one history written
// by one region at a time (ModePinned, ModeRequestRegion).
func (t EntityType) SingleWriter() bool { return t.Mode == ModePinned || t.Mode == ModeRequestRegion }

// Config gives the entity types' modes: those listed in EntityTypes, each
// once, and the others DefaultMode.
type Config struct {
	EntityTypes []EntityType `yaml:"entity_types"`
	// DefaultMode is the mode of the types not listed; 0 (no default) leaves
	// them plain events, as ModeLocal, that Primary does not know.
	DefaultMode Mode `yaml:"default_mode,omitempty"`
	// DefaultPrimary is the primary (DefaultMode pinned) or home
	// (request-region) of the types not listed.
	DefaultPrimary string `yaml:"default_primary,omitempty"`
}

// Validate reports the first nonsensical entry, naming it.
func (c Config) Validate() error {
	switch d := c.DefaultMode; {
	case d == 0 && c.DefaultPrimary != "":
		return fmt.Errorf("topology: default_primary %q without default_mode: set default_mode (pinned or request-region)", c.DefaultPrimary)
	case d == 0:
	case modeNames[d] == "":
		return fmt.Errorf("topology: default_mode %v is unknown; use pinned, request-region, replicated or local", d)
	case (d == ModePinned || d == ModeRequestRegion) && c.DefaultPrimary == "":
		return fmt.Errorf("topology: default_mode %s needs default_primary (the region that first writes every entity of an unlisted type)", d)
	case (d == ModeReplicated || d == ModeLocal) && c.DefaultPrimary != "":
		return fmt.Errorf("topology: default_mode %s has no primary; remove default_primary %q", d, c.DefaultPrimary)
	}
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
		case t.Name == FailoverEntityType:
			return fmt.Errorf("%s: the entity type is reserved for failover records", at)
		case (t.Mode == ModeReplicated || t.Mode == ModeLocal) && (t.Primary != "" || t.Home != ""):
			return fmt.Errorf("%s: a %s entity type has no primary or home", at, t.Mode)
		case t.Mode == ModePinned && t.Primary == "":
			return fmt.Errorf("%s: mode pinned needs a primary region", at)
		case t.Mode == ModePinned && t.Home != "":
			return fmt.Errorf("%s: mode pinned has a primary, not a home", at)
		case t.Mode == ModeRequestRegion && t.Home == "":
			return fmt.Errorf("%s: mode request-region needs a home region (the first owner of its entities)", at)
		case t.Mode == ModeRequestRegion && t.Primary != "":
			return fmt.Errorf("%s: mode request-region has a home, not a primary", at)
		case modeNames[t.Mode] == "":
			return fmt.Errorf("%s: mode is missing or unknown; use pinned, request-region, replicated or local", at)
		}
		seen[t.Name] = true
	}
	return nil
}

// Lookup returns the entry of an entity type: its own, or the default
// mode's for an unlisted type. Without a default mode an unlisted type is
// not found; the pins' and failovers' types (PinEntityType,
// FailoverEntityType) never are.
func (c Config) Lookup(name string) (EntityType, bool) {
	for _, t := range c.EntityTypes {
		if t.Name == name {
			return t, true
		}
	}
	if c.DefaultMode == 0 || name == PinEntityType || name == FailoverEntityType || name == "" {
		return EntityType{}, false
	}
	t := EntityType{Name: name, Mode: c.DefaultMode}
	switch c.DefaultMode {
	case ModePinned:
		t.Primary = c.DefaultPrimary
	case ModeRequestRegion:
		t.Home = c.DefaultPrimary
	}
	return t, true
}

var (
	// ErrUnknownEntityType: the entity type is not in the topology config.
	ErrUnknownEntityType = errors.New("topology: entity type is not in the topology config")
	// ErrWrongMode: the entity type's mode does not allow the call (a
	// replicated type written through Primary, for example).
	ErrWrongMode = errors.New("topology: wrong mode for the entity type")
)

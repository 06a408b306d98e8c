package main

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// fileError says in the config file's own terms what the YAML decoder
// found wrong: the decoder names Go types ("field adrs not found in type
// main.regionConfig"), the file has keys and entries.
func fileError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = fileMessage(m)
	}
	return errors.New(strings.Join(msgs, "; "))
}

var (
	unknownKey = regexp.MustCompile("^(line [0-9]+): field (.+) not found in type (.+)$")
	wrongKind  = regexp.MustCompile("^(line [0-9]+): cannot unmarshal !!([a-z]+)(?: `(.*)`)? into (.+)$")
)

func fileMessage(m string) string {
	if p := unknownKey.FindStringSubmatch(m); p != nil {
		s, ok := fileSections[p[3]]
		if !ok {
			return m
		}
		return fmt.Sprintf("%s: unknown key %q in %s (it takes %s)", p[1], p[2], s.where(), strings.Join(s.keys, ", "))
	}
	if p := wrongKind.FindStringSubmatch(m); p != nil {
		want := kindOf(p[4])
		if want == "" {
			return m
		}
		got := map[string]string{"map": "a mapping", "seq": "a list", "str": "the string", "int": "the number",
			"float": "the number", "bool": "the boolean", "null": "nothing"}[p[2]]
		if got == "" {
			got = "!!" + p[2]
		}
		if p[3] != "" {
			got += fmt.Sprintf(" %q", p[3])
		}
		return fmt.Sprintf("%s: want %s, got %s", p[1], want, got)
	}
	return m
}

// kindOf describes what a value of the Go type named t is in the file
// ("" for a type it does not know).
func kindOf(t string) string {
	if s, ok := fileSections[t]; ok {
		return "a mapping (" + s.where() + ")"
	}
	if s, ok := fileSections[strings.TrimPrefix(t, "[]")]; ok && strings.HasPrefix(t, "[]") {
		return "a list of " + s.key + ": entries"
	}
	switch t {
	case "string":
		return "a string"
	case "[]string":
		return "a list of strings"
	case "int", "*int":
		return "a whole number"
	case "bool":
		return "true or false"
	case reflect.TypeFor[time.Duration]().String():
		return "a duration such as 30s or 10m"
	}
	return ""
}

type fileSection struct {
	key   string   // the key it is under ("" at the top level)
	entry bool     // it is an entry of a list
	keys  []string // the keys it takes, in the order of the struct
}

func (s fileSection) where() string {
	switch {
	case s.key == "":
		return "the file's top level"
	case s.entry:
		return "an entry of " + s.key + ":"
	}
	return s.key + ":"
}

// fileSections maps the Go type of each mapping of the config file to
// where it is and the keys it takes.
var fileSections = func() map[string]fileSection {
	sections := map[string]fileSection{}
	var walk func(t reflect.Type, key string, entry bool)
	walk = func(t reflect.Type, key string, entry bool) {
		sections[t.String()] = fileSection{key: key, entry: entry, keys: yamlKeys(t)}
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			switch ft := t.Field(i).Type; {
			case name == "":
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				walk(ft.Elem(), name, true)
			case ft.Kind() == reflect.Struct:
				walk(ft, name, false)
			}
		}
	}
	walk(reflect.TypeFor[fileConfig](), "", false)
	return sections
}()

// yamlKeys are the keys of a struct decoded from YAML, with those of the
// structs it inlines.
func yamlKeys(t reflect.Type) (keys []string) {
	for i := range t.NumField() {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if opts == "inline" {
			keys = append(keys, yamlKeys(t.Field(i).Type)...)
		} else if name != "" {
			keys = append(keys, name)
		}
	}
	return keys
}

// Package openapigen turns the API's OpenAPI description, written in YAML
// (api/openapi.yaml), into the JSON the server embeds and serves. It runs
// at go generate time and in the api tests, never in the daemon, which so
// links no YAML library for it.
package openapigen

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"gopkg.in/yaml.v3"
)

// JSON converts a YAML document to indented JSON, keys in the order
// written, anchors and merge keys (<<) expanded: keys written next to a
// merge win over the merged ones.
func JSON(src []byte) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(src))
	var doc, more yaml.Node
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) || doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, fmt.Errorf("want exactly one YAML document")
	}
	var b bytes.Buffer
	if err := write(&b, doc.Content[0], 0); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// maxDepth bounds the nesting, so an alias cycle is an error, not a hang.
const maxDepth = 64

func write(b *bytes.Buffer, n *yaml.Node, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("line %d: nested deeper than %d", n.Line, maxDepth)
	}
	switch n.Kind {
	case yaml.AliasNode:
		return write(b, n.Alias, depth+1)
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return fmt.Errorf("line %d: %w", n.Line, err)
		}
		return encode(b, v)
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := write(b, c, depth+1); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	case yaml.MappingNode:
		keys, values, err := pairs(n, depth)
		if err != nil {
			return err
		}
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := encode(b, k); err != nil {
				return err
			}
			b.WriteByte(':')
			if err := write(b, values[i], depth+1); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	}
	return fmt.Errorf("line %d: unexpected YAML node kind %d", n.Line, n.Kind)
}

// pairs returns a mapping's keys and values in order, the merged ones
// first where the merge is written, each key once: a later written key
// replaces a merged one in its place, a merged key never replaces one.
func pairs(n *yaml.Node, depth int) ([]string, []*yaml.Node, error) {
	var keys []string
	var values []*yaml.Node
	at := map[string]int{}
	written := map[string]bool{}
	add := func(k string, v *yaml.Node, merged bool) error {
		if i, ok := at[k]; ok {
			switch {
			case merged:
				return nil
			case written[k]:
				return fmt.Errorf("line %d: key %q given twice", v.Line, k)
			}
			values[i], written[k] = v, true
			return nil
		}
		at[k] = len(keys)
		keys, values = append(keys, k), append(values, v)
		written[k] = !merged
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			return nil, nil, fmt.Errorf("line %d: a key must be a scalar", k.Line)
		}
		if k.Tag == "!!merge" || (k.Value == "<<" && k.Style == 0) {
			for _, m := range mergeSources(v) {
				if m.Kind != yaml.MappingNode {
					return nil, nil, fmt.Errorf("line %d: << merges mappings only", v.Line)
				}
				if depth > maxDepth {
					return nil, nil, fmt.Errorf("line %d: merges nested deeper than %d", v.Line, maxDepth)
				}
				mk, mv, err := pairs(m, depth+1)
				if err != nil {
					return nil, nil, err
				}
				for j := range mk {
					if err := add(mk[j], mv[j], true); err != nil {
						return nil, nil, err
					}
				}
			}
			continue
		}
		if err := add(k.Value, v, false); err != nil {
			return nil, nil, err
		}
	}
	return keys, values, nil
}

// mergeSources returns the mappings a merge key's value names: one, or a
// sequence of them.
func mergeSources(v *yaml.Node) []*yaml.Node {
	for v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	if v.Kind != yaml.SequenceNode {
		return []*yaml.Node{v}
	}
	var out []*yaml.Node
	for _, c := range v.Content {
		for c.Kind == yaml.AliasNode {
			c = c.Alias
		}
		out = append(out, c)
	}
	return out
}

func encode(b *bytes.Buffer, v any) error {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1) // Encode's newline
	return nil
}

package api

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"
)

// MinKeyLen is the shortest API key accepted from a keys file.
const MinKeyLen = 16

// Keys are the API keys callers authenticate with. Only their SHA-256
// digests are kept in memory.
type Keys struct {
	names   []string
	digests [][sha256.Size]byte
}

// LoadKeys reads a keys file: one "name:key" per line; blank lines and
// lines starting with # are ignored.
func LoadKeys(path string) (*Keys, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read api keys: %w", err)
	}
	return ParseKeys(b)
}

// ParseKeys parses the text of a keys file (see LoadKeys).
func ParseKeys(b []byte) (*Keys, error) {
	k := &Keys{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, key, ok := strings.Cut(text, ":")
		name, key = strings.TrimSpace(name), strings.TrimSpace(key)
		switch {
		case !ok || name == "":
			return nil, fmt.Errorf("api keys line %d: want name:key", line)
		case len(key) < MinKeyLen:
			return nil, fmt.Errorf("api keys line %d (%s): key shorter than %d characters", line, name, MinKeyLen)
		case seen[name]:
			return nil, fmt.Errorf("api keys line %d: name %q given twice", line, name)
		}
		seen[name] = true
		k.names = append(k.names, name)
		k.digests = append(k.digests, sha256.Sum256([]byte(key)))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(k.names) == 0 {
		return nil, fmt.Errorf("api keys file has no keys")
	}
	return k, nil
}

// Match returns the name of the key presented, comparing digests in
// constant time against every key so timing says nothing about which
// matched or how much of one did.
func (k *Keys) Match(presented string) (string, bool) {
	d := sha256.Sum256([]byte(presented))
	found := -1
	for i := range k.digests {
		if subtle.ConstantTimeCompare(d[:], k.digests[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return k.names[found], true
}
